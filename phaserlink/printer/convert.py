"""Document conversion with Ghostscript, for printers that cannot take a format.

PostScript goes to the printer untouched.  A PDF for a PostScript-only printer
goes through Ghostscript's ``ps2write``; PostScript for a PDF-only printer
through ``pdfwrite``; plain text through Ghostscript's own ``gslp.ps`` (it
sets the text in Courier; bytes outside Latin-1 print as they come).  Nothing
converts to or from PCL: a PCL job for a printer without PCL is refused.

Why a child process and not a library: Ghostscript is the one interpreter
that reads real-world PDF, and running it as a child with ``-dSAFER`` keeps
a hostile document away from our process; ``reactor.spawnProcess`` keeps the
reactor serving everyone while it runs, and a timeout kills a document that
would loop for ever.  Ghostscript exits 0 on many broken PDFs ("Output may be
incorrect"): ``-dPDFSTOPONERROR`` makes those an error we can report, and
``-sstdout=%stderr`` puts all its messages in one captured stream.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "CONVERSION_TIMEOUT",
    "ConversionError",
    "GHOSTSCRIPT",
    "GhostscriptMissing",
    "convert",
    "ghostscript_path",
    "needs_conversion",
]

#: The program looked up on PATH (``shutil.which``) when a conversion runs.
GHOSTSCRIPT = "gs"
#: Seconds one conversion may take before the child is killed.
CONVERSION_TIMEOUT = 300.0
#: Bytes of Ghostscript's messages kept for the error report (it can print a lot).
MAX_DIAGNOSTICS = 64 * 1024
#: The IPP job-state-reason (RFC 8011 5.3.8) for a document we cannot print.
FORMAT_ERROR = "document-format-error"

#: Formats the appliance knows (phaserlink.config.FORMATS).
KNOWN_FORMATS = ("postscript", "pdf", "pcl", "text")

#: (from, to) -> Ghostscript device.  Order of preference per source format:
#: the first target the printer accepts wins.
_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "pdf": (("postscript", "ps2write"),),
    "postscript": (("pdf", "pdfwrite"),),
    "text": (("postscript", "ps2write"), ("pdf", "pdfwrite")),
    "pcl": (),
}

log = Logger()


class ConversionError(Exception):
    """A document cannot be printed on this printer: ``reason`` says why in
    words for the status mail, ``ipp_reason`` is the job-state-reason."""

    def __init__(self, reason: str, ipp_reason: str = FORMAT_ERROR, details: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.ipp_reason = ipp_reason
        self.details = details  # Ghostscript's full (capped) messages, for logs


class GhostscriptMissing(ConversionError):
    """Ghostscript is not installed: the appliance's fault, not the document's."""

    def __init__(self) -> None:
        super().__init__(
            f"Ghostscript ({GHOSTSCRIPT!r}) is not installed on the print server; "
            "it is needed to convert this document (apt-get install ghostscript)",
            ipp_reason="aborted-by-system",
        )


def needs_conversion(fmt: str, accepted: tuple[str, ...]) -> str | None:
    """The format to convert *fmt* to for a printer taking *accepted*.

    None: print as is.  Raises :class:`ConversionError` when no conversion
    leads to a format the printer takes."""
    if fmt not in KNOWN_FORMATS:
        raise ConversionError(f"unknown document format {fmt!r}")
    if fmt in accepted:
        return None
    for target, _device in _ROUTES[fmt]:
        if target in accepted:
            return target
    takes = ", ".join(accepted) or "nothing"
    raise ConversionError(f"this printer takes {takes}; a {fmt} document cannot be converted to that")


def ghostscript_path() -> str:
    """Where ``gs`` is, or :class:`GhostscriptMissing`."""
    path = shutil.which(GHOSTSCRIPT)
    if path is None:
        raise GhostscriptMissing()
    return path


def _device(from_format: str, to_format: str) -> str:
    for target, device in _ROUTES.get(from_format, ()):
        if target == to_format:
            return device
    raise ConversionError(f"no conversion from {from_format} to {to_format}")


def ghostscript_argv(gs: str, src: Path, dst: Path, from_format: str, to_format: str) -> list[str]:
    """The command line: -dSAFER always; errors in a PDF stop it (exit 1)."""
    argv = [
        gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-dPDFSTOPONERROR",
        "-sstdout=%stderr", f"-sDEVICE={_device(from_format, to_format)}",
        f"-sOutputFile={dst}",
    ]
    if from_format == "text":
        # gslp.ps (in Ghostscript's library) typesets the file named after
        # "--"; under -dSAFER it may only read the file we permit.
        argv += [f"--permit-file-read={src}", "--", "gslp.ps", "-B", str(src)]
    else:
        argv += ["--", str(src)]
    return argv


class _GhostscriptProcess(ProcessProtocol):
    """Collects Ghostscript's messages (capped) and reports how it ended."""

    def __init__(self, done: defer.Deferred):
        self.done = done
        self.messages = bytearray()
        self.killed_for_timeout = False
        self.reason: Failure | None = None

    def childDataReceived(self, fd: int, data: bytes) -> None:
        room = MAX_DIAGNOSTICS - len(self.messages)
        if room > 0:
            self.messages += data[:room]

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        self.done.callback(None)  # not the Failure itself: that would be an errback


def _summary(messages: str) -> str:
    """The lines a person needs: Ghostscript's error lines, not its stacks."""
    keep = [
        line.strip()
        for line in messages.splitlines()
        if "Error" in line or "error" in line.split(":", 1)[0]
    ]
    keep = [k for k in keep if not k.startswith("GPL Ghostscript")] or [
        line.strip() for line in messages.splitlines() if line.strip()
    ][:3]
    return "; ".join(dict.fromkeys(keep))[:500]


def convert(
    reactor,
    src: Path,
    dst: Path,
    from_format: str,
    to_format: str,
    *,
    timeout: float = CONVERSION_TIMEOUT,
) -> defer.Deferred:
    """Convert *src* (of *from_format*) into *dst* (of *to_format*).

    Fires with *dst* once it is complete (written under a temporary name and
    renamed, so *dst* never holds half a document), or fails with
    :class:`ConversionError` carrying Ghostscript's message."""
    src, dst = Path(src).absolute(), Path(dst).absolute()
    partial = dst.with_name(dst.name + ".part")
    try:
        argv = ghostscript_argv(ghostscript_path(), src, partial, from_format, to_format)
    except ConversionError as e:
        return defer.fail(e)
    done: defer.Deferred = defer.Deferred()
    proto = _GhostscriptProcess(done)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        transport = reactor.spawnProcess(
            proto, argv[0], argv, env=env, path=str(dst.parent),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
    except OSError as e:
        return defer.fail(ConversionError(f"cannot start Ghostscript: {e}", ipp_reason="aborted-by-system"))
    transport.closeStdin()

    def on_timeout() -> None:
        proto.killed_for_timeout = True
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    timer = reactor.callLater(timeout, on_timeout)

    def ended(_) -> Path:
        reason = proto.reason
        if timer.active():
            timer.cancel()
        messages = proto.messages.decode("utf-8", "replace")
        if proto.killed_for_timeout:
            _unlink(partial)
            raise ConversionError(
                f"converting {from_format} to {to_format} took longer than {timeout:g} s; stopped",
                details=messages,
            )
        if not reason.check(error.ProcessDone):
            _unlink(partial)
            code = getattr(reason.value, "exitCode", None)
            summary = _summary(messages) or f"Ghostscript exited with {code}"
            raise ConversionError(
                f"cannot convert this {from_format} document to {to_format}: {summary}",
                details=messages,
            )
        try:
            os.replace(partial, dst)
        except FileNotFoundError:
            raise ConversionError(
                f"Ghostscript made no {to_format} output from this {from_format} document",
                details=messages,
            ) from None
        if messages.strip():
            log.info("Ghostscript said while converting {src}: {messages}", src=str(src), messages=messages)
        return dst

    return done.addCallback(ended)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

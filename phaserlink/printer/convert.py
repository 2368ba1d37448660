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

How a conversion failed decides the job's fate (docs/faults.md): only
Ghostscript running and rejecting the input (a non-zero exit with its error
words) is the document's fault (:class:`ConversionError`, the job is
aborted).  Ghostscript that cannot start (not on PATH, a missing library:
the loader exits 126/127), is killed by a signal or by our timeout, reports
an I/O error, or leaves output that fails the checks of :func:`check_output`
(empty, no ``%%EOF`` at the end) is a temporary fault: the job is held and
tried again, and a truncated file is never sent.  Ghostscript exits 0 after
``ERROR: ioerror (-12) on closing ps2write device`` on a full disk, so the
exit status alone proves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from phaserlink.printer.faults import SCOPE_JOB, SCOPE_SERVER, DocumentFault, TemporaryFault
from phaserlink.threads import pools_for

__all__ = [
    "CONVERSION_TIMEOUT",
    "ConversionError",
    "ConverterFailed",
    "ConverterUnavailable",
    "GHOSTSCRIPT",
    "GhostscriptMissing",
    "check_output",
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
#: Exit codes of a child the system could not run: 126 (not executable),
#: 127 (not found, or the dynamic loader could not load a library).
CANNOT_RUN_EXIT_CODES = (126, 127)
#: What Twisted's forked child writes to stderr (then exit 1) when the exec
#: itself fails (a bad ``#!`` interpreter, a file that is no program).
EXEC_FAILED = "Upon execvpe"
#: Below this many free bytes where the output goes, a failed conversion is
#: taken to be the disk's fault, whatever Ghostscript said.
LOW_DISK_SPACE = 1024 * 1024
#: How far from the end an output format's end marker may be (trailing
#: newlines, a PDF's startxref is before it).
END_MARKER_WINDOW = 1024
#: The end marker a complete file of each format carries (the DSC trailer
#: of ps2write's output, the end of a PDF's trailer).
END_MARKERS: dict[str, bytes] = {"postscript": b"%%EOF", "pdf": b"%%EOF"}
#: Ghostscript's messages that mean its output is not to be trusted, even
#: after exit 0 (``ERROR: ioerror (-12) on closing ps2write device``).
OUTPUT_ERROR = re.compile(rb"^.*(?:\bERROR:|Unrecoverable error|\bioerror\b).*$", re.MULTILINE)
#: Messages that mean the machine, not the document: a disk, a library.
#: (Not a bare ``ioerror``: Ghostscript says ``/ioerror in --runpdf--`` for
#: a PDF cut short, which is the document's fault.)
SYSTEM_TROUBLE = re.compile(
    r"on closing \S+ device|No space left|Disk quota|error while loading shared libraries|"
    r"cannot open shared object|Can't find initialization file", re.IGNORECASE)
#: Out of memory: maybe this document, maybe the moment; tried again, alone.
OUT_OF_MEMORY = re.compile(r"\bVMerror\b|out of memory", re.IGNORECASE)

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


class ConversionError(DocumentFault):
    """A document cannot be printed on this printer: Ghostscript ran and
    rejected it, or no conversion leads to a format the printer takes.
    ``reason`` says why in words for the status mail (Ghostscript's own),
    ``ipp_reason`` is the job-state-reason, ``details`` all its messages."""

    def __init__(self, reason: str, ipp_reason: str = FORMAT_ERROR, details: str = ""):
        super().__init__(reason, ipp_reason, details)


class ConverterUnavailable(TemporaryFault):
    """The converter cannot run on this machine now (not installed, a
    library missing, a disk full): no job that needs it can be converted,
    so the printer's queue waits and is tried again."""

    def __init__(self, reason: str, details: str = ""):
        super().__init__(reason, SCOPE_SERVER)
        self.details = details


class ConverterFailed(TemporaryFault):
    """This conversion went wrong without blaming the document: killed by
    a signal, stopped at the timeout, or output that fails the checks.
    The job is set aside and tried again; the next job goes on."""

    def __init__(self, reason: str, details: str = ""):
        super().__init__(reason, SCOPE_JOB)
        self.details = details


class GhostscriptMissing(ConverterUnavailable):
    """Ghostscript is not on PATH: the appliance's fault, not the document's."""

    def __init__(self) -> None:
        super().__init__(
            f"Ghostscript ({GHOSTSCRIPT!r}) is not installed on the print server; "
            "it is needed to convert this document (apt-get install ghostscript)")


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
    """Where ``gs`` is on PATH (a site, or a test, may put its own first),
    or :class:`GhostscriptMissing`."""
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


def free_space(directory: Path) -> int | None:
    """Bytes free for us in *directory*'s file system (None if unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _disk_is_full(directory: Path) -> bool:
    free = free_space(directory)
    return free is not None and free < LOW_DISK_SPACE


def check_output(path: Path, to_format: str, messages: bytes | str = b"") -> int:
    """Is the converter's output at *path* whole?  Returns its size, or
    raises :class:`ConverterFailed` (or :class:`ConverterUnavailable` when
    the disk is full) when it is missing, empty, lacks the format's end
    marker, or the converter reported an error on stderr.

    Runs in a worker thread (it reads the file's tail)."""
    raw = messages.encode("utf-8", "replace") if isinstance(messages, str) else messages
    text = raw.decode("utf-8", "replace")
    bad = OUTPUT_ERROR.search(raw)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = -1
    problem = None
    if bad is not None:
        problem = f"Ghostscript reported {bad.group(0).decode('utf-8', 'replace').strip()!r}"
    elif size < 0:
        problem = f"Ghostscript wrote no {to_format} output"
    elif size == 0:
        problem = f"Ghostscript's {to_format} output is empty"
    else:
        marker = END_MARKERS.get(to_format)
        if marker is not None:
            with open(path, "rb") as f:
                f.seek(max(size - END_MARKER_WINDOW, 0))
                tail = f.read()
            if marker not in tail:
                problem = (f"Ghostscript's {to_format} output ({size} bytes) is incomplete: "
                           f"no {marker.decode()} at its end")
    if problem is None:
        return size
    if _disk_is_full(path.parent) or SYSTEM_TROUBLE.search(text):
        raise ConverterUnavailable(
            f"{problem}; the print server's disk is full or failing ({path.parent}); "
            "the document was not sent and will be converted again", details=text)
    raise ConverterFailed(f"{problem}; the document was not sent and will be converted again", details=text)


def _finish_output(partial: Path, dst: Path, to_format: str, messages: bytes) -> Path:
    """Check the output, then give it its final name (worker thread)."""
    try:
        check_output(partial, to_format, messages)
        os.replace(partial, dst)
    except BaseException:
        _unlink(partial)
        raise
    return dst


def convert(
    reactor,
    src: Path,
    dst: Path,
    from_format: str,
    to_format: str,
    *,
    timeout: float | None = None,
) -> defer.Deferred:
    """Convert *src* (of *from_format*) into *dst* (of *to_format*).

    Fires with *dst* once it is complete and checked (written under a
    temporary name, checked by :func:`check_output`, renamed: *dst* never
    holds half a document).  Fails with :class:`ConversionError` when
    Ghostscript rejected the document (its words in ``reason``), with
    :class:`ConverterUnavailable` or :class:`ConverterFailed` (temporary
    faults) when it could not do its work."""
    if timeout is None:
        timeout = CONVERSION_TIMEOUT  # read at each call: a site or a test may change it
    src, dst = Path(src).absolute(), Path(dst).absolute()
    partial = dst.with_name(dst.name + ".part")
    try:
        argv = ghostscript_argv(ghostscript_path(), src, partial, from_format, to_format)
    except (ConversionError, ConverterUnavailable) as e:
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
        return defer.fail(ConverterUnavailable(f"Ghostscript ({argv[0]}) cannot be started: {e}"))
    transport.closeStdin()

    def on_timeout() -> None:
        proto.killed_for_timeout = True
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        # A wrapper script's own child (a site's `gs` that does not exec)
        # may outlive the kill and hold the pipes open: close our ends, so
        # the conversion ends now rather than when that child does.
        transport.loseConnection()

    timer = reactor.callLater(timeout, on_timeout)

    def ended(_) -> defer.Deferred | Path:
        reason = proto.reason
        if timer.active():
            timer.cancel()
        raw = bytes(proto.messages)
        messages = raw.decode("utf-8", "replace")
        what = f"converting {from_format} to {to_format}"
        if proto.killed_for_timeout:
            _unlink(partial)
            raise ConverterFailed(
                f"{what} took longer than {timeout:g} s; Ghostscript was stopped and it will be tried again",
                details=messages)
        if not reason.check(error.ProcessDone):
            code = getattr(reason.value, "exitCode", None)
            signal = getattr(reason.value, "signal", None)
            disk_full = _disk_is_full(dst.parent)
            _unlink(partial)
            summary = _summary(messages)
            if signal is not None and code is None:
                raise ConverterFailed(f"Ghostscript was killed by signal {signal} while {what}", details=messages)
            if code in CANNOT_RUN_EXIT_CODES or EXEC_FAILED in messages:
                if EXEC_FAILED in messages:
                    last = [line for line in messages.splitlines() if line.strip()][-1:]
                    summary = last[0].strip() if last else summary
                raise ConverterUnavailable(
                    f"Ghostscript ({argv[0]}) cannot run on the print server (exit {code}"
                    + (f": {summary}" if summary else "") + ")", details=messages)
            if disk_full or SYSTEM_TROUBLE.search(messages):
                raise ConverterUnavailable(
                    f"Ghostscript failed {what} because of the print server ("
                    + (summary or f"exit {code}") + (f"; disk full in {dst.parent}" if disk_full else "") + ")",
                    details=messages)
            if OUT_OF_MEMORY.search(messages):
                raise ConverterFailed(f"Ghostscript ran out of memory while {what} ({summary})",
                                      details=messages)
            raise ConversionError(
                f"cannot convert this {from_format} document to {to_format}: "
                + (summary or f"Ghostscript exited with {code}"),
                details=messages,
            )
        if messages.strip():
            log.info("Ghostscript said while converting {src}: {messages}", src=str(src), messages=messages)
        return pools_for(reactor).durable(_finish_output, partial, dst, to_format, raw)

    return done.addCallback(ended)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

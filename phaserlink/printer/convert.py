"""Document conversion: a small graph of converters, each a sandboxed child.

Every document takes the shortest path (:func:`conversion_path`) from its
format to one its printer takes (the ``formats`` key, or what an IPP printer
says it supports: the accepted formats are an argument).  The edges
(:data:`EDGES`): Poppler's ``pdftops -level3`` from PDF to PostScript (it
keeps JPEGs; Ghostscript's ps2write when pdftops is missing or cannot read
the PDF); Ghostscript from PostScript to PDF, from text (its own
``gslp.ps``), and to PWG raster / URF for raster-only printers; pictures to
PDF (:mod:`phaserlink.printer.convert_image`: img2pdf, Pillow); Office files
to PDF (LibreOffice headless, a throw-away profile each); HTML to PDF
(headless Chromium).  PostScript to a PostScript printer, PDF to a PDF
printer, a JPEG to a printer that takes JPEG go as they are.  Nothing
converts to or from PCL.  docs/convert.md.

Why children and not libraries: a hostile document can crash or loop a
converter, never the appliance; ``reactor.spawnProcess`` keeps the reactor
serving everyone meanwhile.  Each runs under ``setsid`` (a time-out kills
its whole process group), ``unshare -n`` (no network, not even loopback)
and ``prlimit`` (output size, memory, CPU); Ghostscript with ``-dSAFER``.
Ghostscript exits 0 on many broken PDFs ("Output may be incorrect"):
``-dPDFSTOPONERROR`` makes those an error we can report, and
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
import sys
from pathlib import Path

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from phaserlink.message import formats as _formats
from phaserlink.printer.faults import SCOPE_JOB, SCOPE_SERVER, DocumentFault, TemporaryFault
from phaserlink.threads import pools_for

__all__ = [
    "CONVERSION_TIMEOUT",
    "ConversionError",
    "ConverterFailed",
    "ConverterUnavailable",
    "GHOSTSCRIPT",
    "GhostscriptMissing",
    "PDFTOPS",
    "check_output",
    "convert",
    "count_pages",
    "count_pages_blocking",
    "ghostscript_path",
    "needs_conversion",
    "select_pages",
]

#: The program looked up on PATH (``shutil.which``) when a conversion runs.
GHOSTSCRIPT = "gs"
#: Poppler's PDF to PostScript converter (Debian's poppler-utils), looked up
#: on PATH at each conversion: it keeps a JPEG as it is (DCTDecode), where
#: Ghostscript's ps2write writes the decoded picture (docs/convert.md).
PDFTOPS = "pdftops"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    CONVERSION_TIMEOUT,
    MAX_DIAGNOSTICS,
    LOW_DISK_SPACE,
    END_MARKER_WINDOW,
    MAX_OUTPUT_BYTES,
    MAX_MEMORY_BYTES,
    PAGE_COUNT_TIMEOUT,
    DSC_WINDOW,
)

#: The IPP job-state-reason (RFC 8011 5.3.8) for a document we cannot print.
FORMAT_ERROR = "document-format-error"
#: Exit codes of a child the system could not run: 126 (not executable),
#: 127 (not found, or the dynamic loader could not load a library).
CANNOT_RUN_EXIT_CODES = (126, 127)
#: What Twisted's forked child writes to stderr (then exit 1) when the exec
#: itself fails (a bad ``#!`` interpreter, a file that is no program).
EXEC_FAILED = "Upon execvpe"
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

#: Formats the appliance knows (phaserlink.message.formats.DOCUMENT_FORMATS).
KNOWN_FORMATS = _formats.DOCUMENT_FORMATS

#: The tools, by name in :data:`EDGES`.
GS, IMAGE, OFFICE, HTML = "ghostscript", "image", "libreoffice", "html"
#: Poppler's ``pdftops -level3``, with Ghostscript's device (ps2write) as
#: the fallback when pdftops is not installed or cannot read the PDF.
POPPLER = "pdftops"

#: The conversion graph: (from, to, tool, Ghostscript device).  A document
#: takes the shortest path from its format to one its printer takes; among
#: paths as short, the earlier edge wins (ps2write before pdfwrite for text).
EDGES: tuple[tuple[str, str, str, str], ...] = (
    ("pdf", "postscript", POPPLER, "ps2write"),
    ("postscript", "pdf", GS, "pdfwrite"),
    ("text", "postscript", GS, "ps2write"),
    ("text", "pdf", GS, "pdfwrite"),
    ("pdf", "pwg-raster", GS, "pwgraster"),
    ("pdf", "urf", GS, "urf"),
    ("postscript", "pwg-raster", GS, "pwgraster"),
    ("postscript", "urf", GS, "urf"),
    *((image, "pdf", IMAGE, "") for image in _formats.IMAGES),
    *((office, "pdf", OFFICE, "") for office in _formats.OFFICE),
    ("html", "pdf", HTML, ""),
)

# The raster resolution and picture media when the printer says nothing
# (what it says: phaserlink/printer/target.py, the policy).
from phaserlink.printer.target import DEFAULT_MEDIA, RASTER_DPI, RasterMode  # noqa: E402
#: The signal a process gets when it writes past RLIMIT_FSIZE.
SIGXFSZ = 25
#: Where LibreOffice is looked for (Debian's libreoffice-*-nogui).
SOFFICE = "soffice"
#: Headless Chromium for HTML bodies (Debian's chromium).
CHROMIUM = "chromium"

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


class DocumentRejected(ConversionError):
    """The converter ran to its end and said no (a non-zero exit with its
    words): not a signal, not the output limit, not the machine.  A
    subclass so that a caller with a second converter can try that one."""


class GhostscriptMissing(ConverterUnavailable):
    """Ghostscript is not on PATH: the appliance's fault, not the document's."""

    def __init__(self) -> None:
        super().__init__(
            f"Ghostscript ({GHOSTSCRIPT!r}) is not installed on the print server; "
            "it is needed to convert this document (apt-get install ghostscript)")


def conversion_path(fmt: str, accepted: tuple[str, ...] | list[str]) -> list[str]:
    """The formats a *fmt* document passes through to reach one of
    *accepted* (the printer's ``formats``, or what an IPP printer said it
    supports): ``[fmt]`` when it prints as is, ``[fmt, ..., target]``
    otherwise.  Breadth first over :data:`EDGES`, so the path is shortest.
    Raises :class:`ConversionError` when none leads there."""
    if fmt not in KNOWN_FORMATS:
        raise ConversionError(f"unknown document format {fmt!r}")
    if fmt in accepted:
        return [fmt]
    came_from: dict[str, str] = {fmt: fmt}
    frontier = [fmt]
    while frontier:
        nxt = []
        for node in frontier:
            for src, dst, _tool, _device in EDGES:
                if src != node or dst in came_from:
                    continue
                came_from[dst] = node
                if dst in accepted:
                    path = [dst]
                    while path[-1] != fmt:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                nxt.append(dst)
        frontier = nxt
    takes = ", ".join(accepted) or "nothing"
    raise ConversionError(f"this printer takes {takes}; a {fmt} document cannot be converted to that")


def needs_conversion(fmt: str, accepted: tuple[str, ...]) -> str | None:
    """The format to convert *fmt* to for a printer taking *accepted*.

    None: print as is.  Raises :class:`ConversionError` when no conversion
    leads to a format the printer takes."""
    path = conversion_path(fmt, accepted)
    return None if len(path) == 1 else path[-1]


def ghostscript_path() -> str:
    """Where ``gs`` is on PATH (a site, or a test, may put its own first),
    or :class:`GhostscriptMissing`."""
    path = shutil.which(GHOSTSCRIPT)
    if path is None:
        raise GhostscriptMissing()
    return path


def _edge(from_format: str, to_format: str) -> tuple[str, str]:
    for src, dst, tool, device in EDGES:
        if (src, dst) == (from_format, to_format):
            return tool, device
    raise ConversionError(f"no conversion from {from_format} to {to_format}")


def _device(from_format: str, to_format: str) -> str:
    tool, device = _edge(from_format, to_format)
    if tool not in (GS, POPPLER):  # POPPLER's edge names Ghostscript's fallback device
        raise ConversionError(f"no Ghostscript conversion from {from_format} to {to_format}")
    return device


def ghostscript_argv(gs: str, src: Path, dst: Path, from_format: str, to_format: str,
                     raster: RasterMode | None = None) -> list[str]:
    """The command line: -dSAFER always; errors in a PDF stop it (exit 1).
    *raster*: the resolution (and PWG colour space) the printer takes."""
    device = _device(from_format, to_format)
    argv = [
        gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-dPDFSTOPONERROR",
        "-sstdout=%stderr", f"-sDEVICE={device}",
        f"-sOutputFile={dst}",
    ]
    argv += raster_argv(device, raster)
    if from_format == "text":
        # gslp.ps (in Ghostscript's library) typesets the file named after
        # "--"; under -dSAFER it may only read the file we permit.
        argv += [f"--permit-file-read={src}", "--", "gslp.ps", "-B", str(src)]
    else:
        argv += ["--", str(src)]
    return argv


def raster_argv(device: str, raster: RasterMode | None) -> list[str]:
    """Ghostscript's resolution and colour arguments for a raster *device*
    (pwgraster, urf): what the printer listed, else RASTER_DPI."""
    if device not in ("pwgraster", "urf"):
        return []
    return (raster or RasterMode()).ghostscript_args(device)


def _sandbox_prefix(memory: bool = True) -> list[str]:
    """What every converter runs under (docs/convert.md): its own session
    (``setsid``: a time-out kills the whole process group, LibreOffice's
    oosplash and soffice.bin too), no network (``unshare -n``: a document
    cannot fetch anything, not even from localhost), and resource limits
    (``prlimit``: output file size, address space, CPU seconds)."""
    prefix: list[str] = []
    setsid = shutil.which("setsid")
    if setsid:
        prefix += [setsid]
    if _can_unshare_network():
        prefix += [shutil.which("unshare") or "unshare", "-n", "--"]
    prlimit = shutil.which("prlimit")
    if prlimit:
        prefix += [prlimit, f"--fsize={MAX_OUTPUT_BYTES}", f"--cpu={int(CONVERSION_TIMEOUT) + 60}"]
        if memory:
            prefix += [f"--as={MAX_MEMORY_BYTES}"]
        prefix += ["--"]
    return prefix


_UNSHARE_OK: bool | None = None


def _can_unshare_network() -> bool:
    """``unshare -n`` needs root (or user namespaces): tried once."""
    global _UNSHARE_OK
    if _UNSHARE_OK is None:
        import subprocess

        tool = shutil.which("unshare")
        try:
            _UNSHARE_OK = tool is not None and subprocess.run(
                [tool, "-n", "--", "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            _UNSHARE_OK = False
        if not _UNSHARE_OK:
            log.warn("converters run WITH network access: `unshare -n` does not work here "
                     "(run the appliance as root or allow user namespaces)")
    return _UNSHARE_OK


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


#: The first bytes of a complete raster stream.
START_MARKERS: dict[str, bytes] = {"pwg-raster": b"RaS2", "urf": b"UNIRAST"}


def check_output(path: Path, to_format: str, messages: bytes | str = b"", tool: str = "Ghostscript") -> int:
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
        problem = f"{tool} reported {bad.group(0).decode('utf-8', 'replace').strip()!r}"
    elif size < 0:
        problem = f"{tool} wrote no {to_format} output"
    elif size == 0:
        problem = f"{tool}'s {to_format} output is empty"
    else:
        start = START_MARKERS.get(to_format)
        if start is not None:
            with open(path, "rb") as f:
                if not f.read(1024).lstrip(b"\x00").startswith(start):
                    problem = f"{tool}'s {to_format} output does not start with {start.decode()}"
        marker = END_MARKERS.get(to_format)
        if marker is not None:
            with open(path, "rb") as f:
                f.seek(max(size - END_MARKER_WINDOW, 0))
                tail = f.read()
            if marker not in tail:
                problem = (f"{tool}'s {to_format} output ({size} bytes) is incomplete: "
                           f"no {marker.decode()} at its end")
    if problem is None:
        return size
    if _disk_is_full(path.parent) or SYSTEM_TROUBLE.search(text):
        raise ConverterUnavailable(
            f"{problem}; the print server's disk is full or failing ({path.parent}); "
            "the document was not sent and will be converted again", details=text)
    raise ConverterFailed(f"{problem}; the document was not sent and will be converted again", details=text)


def _finish_output(partial: Path, dst: Path, to_format: str, messages: bytes,
                   tool: str = "Ghostscript") -> Path:
    """Check the output, then give it its final name (worker thread)."""
    try:
        check_output(partial, to_format, messages, tool)
        os.replace(partial, dst)
    except BaseException:
        _unlink(partial)
        raise
    return dst


def convert(
    reactor,
    src: Path | list[Path],
    dst: Path,
    from_format: str,
    to_format: str,
    *,
    timeout: float | None = None,
    media: str = DEFAULT_MEDIA,
    raster: RasterMode | None = None,
) -> defer.Deferred:
    """Convert *src* (of *from_format*) into *dst* (of *to_format*), along
    the shortest path of :data:`EDGES` (e.g. docx -> pdf -> pwg-raster).
    *src* may be several pictures: they become one PDF of several pages.

    Fires with *dst* once it is complete and checked (written under a
    temporary name, checked by :func:`check_output`, renamed: *dst* never
    holds half a document).  *media*: what pictures are fitted to; *raster*:
    the resolution a pwg-raster / urf printer takes (phaserlink/printer/target.py).
    Fails with :class:`ConversionError` when a
    converter rejected the document (its words in ``reason``), with
    :class:`ConverterUnavailable` or :class:`ConverterFailed` (temporary
    faults) when it could not do its work."""
    return defer.ensureDeferred(_convert(reactor, src, dst, from_format, to_format, timeout, media, raster))


async def _convert(reactor, src, dst, from_format, to_format, timeout, media, raster=None) -> Path:
    if timeout is None:
        timeout = CONVERSION_TIMEOUT  # read at each call: a site or a test may change it
    sources = [Path(p).absolute() for p in (src if isinstance(src, (list, tuple)) else [src])]
    dst = Path(dst).absolute()
    path = conversion_path(from_format, (to_format,))
    steps = list(zip(path, path[1:]))
    made: list[Path] = []
    try:
        for i, (a, b) in enumerate(steps):
            last = i == len(steps) - 1
            out = dst if last else dst.with_name(f"{dst.stem}.step{i + 1}.{_formats.EXTENSIONS.get(b, 'bin')}")
            await _step(reactor, sources, out, a, b, timeout, media, raster)
            if not last:
                made.append(out)
            sources = [out]
    finally:
        for p in made:
            _unlink(p)
    return dst


async def _step(reactor, sources: list[Path], dst: Path, from_format: str, to_format: str,
                timeout: float, media: str, raster: RasterMode | None = None) -> Path:
    """One edge of the graph: run its tool in the sandbox, check the output."""
    tool, _device = _edge(from_format, to_format)
    partial = dst.with_name(dst.name + ".part")
    if tool == GS:
        argv = ghostscript_argv(ghostscript_path(), sources[0], partial, from_format, to_format, raster)
        messages = await _run(reactor, "Ghostscript", argv, dst.parent, timeout,
                              f"converting {from_format} to {to_format}", partial)
        return await pools_for(reactor).durable(_finish_output, partial, dst, to_format, messages)
    if tool == POPPLER:
        return await _pdf_to_postscript(reactor, sources[0], dst, partial, timeout)
    if tool == IMAGE:
        argv = [sys.executable, "-m", "phaserlink.printer.convert_image", "--media", media,
                str(partial), *map(str, sources)]
        messages = await _run(reactor, "the picture converter", argv, dst.parent,
                              timeout, f"converting {from_format} to PDF", partial,
                              rejects=IMAGE_REJECTED)
        return await pools_for(reactor).durable(_finish_output, partial, dst, to_format, messages,
                                                "the picture converter")
    if tool == OFFICE:
        async with _slots(reactor):
            return await _libreoffice(reactor, sources[0], dst, from_format, timeout)
    if tool == HTML:
        async with _slots(reactor):
            return await _chromium(reactor, sources[0], dst, timeout)
    raise ConversionError(f"no conversion from {from_format} to {to_format}")


#: pdftops' exit status for a PDF it cannot open (1), a permissions error
#: (3; poppler 22.12 prints a PDF that forbids printing all the same) or
#: another error (99): Ghostscript is tried then (it repairs other PDFs,
#: ignores permissions, and says why when it too cannot).
PDFTOPS_REJECTED = (1, 3, 99)


def pdftops_argv(pdftops: str, src: Path, dst: Path) -> list[str]:
    """``pdftops -level3``: JPEG (DCT) and Flate data stay compressed as
    they are in the PDF; ``-origpagesizes``: each page its own size, as
    ps2write does (without it every page gets the first page's size)."""
    return [pdftops, "-level3", "-origpagesizes", "--", str(src), str(dst)]


async def _pdf_to_postscript(reactor, src: Path, dst: Path, partial: Path, timeout: float) -> Path:
    """PDF to PostScript: Poppler's pdftops when it is installed (a 4 MB
    photo stays 4.5 MB; ps2write makes 47 MB of it), else Ghostscript's
    ps2write, as before.  A PDF pdftops cannot open goes to Ghostscript
    too, which decides: it prints it, or rejects it in its own words."""
    what = "converting pdf to postscript"
    pdftops = shutil.which(PDFTOPS)
    if pdftops is not None:
        try:
            messages = await _run(reactor, "pdftops", pdftops_argv(pdftops, src, partial), dst.parent,
                                  timeout, what, partial, rejects=PDFTOPS_REJECTED)
        except DocumentRejected as e:
            log.info("pdftops cannot convert {src} ({reason}); trying Ghostscript", src=str(src),
                     reason=e.reason)
        except ConverterUnavailable as e:
            # A broken install (127, a missing library): Ghostscript can do
            # the job, so the job does not wait for pdftops to be mended.
            log.warn("pdftops cannot run ({reason}); converting with Ghostscript", reason=e.reason)
        else:
            return await pools_for(reactor).durable(_finish_output, partial, dst, "postscript", messages,
                                                    "pdftops")
    argv = ghostscript_argv(ghostscript_path(), src, partial, "pdf", "postscript")
    messages = await _run(reactor, "Ghostscript", argv, dst.parent, timeout, what, partial)
    return await pools_for(reactor).durable(_finish_output, partial, dst, "postscript", messages)


#: Exit status of convert_image for a picture it cannot read (the document's
#: fault); any other failure is the machine's.
IMAGE_REJECTED = 65  # EX_DATAERR


class _Slots:
    """At most ``max_conversions`` heavy converters (LibreOffice, Chromium)
    at once: each takes ~200 MB and a core; the rest wait their turn."""

    def __init__(self) -> None:
        self.limit = 1
        self.semaphore = defer.DeferredSemaphore(1)

    def __call__(self, reactor):
        return self

    async def __aenter__(self):
        await self.semaphore.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        self.semaphore.release()


_slots = _Slots()


def set_max_conversions(n: int) -> None:
    """Set the ``[appliance] max_conversions`` limit (at start-up)."""
    if n != _slots.limit:
        _slots.limit = n
        _slots.semaphore = defer.DeferredSemaphore(max(1, n))


def _soffice_path() -> str:
    path = shutil.which(SOFFICE) or shutil.which("libreoffice")
    if path is None:
        raise ConversionError(
            "LibreOffice is not installed on the print server, so Office documents cannot be printed "
            "(apt-get install libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui)")
    return path


async def _libreoffice(reactor, src: Path, dst: Path, from_format: str, timeout: float) -> Path:
    """``soffice --headless --convert-to pdf`` with a throw-away profile:
    two LibreOffices on one profile fail, and a document cannot leave
    anything behind for the next one."""
    import tempfile

    soffice = _soffice_path()
    work = Path(await pools_for(reactor).durable(tempfile.mkdtemp, "", ".lo", str(dst.parent)))
    try:
        # LibreOffice picks its import filter by the name too: give it one.
        named = work / f"document.{_formats.EXTENSIONS.get(from_format, from_format)}"
        os.symlink(src, named)
        argv = [soffice, f"-env:UserInstallation=file://{work}/profile", "--headless", "--norestore",
                "--nolockcheck", "--nodefault", "--convert-to", "pdf", "--outdir", str(work / "out"),
                str(named)]
        out = work / "out" / "document.pdf"
        messages = await _run(reactor, "LibreOffice", argv, work, timeout,
                              f"converting {from_format} to PDF", out, env={"HOME": str(work)}, memory=False)
        if not out.exists():
            text = messages.decode("utf-8", "replace")
            raise ConversionError(
                f"LibreOffice cannot convert this {from_format} document: "
                + (_summary(text) or "it wrote no PDF"), details=text)
        return await pools_for(reactor).durable(_finish_output, out, dst, "pdf", messages, "LibreOffice")
    finally:
        await pools_for(reactor).durable(shutil.rmtree, work, True)


async def _chromium(reactor, src: Path, dst: Path, timeout: float) -> Path:
    """An HTML body printed as the page it shows, with no network at all
    (``unshare -n`` and Chromium's own proxy/resolver rules pointing nowhere)."""
    import tempfile

    chromium = shutil.which(CHROMIUM)
    if chromium is None:
        raise ConversionError("Chromium is not installed on the print server, so an HTML-only mail "
                              "cannot be printed (apt-get install chromium)")
    work = Path(await pools_for(reactor).durable(tempfile.mkdtemp, "", ".html", str(dst.parent)))
    try:
        page = work / "page.html"
        os.symlink(src, page)
        partial = work / "page.pdf"
        argv = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                "--blink-settings=imagesEnabled=true", f"--user-data-dir={work / 'profile'}",
                "--no-pdf-header-footer", f"--print-to-pdf={partial}", page.as_uri()]
        messages = await _run(reactor, "Chromium", argv, work, timeout,
                              "converting HTML to PDF", partial, env={"HOME": str(work)}, memory=False)
        return await pools_for(reactor).durable(_finish_output, partial, dst, "pdf", b"", "Chromium")
    finally:
        await pools_for(reactor).durable(shutil.rmtree, work, True)


async def _run(reactor, tool: str, argv: list[str], cwd: Path, timeout: float, what: str,
               partial: Path, *, env: dict[str, str] | None = None,
               rejects: int | tuple[int, ...] | None = None,
               memory: bool = True) -> bytes:
    """Run one converter (*argv*) in the sandbox; its messages when it
    exited 0.  A non-zero exit is classified by how it ended (module
    docstring)."""
    command = _sandbox_prefix(memory) + argv
    done: defer.Deferred = defer.Deferred()
    proto = _GhostscriptProcess(done)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
               "PYTHONPATH": _package_root(), **(env or {})}
    try:
        transport = reactor.spawnProcess(
            proto, command[0], command, env=environ, path=str(cwd),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
    except OSError as e:
        raise ConverterUnavailable(f"{tool} ({argv[0]}) cannot be started: {e}") from None
    transport.closeStdin()

    def on_timeout() -> None:
        proto.killed_for_timeout = True
        pid = transport.pid
        try:
            if pid:
                os.killpg(pid, 9)  # its own session (setsid): all of its children too
        except OSError:
            pass
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        # A wrapper script's own child (a site's `gs` that does not exec)
        # may outlive the kill and hold the pipes open: close our ends, so
        # the conversion ends now rather than when that child does.
        transport.loseConnection()

    timer = reactor.callLater(timeout, on_timeout)
    try:
        await done
    finally:
        if timer.active():
            timer.cancel()
    reason = proto.reason
    raw = bytes(proto.messages)
    messages = raw.decode("utf-8", "replace")
    name = tool[:1].upper() + tool[1:]
    if proto.killed_for_timeout:
        _unlink(partial)
        raise ConverterFailed(
            f"{what} took longer than {timeout:g} s; {tool} was stopped and it will be tried again",
            details=messages)
    if reason.check(error.ProcessDone):
        if messages.strip():
            log.info("{tool} said while {what}: {messages}", tool=tool, what=what, messages=messages)
        return raw
    code = getattr(reason.value, "exitCode", None)
    signal = getattr(reason.value, "signal", None)
    disk_full = _disk_is_full(partial.parent)
    _unlink(partial)
    summary = _summary(messages)
    if signal == SIGXFSZ:
        raise ConversionError(f"{what} made more than {MAX_OUTPUT_BYTES // 2**20} MB; "
                              "the document is too large to print", details=messages)
    if signal is not None and code is None:
        raise ConverterFailed(f"{tool} was killed by signal {signal} while {what}", details=messages)
    if code in CANNOT_RUN_EXIT_CODES or EXEC_FAILED in messages:
        if EXEC_FAILED in messages:
            last = [line for line in messages.splitlines() if line.strip()][-1:]
            summary = last[0].strip() if last else summary
        raise ConverterUnavailable(
            f"{tool} ({argv[0]}) cannot run on the "
            f"print server (exit {code}" + (f": {summary}" if summary else "") + ")", details=messages)
    if disk_full or SYSTEM_TROUBLE.search(messages):
        raise ConverterUnavailable(
            f"{name} failed {what} because of the print server ("
            + (summary or f"exit {code}") + (f"; disk full in {partial.parent}" if disk_full else "") + ")",
            details=messages)
    if OUT_OF_MEMORY.search(messages):
        raise ConverterFailed(f"{name} ran out of memory while {what} ({summary})", details=messages)
    if rejects is not None and code not in (rejects if isinstance(rejects, tuple) else (rejects,)):
        raise ConverterFailed(f"{tool} failed while {what} (exit {code}: {summary})", details=messages)
    raise DocumentRejected(
        f"cannot convert this {what.removeprefix('converting ').replace(' to ', ' document to ', 1)}: "
        + (summary or f"{tool} exited with {code}"),
        details=messages,
    )


def _package_root() -> str:
    """The directory phaserlink is imported from, for ``python3 -m``."""
    import phaserlink

    return str(Path(phaserlink.__file__).resolve().parent.parent)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


#: Formats whose pages Ghostscript counts.
COUNTED_BY_GHOSTSCRIPT = ("pdf", "postscript")
#: Lines on a page of plain text as gslp.ps sets it (and as a printer's
#: text mode does, near enough): a form feed starts a new page too.
TEXT_LINES_PER_PAGE = 66


def count_pages(reactor, path: Path, fmt: str, *, interpret: bool = True) -> defer.Deferred:
    """How many pages *path* (of *fmt*) prints, or None when unknown (PCL).

    PDF and PostScript are counted by Ghostscript in the sandbox (a PDF by
    its page tree, PostScript by running it on the ``nullpage`` device
    with an EndPage procedure that counts); a picture is one page; text by lines and
    form feeds; URF says it in its header, PWG raster has one page header
    ("PwgRaster") per page.  Never fails: a count is worth having, not
    worth holding a job for.  With *interpret* false, PostScript that does
    not say its count in a ``%%Pages:`` comment stays unknown instead of
    being run (a Ghostscript start per job: the page cap needs it, a plain
    print does not)."""
    return defer.ensureDeferred(_count_pages(reactor, Path(path).absolute(), fmt, interpret))


async def _count_pages(reactor, path: Path, fmt: str, interpret: bool = True) -> int | None:
    try:
        if fmt == "postscript":
            said = await pools_for(reactor).cpu(_dsc_pages, path)
            if said is not None or not interpret:
                return said
        if fmt in COUNTED_BY_GHOSTSCRIPT:
            raw = await _run(reactor, "Ghostscript", _count_argv(ghostscript_path(), path, fmt), path.parent,
                             PAGE_COUNT_TIMEOUT, f"counting the pages of {fmt}", path.with_name(".none"))
            return _counted(fmt, raw)
        if fmt in ("text", "urf", "pwg-raster"):  # the file is read: a worker thread
            return await pools_for(reactor).cpu(_count_file_pages, path, fmt)
        return _count_without_ghostscript(path, fmt)
    except Exception as e:
        log.info("cannot count the pages of {path}: {e}", path=str(path), e=str(e))
    return None


def count_pages_blocking(path: Path, fmt: str) -> int | None:
    """:func:`count_pages` for a caller without a reactor to spawn on (it
    blocks: run it in a worker thread).  The same Ghostscript command in the
    same sandbox, and the same answers (None when unknown); PostScript is
    always counted, by its ``%%Pages:`` or by running it."""
    import subprocess

    path = Path(path).absolute()
    try:
        if fmt == "postscript":
            said = _dsc_pages(path)
            if said is not None:
                return said
        if fmt not in COUNTED_BY_GHOSTSCRIPT:
            return _count_without_ghostscript(path, fmt)
        done = subprocess.run(_sandbox_prefix() + _count_argv(ghostscript_path(), path, fmt),
                              capture_output=True, timeout=PAGE_COUNT_TIMEOUT, stdin=subprocess.DEVNULL,
                              cwd=path.parent)
    except (OSError, subprocess.SubprocessError, ConverterUnavailable) as e:
        log.info("cannot count the pages of {path}: {e}", path=str(path), e=str(e))
        return None
    return _counted(fmt, done.stdout + done.stderr) if done.returncode == 0 else None


def _count_argv(gs: str, path: Path, fmt: str) -> list[str]:
    """Ghostscript counting a PDF by its page tree, PostScript by running it
    on the nullpage device (its messages: :func:`_counted`)."""
    if fmt == "pdf":
        return [gs, "-q", "-dNODISPLAY", "-dSAFER", f"--permit-file-read={path}", "-c",
                f"({_ps_string(str(path))}) (r) file runpdfbegin pdfpagecount = quit"]
    return [gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=nullpage",
            "-c", _COUNT_PS_PAGES, "-f", str(path), "-c", "(PLPAGES=) print globaldict /PLpages get = flush"]


def _counted(fmt: str, raw: bytes) -> int | None:
    """The count in what :func:`_count_argv`'s Ghostscript said (None: none, or 0)."""
    text = raw.decode("utf-8", "replace")
    if fmt == "pdf":
        found = re.findall(r"^\s*(\d+)\s*$", text, re.MULTILINE)
    else:
        found = re.findall(r"PLPAGES=(\d+)", text)
    return int(found[-1]) if found and int(found[-1]) > 0 else None


def _count_without_ghostscript(path: Path, fmt: str) -> int | None:
    """A picture is a page; text, URF and PWG raster are read (worker thread)."""
    if fmt in _formats.IMAGES or fmt in ("jpeg", "png"):
        return 1
    if fmt in ("text", "urf", "pwg-raster"):
        return _count_file_pages(path, fmt)
    return None


#: Counts the pages a PostScript file ends (EndPage, reason 0 or 1) in a
#: global counter, which the file's own save/restore cannot undo; the
#: nullpage device renders nothing, so 4000 pages take a fraction of a second.
_COUNT_PS_PAGES = ("true setglobal globaldict /PLpages 0 put false setglobal "
                   "<< /EndPage { exch pop 2 ne dup { globaldict /PLpages 2 copy get 1 add put } if } >> "
                   "setpagedevice")



def _dsc_pages(path: Path) -> int | None:
    """The page count a DSC-conforming PostScript file states (``%%Pages: N``
    in its header, or in its trailer after ``(atend)``): what drivers and
    ps2write write, and no Ghostscript start (~50 ms) for each small job."""
    with open(path, "rb") as f:
        head = f.read(DSC_WINDOW)
        if not head.startswith(b"%!PS-Adobe-"):
            return None
        m = re.search(rb"^%%Pages:\s*(\d+|\(atend\))", head, re.MULTILINE)
        if m is None:
            return None
        if m.group(1) == b"(atend)":
            f.seek(max(path.stat().st_size - DSC_WINDOW, 0))
            found = re.findall(rb"^%%Pages:\s*(\d+)", f.read(), re.MULTILINE)
            return int(found[-1]) if found and int(found[-1]) > 0 else None
        n = int(m.group(1))
        return n if n > 0 else None


def _ps_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _count_file_pages(path: Path, fmt: str) -> int | None:
    """Pages of text, URF or PWG raster, reading the file once (worker thread)."""
    with open(path, "rb") as f:
        if fmt == "urf":
            head = f.read(12)
            # Ghostscript streams URF and writes 0 here: then unknown.
            return (int.from_bytes(head[8:12], "big") or None) if head.startswith(b"UNIRAST\0") else None
        pages, lines, carry = 0, 0, b""
        marker = b"PwgRaster\0"
        while True:
            chunk = f.read(1024 * 1024)
            if not chunk:
                break
            if fmt == "pwg-raster":
                data = carry + chunk
                pages += data.count(marker)
                carry = data[-(len(marker) - 1):]
                continue
            *full, last = chunk.split(b"\f")
            for segment in full:  # a form feed ends a page
                lines += segment.count(b"\n")
                pages += 1 + max(lines - 1, 0) // TEXT_LINES_PER_PAGE
                lines = 0
            lines += last.count(b"\n")
        if fmt == "text" and (lines or pages == 0):
            pages += 1 + max(lines - 1, 0) // TEXT_LINES_PER_PAGE
        return pages or None


# ---------------------------------------------------------------------------
# Page selection (job option pages=, docs/options.md).  Kept apart from the
# graph above: the same format in and out, for printers that cannot select
# pages themselves (every output but an IPP printer with page-ranges).

#: Formats whose pages Ghostscript can select, and the device that writes each again.
PAGE_SELECT_DEVICES = {"pdf": "pdfwrite", "postscript": "ps2write"}


def select_pages(reactor, src: Path, dst: Path, fmt: str, pages: str, *,
                 timeout: float | None = None) -> defer.Deferred:
    """Write only *pages* (``"1-3,7"``, Ghostscript's ``-sPageList``) of
    *src*, a PDF or PostScript document, to *dst* in the same format.
    Sandboxed and checked like every conversion (:func:`convert`: the
    same faults, *dst* never half written)."""
    return defer.ensureDeferred(_select_pages(reactor, Path(src).absolute(), Path(dst).absolute(), fmt, pages,
                                              CONVERSION_TIMEOUT if timeout is None else timeout))


async def _select_pages(reactor, src: Path, dst: Path, fmt: str, pages: str, timeout: float) -> Path:
    device = PAGE_SELECT_DEVICES.get(fmt)
    if device is None or not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", pages):
        raise ConversionError(f"cannot select pages {pages!r} of {fmt}")
    partial = dst.with_name(dst.name + ".part")
    argv = [ghostscript_path(), "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-dPDFSTOPONERROR",
            "-sstdout=%stderr", f"-sDEVICE={device}", f"-sPageList={pages}", f"-sOutputFile={partial}",
            "--", str(src)]
    messages = await _run(reactor, "Ghostscript", argv, dst.parent, timeout,
                          f"selecting pages {pages} of {fmt}", partial)
    return await pools_for(reactor).durable(_finish_output, partial, dst, fmt, messages)

"""File output (``file:DIR``): the demo printer, one file per job.

Each job becomes ``DIR/<job_id>.<ext>``: written under a hidden temporary
name, fsync'd, renamed, and the directory fsync'd.  So a reader (or a
crash) never sees half a job under the final name, and the job is "printed"
exactly when the rename is durable.  Sending the same job again (the spool
retrying after a crash) replaces the file instead of adding a second one.

The copy yields to the reactor after every chunk so a 500 MB job does not
freeze the other connections; every chunk is written whole (a write to a
nearly full disk may take only part of it and say so rather than fail: a
short write is retried, so it ends in ENOSPC, never in a truncated file
called printed).  The fsyncs and the rename run in the durable thread pool
(``pools_for(reactor).durable``), never in the reactor thread.  Copies are not multiplied: the file is the
job as received, and the result says how many copies were asked for.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from phaserlink.durable import fsync_dir
from phaserlink.threads import pools_for

from .option_notes import not_said
from .interfaces import (
    REASON_CONNECTING,
    REASON_OTHER,
    REASON_SPOOL_FULL,
    IPrinterOutput,
    OutputJob,
    OutputResult,
    PrinterUnavailable,
)

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    FILE_OUTPUT_COPY_CHUNK as COPY_CHUNK,
)

EXTENSIONS = {
    "application/postscript": "ps",
    "application/pdf": "pdf",
    "application/vnd.hp-pcl": "pcl",
    "application/vnd.hp-pclxl": "pxl",
    "text/plain": "txt",
    "image/png": "png",
    "image/jpeg": "jpg",
}
DEFAULT_EXTENSION = "prn"

log = Logger()


def output_name(job: OutputJob) -> str:
    """``<job_id>.<ext>`` with anything unsafe in the id replaced."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", job.job_id).lstrip(".") or "job"
    ext = EXTENSIONS.get(job.format.split(";")[0].strip().lower(), DEFAULT_EXTENSION)
    return f"{stem}.{ext}"


@implementer(IPrinterOutput)
class FileOutput:
    def __init__(self, uri: str, directory: Path, *, reactor) -> None:
        self.uri, self.directory, self.reactor = uri, Path(directory), reactor

    def send(self, job: OutputJob) -> defer.Deferred:
        return defer.ensureDeferred(self._send(job))

    async def _send(self, job: OutputJob) -> OutputResult:
        final = self.directory / output_name(job)
        tmp = self.directory / f".{final.name}.tmp-{secrets.token_hex(4)}"
        # A missing job file is the spool's bug, not the printer's: it
        # propagates as it is.
        with open(job.path, "rb") as source:
            try:
                size = await self._copy(source, tmp)
                await pools_for(self.reactor).durable(_publish, tmp, final, self.directory)
            except OSError as e:
                _unlink_quietly(tmp)
                raise _describe(e, self.directory) from e
            except BaseException:  # cancelled: leave no temporary file behind
                _unlink_quietly(tmp)
                raise
        copies = max(1, job.copies)
        detail = f"{size} bytes" + (f"; {copies} copies asked, file written once" if copies > 1 else "")
        notes = not_said(job, ("sides", "media", "color", "pages"), "a file: printer writes the document as it is")
        if copies > 1:
            notes += (f"copies={copies} not applied: a file: printer writes the document once",)
        return OutputResult(acknowledged=f"written to {final}", pages=None, detail=detail, notes=notes)

    async def _copy(self, src, target: Path) -> int:
        size = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            while chunk := src.read(COPY_CHUNK):
                write_all(fd, chunk)
                size += len(chunk)
                await task.deferLater(self.reactor, 0, lambda: None)
        finally:
            os.close(fd)
        return size


def write_all(fd: int, data: bytes) -> None:
    """Write all of *data* to *fd*: ``os.write`` may write only part of it
    (a disk about to be full takes what fits, and only the next write fails
    with ENOSPC)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _publish(tmp: Path, final: Path, directory: Path) -> None:
    """fsync the written file, rename it to its final name, fsync the
    directory: from here on the job is printed (durable thread pool)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _describe(e: OSError, directory: Path) -> PrinterUnavailable:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return PrinterUnavailable(f"no space left in {directory}", REASON_SPOOL_FULL)
    if e.errno in (errno.ENOENT, errno.ENOTDIR) and not directory.is_dir():
        return PrinterUnavailable(f"output directory {directory} does not exist", REASON_CONNECTING)
    return PrinterUnavailable(f"cannot write to {directory}: {e.strerror or e}", REASON_OTHER)

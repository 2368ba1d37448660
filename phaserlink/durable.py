"""The two disk primitives every durable part uses, written once.

A rename or a link is only durable once its directory is fsync'd, and a file
replaced in place must never be seen half-written.  The Maildir, the
outbound queue, the job spool, the ``file:`` printer and the client's
destinations file all rely on these.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename, link or unlink in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o640) -> None:
    """Replace *path* with *data*: a crash leaves the old or the new content,
    never a mix (temporary file in the same directory, fsync, rename,
    directory fsync)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


class SpoolLocked(Exception):
    """Another process holds the spool."""


class SpoolLock:
    """One appliance per spool.

    Two appliances on one spool would clean each other's unfinished
    deliveries and print the same mailbox twice, so the second one must not
    start.  The lock is an ``flock`` on ``SPOOL/.lock``, held for the life of
    the process (the kernel drops it when the process dies, even by kill -9),
    with the holder's pid written in the file for the error message.
    """

    def __init__(self, spool: str | os.PathLike[str]):
        self.path = Path(spool) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (again is fine); raise SpoolLocked if it is held."""
        import fcntl

        if self.fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SpoolLocked(
                f"spool {self.path.parent} is in use by another PhaserLink appliance (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

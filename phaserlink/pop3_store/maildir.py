"""Durable Maildir mailboxes, one per printer.

This is where guarantee 1 ("a 250 is a promise") is kept.  A delivery is
written into ``tmp/``, the file is fsync'd, then hard-linked into ``new/`` of
every recipient mailbox and each ``new/`` directory is fsync'd, and only then
does :meth:`Delivery.commit` return.  A crash before that leaves only a file
in ``tmp/``, which :meth:`Maildir.clean_tmp` removes at the next start; a crash
after it leaves the message in every mailbox.

Messages are stored the Maildir way: LF line ends.  File names carry both
sizes (Maildir++ ``S=`` on disk and ``W=`` on the wire with CRLF), so a POP3
LIST or STAT needs no read.  The unique part of the name (before ``,``) is the
message's key, used as its POP3 UIDL: it never changes, across sessions and
restarts.

The store knows no printer.  When a delivery lands in a mailbox it tells that
mailbox's observers (:meth:`MaildirStore.subscribe`); the printer retriever is
one of them.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from twisted.logger import Logger

from phaserlink.durable import fsync_dir

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

log = Logger()

_counter = itertools.count()
DELIVERY_BUFFER = 1 << 16  # bytes buffered before a write reaches the kernel
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def unique_name() -> str:
    """A Maildir unique name: time, microseconds, pid, counter, host."""
    now = time.time()
    return f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{next(_counter)}.{_HOST}"


@dataclass(frozen=True)
class StoredMessage:
    """One message in a mailbox, as listed (no content read)."""

    key: str  # the unique name: stable, used as UIDL
    path: Path
    size: int  # bytes on disk (LF line ends)
    wire_size: int  # bytes as sent over POP3 (CRLF line ends, before stuffing)
    mtime: float


def _parse_sizes(name: str, path: Path) -> tuple[int, int]:
    size = wire = -1
    info = name.partition(":")[0]
    for part in info.split(",")[1:]:
        if part.startswith("S="):
            size = int(part[2:])
        elif part.startswith("W="):
            wire = int(part[2:])
    if size < 0 or wire < 0:
        # A message dropped in by hand or by another MDA: measure it.
        # Another MDA may have stored CRLF: only a bare LF grows on the wire.
        size = path.stat().st_size
        bare_lf = 0
        previous = b""
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                bare_lf += chunk.count(b"\n") - chunk.count(b"\r\n")
                if previous == b"\r" and chunk[:1] == b"\n":
                    bare_lf -= 1
                previous = chunk[-1:]
        wire = size + bare_lf
    return size, wire


class Maildir:
    """One mailbox directory with ``tmp/``, ``new/`` and ``cur/``."""

    def __init__(self, path: Path, name: str):
        self.path = Path(path)
        self.name = name
        self.tmp = self.path / "tmp"
        self.new = self.path / "new"
        self.cur = self.path / "cur"
        for sub in (self.tmp, self.new, self.cur):
            sub.mkdir(parents=True, exist_ok=True)

    def clean_tmp(self) -> int:
        """Remove files a crashed delivery left in ``tmp/``; return how many."""
        removed = 0
        for entry in self.tmp.iterdir():
            try:
                entry.unlink()
                removed += 1
            except OSError as e:
                log.warn("cannot remove stale {path}: {e}", path=entry, e=e)
        if removed:
            log.info("mailbox {name}: removed {n} unfinished deliveries from tmp/", name=self.name, n=removed)
        return removed

    def messages(self) -> list[StoredMessage]:
        """All messages in ``new/`` and ``cur/``, oldest delivery first."""
        found = []
        for sub in (self.new, self.cur):
            for entry in os.scandir(sub):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                path = Path(entry.path)
                try:
                    size, wire = _parse_sizes(entry.name, path)
                    mtime = entry.stat().st_mtime
                except (OSError, ValueError):
                    continue
                key = entry.name.partition(",")[0].partition(":")[0]
                found.append(StoredMessage(key, path, size, wire, mtime))
        found.sort(key=lambda m: (m.mtime, m.key))
        return found

    def delete(self, messages: Iterable[StoredMessage]) -> None:
        """Unlink *messages* and fsync the directories: durable on return."""
        dirs = set()
        for message in messages:
            try:
                message.path.unlink()
            except FileNotFoundError:
                pass
            dirs.add(message.path.parent)
        for d in dirs:
            fsync_dir(d)


@dataclass
class TmpFile:
    """An open, empty file waiting to become a message."""

    name: str
    path: Path
    file: io.RawIOBase

    @classmethod
    def create(cls, directory: Path) -> "TmpFile":
        name = unique_name()
        path = directory / name
        # Unbuffered here: the write buffer is added by the Delivery in the
        # reactor thread, so a worker thread's malloc arena does not keep it.
        return cls(name, path, open(path, "xb", buffering=0))


class TmpFilePool:
    """Files created ahead of time, in a worker thread, for deliveries.

    Creating a file in a directory can wait for the file system's journal,
    and with many sessions committing (fsync) at once that wait is long: in
    the reactor thread it stalled every session (a third of the reactor's
    time at 800 messages/s).  So the store keeps a few empty files ready in
    its own ``.tmp/`` directory (on the same file system as every mailbox,
    so they can be hard-linked into any ``new/``), and refills the pool in
    the thread pool when it runs low.  Before ``start`` (and in tests without
    a reactor) a delivery simply creates its file itself.
    """

    TARGET = 32
    LOW_WATER = 12

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ready: list[TmpFile] = []
        self.reactor = None
        self.refilling = False

    def start(self, reactor) -> None:
        self.reactor = reactor
        self._refill()

    def stop(self) -> None:
        self.reactor = None
        while self.ready:
            tmp = self.ready.pop()
            tmp.file.close()
            _unlink_quietly(tmp.path)

    def take(self) -> TmpFile:
        tmp = self.ready.pop() if self.ready else TmpFile.create(self.directory)
        if len(self.ready) < self.LOW_WATER:
            self._refill()
        return tmp

    def _refill(self) -> None:
        if self.reactor is None or self.refilling:
            return
        from phaserlink.threads import pools_for

        self.refilling = True
        reactor, count, directory = self.reactor, self.TARGET - len(self.ready), self.directory

        def created(files: list[TmpFile]) -> None:
            if self.reactor is None:  # stopped meanwhile
                for tmp in files:
                    tmp.file.close()
                    _unlink_quietly(tmp.path)
            else:
                self.ready.extend(files)

        def done(result):
            self.refilling = False
            return result

        d = pools_for(reactor).durable(lambda: [TmpFile.create(directory) for _ in range(count)])
        d.addCallback(created)
        d.addBoth(done)
        d.addErrback(lambda f: log.failure("cannot create spare delivery files in {dir}", f, dir=directory))


class Delivery:
    """One message being written into one or more mailboxes.

    ``write`` as the data arrives (LF line ends); ``commit`` makes it durable
    in every mailbox or raises ``OSError`` (then nothing was delivered);
    ``abort`` throws it away.
    """

    def __init__(self, store: "MaildirStore", mailboxes: list[Maildir], tmp: "TmpFile | None" = None):
        if not mailboxes:
            raise ValueError("a delivery needs at least one mailbox")
        self.store = store
        self.mailboxes = mailboxes
        if tmp is None:
            tmp = TmpFile.create(mailboxes[0].tmp)
        self.name, self.tmp_path = tmp.name, tmp.path
        self.file = io.BufferedWriter(tmp.file, DELIVERY_BUFFER)
        self.size = 0
        self.lines = 0
        self.done = False

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)
        self.lines += data.count(b"\n")

    # The steps of a commit, shared by the blocking and the asynchronous way.

    def _sync_file(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def _link(self, linked: list[Path]) -> None:
        """Hard-link the file into every ``new/``, recording each link."""
        final = f"{self.name},S={self.size},W={self.size + self.lines}"
        for box in self.mailboxes:
            target = box.new / final
            os.link(self.tmp_path, target)
            linked.append(target)

    def _finish(self, linked: list[Path], unlink: bool = True) -> list[Path]:
        self.done = True
        if unlink:
            _unlink_quietly(self.tmp_path)
        for box in self.mailboxes:
            self.store.notify(box.name)
        return linked

    def _undo(self, linked: list[Path]) -> None:
        for path in linked:
            _unlink_quietly(path)
        self.abort()

    def commit(self) -> list[Path]:
        """fsync, link into every ``new/``, fsync those; return the paths."""
        if self.done:
            raise RuntimeError("delivery already finished")
        linked: list[Path] = []
        try:
            self._sync_file()
            self._link(linked)
            for box in self.mailboxes:
                fsync_dir(box.new)
        except OSError:
            self._undo(linked)
            raise
        return self._finish(linked)

    def commit_async(self, reactor=None) -> "Deferred[list[Path]]":
        """Like :meth:`commit`, without blocking the reactor on fsync.

        The file's fsync runs in a worker thread; the directory fsyncs are
        group-committed by the store's :class:`DirectorySyncer`, so many
        sessions finishing at once share one fsync per directory.  The
        Deferred fires only when the message is durable in every mailbox,
        and fails with ``OSError`` (nothing delivered) otherwise.
        """
        from twisted.internet import defer

        from phaserlink.threads import pools_for

        if self.done:
            return defer.fail(RuntimeError("delivery already finished"))
        self.done = True  # no second commit or write while this one runs
        if reactor is None:
            from twisted.internet import reactor
        linked: list[Path] = []

        def sync_and_link() -> None:
            # Both in the durable thread (issue 7: fsync, link and rename off
            # the reactor); *linked* is read back in the reactor only after.
            self._sync_file()
            self._link(linked)

        def failed(failure):
            self._undo(linked)
            return failure

        d = pools_for(reactor).durable(sync_and_link)
        d.addCallback(lambda _: self.store.syncer.sync(reactor, [box.new for box in self.mailboxes]))
        d.addCallbacks(lambda _: self._finish(linked), failed)
        return d

    # Sender verification (phaserlink.trust.gate, docs/trust.md) reads the
    # message back before the commit and puts its Authentication-Results
    # first.  It does so by path, in a worker process or thread, after the
    # last write: this side only flushes before and takes note after.

    def flushed_path(self) -> Path:
        """The file, with everything written so far in it, for a reader or
        rewriter that opens it by path."""
        self.file.flush()
        return self.tmp_path

    def rewritten(self, size: int, lines_delta: int) -> None:
        """The file was rewritten by path (not yet committed): it is now
        *size* bytes with *lines_delta* more line ends."""
        self.file.seek(size)
        self.size = size
        self.lines += lines_delta

    def abort(self) -> None:
        self.done = True
        try:
            self.file.close()
        except OSError:
            pass
        _unlink_quietly(self.tmp_path)


class DirectorySyncer:
    """Group commit for directory fsyncs.

    A caller that has just linked a file into a directory asks for that
    directory to be synced.  If no sync is running, one starts in a worker
    thread; callers arriving while it runs wait for the next round (their
    link may have come after the running fsync began), which then syncs all
    the directories they asked for at once.
    """

    def __init__(self) -> None:
        self.running = False
        self.waiting: list[tuple[set[Path], "Deferred[None]"]] = []

    def sync(self, reactor, directories: Iterable[Path]) -> "Deferred[None]":
        from twisted.internet import defer

        d: defer.Deferred[None] = defer.Deferred()
        self.waiting.append((set(directories), d))
        if not self.running:
            self._round(reactor)
        return d

    def _round(self, reactor) -> None:
        from phaserlink.threads import pools_for

        batch, self.waiting = self.waiting, []
        if not batch:
            self.running = False
            return
        self.running = True
        dirs = set().union(*(wanted for wanted, _ in batch))

        def sync_all() -> None:
            for directory in sorted(dirs):
                fsync_dir(directory)

        def finished(result):
            for _, d in batch:
                if isinstance(result, Exception) or hasattr(result, "raiseException"):
                    d.errback(result)
                else:
                    d.callback(None)
            self._round(reactor)

        pools_for(reactor).durable(sync_all).addBoth(finished)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class MaildirStore:
    """The appliance's mailboxes under ``SPOOL/mail/NAME`` and who listens."""

    def __init__(self, root: Path, names: Iterable[str]):
        self.root = Path(root)
        self.boxes = {name: Maildir(self.root / name, name) for name in names}
        self.observers: dict[str, list[Callable[[str], None]]] = {}
        self.syncer = DirectorySyncer()
        self.tmp_pool = TmpFilePool(self.root / ".tmp")

    def clean(self) -> None:
        """Remove what crashed deliveries (and unused spare files) left."""
        for box in self.boxes.values():
            box.clean_tmp()
        for entry in self.tmp_pool.directory.iterdir():
            _unlink_quietly(entry)

    def start(self, reactor) -> None:
        """Keep spare delivery files ready (see :class:`TmpFilePool`)."""
        self.tmp_pool.start(reactor)

    def stop(self) -> None:
        self.tmp_pool.stop()

    def mailbox(self, name: str) -> Maildir:
        return self.boxes[name]

    def add_mailbox(self, name: str) -> Maildir:
        """Add a mailbox that is no printer's (the postmaster's box,
        :mod:`phaserlink.pop3_store.postmaster`); idempotent."""
        if name not in self.boxes:
            self.boxes[name] = Maildir(self.root / name, name)
        return self.boxes[name]

    def deliver(self, names: Iterable[str]) -> Delivery:
        """Start a delivery into the named mailboxes (each once)."""
        unique = list(dict.fromkeys(names))
        boxes = [self.boxes[n] for n in unique]
        if not boxes:
            raise ValueError("a delivery needs at least one mailbox")
        return Delivery(self, boxes, self.tmp_pool.take())

    def subscribe(self, name: str, observer: Callable[[str], None]) -> Callable[[], None]:
        """Call ``observer(name)`` after each delivery into mailbox *name*.

        Returns a function that unsubscribes.
        """
        self.observers.setdefault(name, []).append(observer)
        return lambda: self.observers[name].remove(observer)

    def notify(self, name: str) -> None:
        for observer in list(self.observers.get(name, ())):
            try:
                observer(name)
            except Exception:
                log.failure("observer of mailbox {name} failed", name=name)

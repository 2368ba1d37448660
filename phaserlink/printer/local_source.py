"""A printer's mail in the appliance's own Maildir store, read in-process.

No POP3 round trips and no polling: the store's delivery event wakes the
retriever, which is what lets a job reach the printer within milliseconds
of the SMTP 250.  Copying a message runs in the CPU thread pool (*blocking*)
so that a 500 MB job never stalls the reactor; deletions are made durable
by :meth:`Maildir.delete`, which fsyncs, in the durable pool (*durable*)
when the session closes: no fsync in the reactor thread (docs/spool.md).
"""

from __future__ import annotations

from typing import BinaryIO, Callable

from twisted.internet import defer
from zope.interface import implementer

from phaserlink.pop3_store.maildir import MaildirStore, StoredMessage
from phaserlink.printer.interfaces import IMailSession, IMailSource, SourceMessage

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    LOCAL_SOURCE_COPY_CHUNK as COPY_CHUNK,
)

Blocking = Callable[..., "defer.Deferred"]


def run_inline(f, *args, **kwargs) -> defer.Deferred:
    """The default 'worker': run now, in the caller's thread."""
    return defer.maybeDeferred(f, *args, **kwargs)


def copy_file(src_path, out: BinaryIO) -> int:
    n = 0
    with open(src_path, "rb") as src:
        while chunk := src.read(COPY_CHUNK):
            out.write(chunk)
            n += len(chunk)
    return n


@implementer(IMailSource)
class LocalMailSource:
    def __init__(self, store: MaildirStore, mailbox_name: str, blocking: Blocking = run_inline,
                 durable: Blocking | None = None):
        self.store = store
        self.name = mailbox_name
        self.blocking = blocking
        self.durable = durable or blocking
        self.description = f"local mailbox {mailbox_name}"
        self._unsubscribe: Callable[[], None] | None = None

    def open(self) -> defer.Deferred:
        return defer.succeed(LocalMailSession(self.store.mailbox(self.name), self.blocking, self.durable))

    def on_new_mail(self, callback: Callable[[], None]) -> None:
        self.stop()
        self._unsubscribe = self.store.subscribe(self.name, lambda _name: callback())

    def stop(self) -> None:
        """Stop waking anybody (the service is stopping)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


@implementer(IMailSession)
class LocalMailSession:
    def __init__(self, maildir, blocking: Blocking, durable: Blocking | None = None):
        self.maildir = maildir
        self.blocking = blocking
        self.durable = durable or blocking
        self.messages: dict[str, StoredMessage] = {}
        self.marked: dict[str, StoredMessage] = {}

    def list(self) -> defer.Deferred:
        # In the worker pool: two directory scans and a stat per message
        # were 0.6 ms of the reactor's time per pass at site scale
        # (bench/scale.py), one pass per delivery.
        def listed(found: list[StoredMessage]) -> list[SourceMessage]:
            self.messages = {m.key: m for m in found}
            return [SourceMessage(m.key, m.size) for m in found]

        return self.blocking(self.maildir.messages).addCallback(listed)

    def retrieve(self, uidl: str, out: BinaryIO) -> defer.Deferred:
        message = self.messages.get(uidl)
        if message is None:
            return defer.fail(KeyError(f"no message {uidl} in {self.maildir.name}"))
        return self.blocking(copy_file, message.path, out).addCallback(lambda _n: None)

    def delete(self, uidl: str) -> defer.Deferred:
        message = self.messages.get(uidl)
        if message is not None:
            self.marked[uidl] = message
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        marked, self.marked = list(self.marked.values()), {}
        if not marked:
            return defer.succeed(None)
        return self.durable(self.maildir.delete, marked)

    def abort(self) -> None:
        self.marked.clear()

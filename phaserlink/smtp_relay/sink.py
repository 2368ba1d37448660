"""Where one accepted message goes: printer mailboxes and/or the outbound queue.

A message may have local recipients (printers, groups) and relayed ones at
the same time.  The local part is one :class:`Delivery` over every mailbox
(hard links, one file), the relayed part one queued message.

Commit order matters when one of the two fails after the other succeeded:
the client then gets a 451 and sends again.  The local delivery commits
first, so a second attempt duplicates at worst a print job, which the
printer side recognises by Message-ID (guarantee 3); committing the queue
first would instead send the same mail out twice.
"""

from __future__ import annotations

from twisted.internet import defer

from phaserlink.pop3_store.maildir import Delivery, MaildirStore
from phaserlink.smtp_relay.interfaces import IOutboundQueue, IQueuedMessage


def return_path(mail_from: str) -> bytes:
    """The ``Return-Path:`` line of final delivery (RFC 5321 4.4): the
    reverse-path, ``<>`` for the null sender.  Only the mailbox copy gets
    it; the relayed copy travels on and gets one where it is delivered."""
    safe = "".join(c for c in mail_from if 32 < ord(c) < 127 and c not in "<>")
    return f"Return-Path: <{safe}>\n".encode("ascii")


class MessageSink:
    """Write to every destination; commit all or raise OSError."""

    def __init__(self, delivery: Delivery | None, queued: IQueuedMessage | None):
        self.delivery = delivery
        self.queued = queued
        self.targets = [t for t in (delivery, queued) if t is not None]
        self.queue_id: str | None = None

    @classmethod
    def open(cls, store: MaildirStore, queue: IOutboundQueue, printers: list[str],
             mail_from: str, relay: list[str], body: str | None = None) -> "MessageSink":
        """Start the destinations; OSError if one cannot be opened.

        *printers* are mailbox names (the printers', and the postmaster's
        box); the mailbox copy starts with its ``Return-Path:``.
        """
        delivery = store.deliver(printers) if printers else None
        queued = None
        try:
            if delivery is not None:
                delivery.write(return_path(mail_from))
            if relay:
                queued = queue.submit(mail_from, list(relay), body)
        except BaseException:
            if delivery is not None:
                delivery.abort()
            raise
        return cls(delivery, queued)

    def write(self, data: bytes) -> None:
        for target in self.targets:
            target.write(data)

    def commit(self) -> "defer.Deferred[None]":
        """Blocking mailbox commit, then the queue's (see the module docstring)."""
        return defer.maybeDeferred(self.commit_local).addCallback(lambda _: self.commit_queue())

    def commit_local(self) -> None:
        """The mailboxes (blocking fsyncs: may run in a thread)."""
        if self.delivery is not None:
            self.delivery.commit()

    def commit_queue(self) -> "defer.Deferred[None]":
        """The outbound queue (its file work runs in the durable pool)."""
        if self.queued is None:
            return defer.succeed(None)

        def committed(queue_id: str) -> None:
            self.queue_id = queue_id

        return self.queued.commit().addCallback(committed)

    def restrict(self, mailboxes: list[str]) -> None:
        """Deliver only into *mailboxes* (the printers sender verification
        let through, phaserlink.trust.gate); none left: no local copy."""
        if self.delivery is None:
            return
        self.delivery.mailboxes = [m for m in self.delivery.mailboxes if m.name in mailboxes]
        if not self.delivery.mailboxes:
            self.delivery.abort()
            self.targets.remove(self.delivery)
            self.delivery = None

    def abort(self) -> None:
        for target in self.targets:
            try:
                target.abort()
            except Exception:
                pass

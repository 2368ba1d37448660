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

from phaserlink.pop3_store.maildir import Delivery, MaildirStore
from phaserlink.smtp_relay.interfaces import IOutboundQueue, IQueuedMessage


class MessageSink:
    """Write to every destination; commit all or raise OSError."""

    def __init__(self, delivery: Delivery | None, queued: IQueuedMessage | None):
        self.delivery = delivery
        self.queued = queued
        self.targets = [t for t in (delivery, queued) if t is not None]
        self.queue_id: str | None = None

    @classmethod
    def open(cls, store: MaildirStore, queue: IOutboundQueue, printers: list[str],
             mail_from: str, relay: list[str]) -> "MessageSink":
        """Start the destinations; OSError if one cannot be opened."""
        delivery = store.deliver(printers) if printers else None
        queued = None
        if relay:
            try:
                queued = queue.submit(mail_from, list(relay))
            except BaseException:
                if delivery is not None:
                    delivery.abort()
                raise
        return cls(delivery, queued)

    def write(self, data: bytes) -> None:
        for target in self.targets:
            target.write(data)

    def commit(self) -> None:
        self.commit_local()
        self.commit_queue()

    def commit_local(self) -> None:
        """The mailboxes (blocking fsyncs: may run in a thread)."""
        if self.delivery is not None:
            self.delivery.commit()

    def commit_queue(self) -> None:
        """The outbound queue (in the reactor thread)."""
        if self.queued is not None:
            self.queue_id = self.queued.commit()

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

"""Wire the parts into one MultiService, in one reactor.

Start order matters for guarantees, and MultiService starts children in the
order added: the mailbox store is cleaned and the outbound queue recovered
before anything listens, and the printers start after the store they read.
"""

from __future__ import annotations

from twisted.application import service, strports

from phaserlink.config import SiteConfig
from phaserlink.durable import SpoolLock
from phaserlink.pop3_store.maildir import MaildirStore


class StoreService(service.Service):
    """Cleans stale ``tmp/`` files of crashed deliveries before serving, and
    keeps spare delivery files ready while it runs."""

    def __init__(self, store: MaildirStore, reactor, spool_lock: SpoolLock):
        self.store = store
        self.reactor = reactor
        self.spool_lock = spool_lock

    def privilegedStartService(self) -> None:
        # First of all, before any port is bound: one appliance per spool.
        self.spool_lock.acquire()
        super().privilegedStartService()

    def startService(self) -> None:
        self.store.clean()
        self.store.start(self.reactor)
        super().startService()

    def stopService(self):
        self.store.stop()
        self.spool_lock.release()
        return super().stopService()


def make_store(site: SiteConfig) -> MaildirStore:
    return MaildirStore(site.appliance.spool / "mail", [p.name for p in site.printers.values()])


def makeService(site: SiteConfig, reactor=None, spool_lock: SpoolLock | None = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    from phaserlink.pop3_store.server import build_factory as pop3_factory
    from phaserlink.printer.operations import PrinterOperations
    from phaserlink.printer.service import PrinterService
    from phaserlink.smtp_relay.queue import OutboundQueue
    from phaserlink.smtp_relay.server import build_factory as smtp_factory

    top = service.MultiService()
    store = make_store(site)
    StoreService(store, reactor, spool_lock or SpoolLock(site.appliance.spool)).setServiceParent(top)
    queue = OutboundQueue(site, reactor=reactor)
    queue.setServiceParent(top)
    printers = PrinterService(site, store, queue, reactor=reactor)
    # The operator's operations and the job history (docs/console.md):
    # before the printers, so it stops after them.
    operations = PrinterOperations(printers, reactor, site.console.history_days)
    operations.setServiceParent(top)
    printers.setServiceParent(top)

    # strports services fail twistd at start when a port cannot be bound,
    # instead of logging it and running deaf.
    smtp = smtp_factory(site, store, queue, reactor=reactor)
    for description in site.appliance.smtp_listen:
        strports.service(description, smtp, reactor=reactor).setServiceParent(top)
    pop3 = pop3_factory(site, store, reactor=reactor)
    for description in site.appliance.pop3_listen:
        strports.service(description, pop3, reactor=reactor).setServiceParent(top)
    if site.console.listen:
        from phaserlink.admin.service import QueueControl, build_site

        console, _ = build_site(operations, QueueControl(queue), site.console.admins, reactor,
                                printer_names=list(operations.runners), history=operations.history)
        for description in site.console.listen:
            strports.service(description, console, reactor=reactor).setServiceParent(top)
    return top

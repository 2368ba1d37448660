"""Wire the parts into one MultiService, in one reactor.

Start order matters for guarantees, and MultiService starts children in the
order added: the mailbox store is cleaned and the outbound queue recovered
before anything listens, and the printers start after the store they read.

Stop order matters as much (docs/spool.md): a plain MultiService calls every
child's stopService at once, so the store released the spool lock while the
printers and the outbound queue were still writing in the spool.
:class:`ApplianceService` stops its children one after another, last added
first (listeners, then printers, whose running send gets the dispatcher's
``STOP_GRACE``, then the queue, then the store), waits for each at most
:data:`STOP_TIMEOUT`, and releases the spool lock last of all.
"""

from __future__ import annotations

from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from phaserlink.config import SiteConfig
from phaserlink.durable import SpoolLock
from phaserlink.pop3_store.maildir import MaildirStore

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    APPLIANCE_STOP_TIMEOUT as STOP_TIMEOUT,
)

class ApplianceService(service.MultiService):
    """The appliance: holds the spool lock from before anything binds or
    cleans until after every part has stopped writing."""

    def __init__(self, reactor, spool_lock: SpoolLock, stop_timeout: float = STOP_TIMEOUT):
        super().__init__()
        self.reactor = reactor
        self.spool_lock = spool_lock
        self.stop_timeout = stop_timeout

    def privilegedStartService(self) -> None:
        # First of all, before any port is bound: one appliance per spool.
        self.spool_lock.acquire()
        super().privilegedStartService()

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop_in_order())

    async def _stop_in_order(self) -> None:
        try:
            for child in reversed(list(self)):
                await self._bounded(defer.maybeDeferred(child.stopService), child)
        finally:
            self.spool_lock.release()

    def _bounded(self, d: defer.Deferred, child) -> defer.Deferred:
        """Fires when *d* does, or after the stop time-out (logged)."""
        done: defer.Deferred = defer.Deferred()
        name = getattr(child, "name", None) or type(child).__name__

        def timed_out() -> None:
            log.warn("shutdown: {part} did not stop within {t:g}s; going on", part=name, t=self.stop_timeout)
            done.callback(None)

        call = self.reactor.callLater(self.stop_timeout, timed_out)

        def stopped(result):
            if isinstance(result, Failure):
                log.failure("shutdown: stopping {part} failed", result, part=name)
            if call.active():
                call.cancel()
                done.callback(None)
            return None

        d.addBoth(stopped)
        return done


class StoreService(service.Service):
    """Cleans stale ``tmp/`` files of crashed deliveries before serving, and
    keeps spare delivery files ready while it runs.  (The spool lock is
    the :class:`ApplianceService`'s: it outlives every part.)"""

    def __init__(self, store: MaildirStore, reactor):
        self.store = store
        self.reactor = reactor

    def startService(self) -> None:
        self.store.clean()
        self.store.start(self.reactor)
        super().startService()

    def stopService(self):
        self.store.stop()
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

    top = ApplianceService(reactor, spool_lock or SpoolLock(site.appliance.spool))
    store = make_store(site)
    StoreService(store, reactor).setServiceParent(top)
    queue = OutboundQueue(site, reactor=reactor)
    queue.setServiceParent(top)
    printers = PrinterService(site, store, queue, reactor=reactor, freeze_after_start=True)
    # The operator's operations and the job history (docs/console.md):
    # before the printers, so it stops after them.
    operations = PrinterOperations(printers, reactor, site.console.history_days)
    operations.setServiceParent(top)
    printers.setServiceParent(top)

    # strports services fail twistd at start when a port cannot be bound,
    # instead of logging it and running deaf.
    smtp = smtp_factory(site, store, queue, reactor=reactor)
    smtp.gate.releaser = printers  # held jobs are released by mail (docs/trust.md)
    for description in site.appliance.smtp_listen:
        strports.service(description, smtp, reactor=reactor).setServiceParent(top)
    pop3 = pop3_factory(site, store, reactor=reactor)
    for description in site.appliance.pop3_listen:
        strports.service(description, pop3, reactor=reactor).setServiceParent(top)
    if site.console.listen:
        from phaserlink.admin.service import QueueControl, build_site

        console, _ = build_site(operations, QueueControl(queue), site.console.admins, reactor,
                                printer_names=list(operations.runners), history=operations.history,
                                sessions={"smtp": smtp, "pop3": pop3})
        for description in site.console.listen:
            strports.service(description, console, reactor=reactor).setServiceParent(top)
    return top

"""The printer side of the appliance: one retriever and one print queue per
printer, in the appliance's reactor.

For each printer with ``output`` other than ``pull`` (a printer that pulls
its own mail over POP3 needs nothing from us), a :class:`PrinterRunner`
owns the chain source -> retriever -> intake -> spool -> dispatcher ->
output, with status mail through the outbound queue.  On start it first
takes back every job the spool holds, in its recorded state, and only then
retrieves new mail.

Disk work that grows with the job (copying a message, extracting,
reassembling) runs in the CPU thread pool so that a 500 MB job never
stalls SMTP or POP3 sessions; every fsync, rename and state write runs in
the durable pool, in order, through the spool (docs/spool.md).  Stopping
waits for the retriever's pass, the send in flight (bounded by the
dispatcher's grace) and the spool's last writes, so that the appliance
releases its spool lock only after all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import PrinterConfig, SiteConfig
from phaserlink.printer.dispatch import Dispatcher
from phaserlink.printer import journal
from phaserlink.printer.intake import Intake
from phaserlink.printer.local_source import LocalMailSource
from phaserlink.printer.retriever import Retriever
from phaserlink.printer.spool import JobSpool
from phaserlink.printer.status import StatusMailer
from phaserlink.printer.convert import set_max_conversions
from phaserlink.printer.toolkit import Toolkit, default_toolkit
from phaserlink.threads import pools_for

log = Logger()

JOBS_DIR = "jobs"


def redelivery_window(site: SiteConfig, printer: PrinterConfig) -> float:
    """How long the seen index must remember a message: a relay may bring
    a copy until its queue gives up (``queue_max_age``), and a fragment set
    stays open ``partial_timeout`` after that."""
    return site.appliance.queue_max_age + printer.partial_timeout


class PrinterRunner(service.Service):
    """Everything that moves one printer's jobs."""

    def __init__(self, site: SiteConfig, printer: PrinterConfig, store, queue, reactor, *,
                 tools: Toolkit | None = None, source=None, output=None,
                 blocking: Callable[..., defer.Deferred] | None = None,
                 mailbox_sessions: defer.DeferredSemaphore | None = None):
        """*mailbox_sessions*: the appliance-wide bound on remote-mailbox
        sessions at once, shared by every printer (docs/scaling.md)."""
        self.name = printer.name
        self.site = site
        self.printer = printer
        self.reactor = reactor
        pools = pools_for(reactor)
        self.blocking = blocking or pools.runner("cpu")
        self.tools = tools or default_toolkit(site.appliance.hostname)
        set_max_conversions(site.appliance.max_conversions)
        if source is None:
            if printer.mailbox is None:
                source = LocalMailSource(store, printer.name, self.blocking, blocking or pools.durable)
            else:
                from phaserlink.printer.remote_source import RemoteMailSource

                source = RemoteMailSource(printer, reactor, sessions=mailbox_sessions)
        if output is None:
            from phaserlink.printer.output import make_output

            output = make_output(printer.output, reactor=reactor, pjl=printer.pjl,
                                 source_port=printer.lpd_source_port, tls=printer.output_tls,
                                 ca_file=printer.output_ca)
            directory = getattr(output, "directory", None)
            if directory is not None:
                # The demo printer: its folder is ours to make (a network
                # printer that is missing is the printer's problem).
                Path(directory).mkdir(parents=True, exist_ok=True)
        self.source = source
        self.output = output
        self.spool = JobSpool(Path(site.appliance.spool) / JOBS_DIR / printer.name, printer.name,
                              reactor=reactor, window=redelivery_window(site, printer))
        self.status = StatusMailer(site, printer, queue, self.tools.write_report)
        self.dispatcher = Dispatcher(printer, self.spool, output, self.status, self.tools, reactor,
                                     blocking=self.blocking, hostname=site.appliance.hostname)
        self.intake = Intake(printer, self.spool, self.status, self.tools, reactor, self.dispatcher.submit)
        self.retriever = Retriever(printer.name, source, self.spool, self.intake, reactor,
                                   printer.poll_interval)
        self.started: defer.Deferred | None = None
        self.prune_call = None

    def startService(self) -> None:
        super().startService()
        self.started = defer.ensureDeferred(self._start())
        self.started.addErrback(lambda f: log.failure("printer {printer}: could not start", f, printer=self.name))

    async def _start(self) -> None:
        recovered = await self.spool.open()
        if not self.running:
            return
        self.dispatcher.start()
        for job in recovered:
            self.intake.recover(job)
        log.info("printer {printer}: {source} -> {output}; {n} job(s) resumed from the spool",
                 printer=self.name, source=self.source.description, output=getattr(self.output, "uri", "?"),
                 n=len(recovered))
        self.retriever.start()
        self.prune_call = self.reactor.callLater(journal.PRUNE_INTERVAL, self._prune)
        probe = getattr(self.output, "probe", None)  # IPP: what the printer says it takes (docs/ipp.md)
        if probe is not None:
            probe().addCallbacks(
                self._printer_said,
                lambda f: log.warn("printer {printer}: {output} did not answer at start: {why}", printer=self.name,
                                   output=self.output.uri, why=f.getErrorMessage()))

    def _printer_said(self, status) -> None:
        """Log what an IPP printer takes at start, and what documents will be
        made into for it; a ``formats`` key that allows none of it is said
        now, not at the first job (phaserlink/printer/target.py)."""
        from phaserlink.printer.faults import TemporaryFault
        from phaserlink.printer.target import accepted_formats

        log.info("printer {printer}: {output} takes {formats}", printer=self.name,
                 output=self.output.uri, formats=", ".join(status.formats) or "(not said)")
        try:
            made = accepted_formats(tuple(self.printer.formats), status, self.output.uri)
        except TemporaryFault as e:
            log.error("printer {printer}: {why}; its jobs are held", printer=self.name, why=e.reason)
            return
        log.info("printer {printer}: documents are made into {formats}", printer=self.name,
                 formats=", ".join(made))

    def _prune(self) -> None:
        self.prune_call = self.reactor.callLater(journal.PRUNE_INTERVAL, self._prune)
        self.spool.prune().addErrback(lambda f: log.failure("printer {printer}: pruning the seen index failed", f,
                                                            printer=self.name))

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.prune_call is not None and self.prune_call.active():
            self.prune_call.cancel()
        self.prune_call = None
        if self.started is not None:
            await self.started
        self.intake.stop()
        await defer.DeferredList([self.retriever.stop(), self.dispatcher.stop()])
        await self.spool.close()  # after every write queued before it


class PrinterService(service.MultiService):
    """One :class:`PrinterRunner` per printer the appliance prints for."""

    def __init__(self, site: SiteConfig, store, queue, reactor=None, *, tools: Toolkit | None = None,
                 sources: dict | None = None, outputs: dict | None = None,
                 blocking: Callable[..., defer.Deferred] | None = None, freeze_after_start: bool = False):
        """*tools*, *sources* and *outputs* (by printer name) and *blocking*
        replace the real ones in tests.  *freeze_after_start*: the
        appliance's process (phaserlink/service.py), not a test's."""
        self.freeze_after_start = freeze_after_start
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.site, self.store, self.queue, self.reactor = site, store, queue, reactor
        self.runners: dict[str, PrinterRunner] = {}
        # One bound for all remote mailboxes (Dovecot's login limits are per
        # server, not per printer): docs/scaling.md.
        self.mailbox_sessions = defer.DeferredSemaphore(site.appliance.mailbox_sessions)
        for printer in site.printers.values():
            if printer.output == "pull":
                continue
            runner = PrinterRunner(site, printer, store, queue, reactor, tools=tools,
                                   source=(sources or {}).get(printer.name),
                                   output=(outputs or {}).get(printer.name), blocking=blocking,
                                   mailbox_sessions=self.mailbox_sessions)
            runner.setServiceParent(self)
            self.runners[printer.name] = runner
        self.all_started: defer.Deferred | None = None

    def startService(self) -> None:
        super().startService()
        # Once every printer has taken back its jobs, what start-up made
        # lives as long as the process: out of the collector's walks
        # (phaserlink/process.py).
        started = [r.started for r in self.runners.values() if r.started is not None]
        self.all_started = defer.DeferredList(started, consumeErrors=True)
        if self.freeze_after_start:
            from phaserlink.process import freeze_start_up

            self.all_started.addCallback(lambda _: freeze_start_up())

    # -- held jobs: the SMTP session's release addresses (docs/trust.md) -------------

    def is_held(self, token: str) -> bool:
        """Does a printer hold a job for *token*?"""
        return any(r.intake.is_held(token) for r in self.runners.values())

    def release(self, token: str) -> None:
        """Release every job held for *token* (they print once)."""
        for runner in self.runners.values():
            if runner.intake.is_held(token):
                runner.intake.release(token).addErrback(
                    lambda f, name=runner.name: log.failure("printer {printer}: release failed", f, printer=name))

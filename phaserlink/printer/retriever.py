"""Moving a printer's mail from its source into its job spool.

Guarantee 2 (docs/README.md) is kept here: each message is streamed into
``incoming/``, taken in by the :class:`~.intake.Intake` (whose spool call
fsyncs it, moves it in and makes the job durable in one task of the
durable thread pool, never in the reactor thread, and records the UIDL in
the spool's seen index), and only then deleted at the source.  A message whose UIDL the seen index already knows
(a crash came between spool and delete) is deleted without being taken in
again.  A retrieval or an intake that fails (a full disk) leaves the
message at the source for the next pass (docs/spool.md).

The retriever runs a pass when woken (the local store's delivery event)
and every ``poll_interval`` as a fallback (the only trigger for a remote
POP3 mailbox).  Passes never overlap: a wake during a pass asks for
another pass right after it, so no delivery is missed and none waits for
the poll timer.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.printer.intake import Intake
from phaserlink.printer.interfaces import SourceBusy
from phaserlink.printer.spool import JobSpool
from phaserlink.threads import pools_for

log = Logger()


class Retriever:
    def __init__(self, name: str, source, spool: JobSpool, intake: Intake, reactor,
                 poll_interval: float, *, durable: Callable[..., defer.Deferred] | None = None):
        self.name = name
        self.source = source
        self.spool = spool
        self.intake = intake
        self.reactor = reactor
        self.poll_interval = poll_interval
        self.durable = durable or pools_for(reactor).durable
        self.running = False
        self.busy = False
        self.again = False
        self.poll_call = None
        self.pass_done: defer.Deferred | None = None
        self.failures = 0  # passes in a row that failed, to keep logs short

    def start(self) -> None:
        self.running = True
        self.source.on_new_mail(self.wake)
        self.wake()

    def stop(self) -> defer.Deferred:
        self.running = False
        if hasattr(self.source, "stop"):
            self.source.stop()
        if self.poll_call is not None and self.poll_call.active():
            self.poll_call.cancel()
        self.poll_call = None
        if self.busy:
            self.pass_done = defer.Deferred()
            return self.pass_done
        return defer.succeed(None)

    def wake(self) -> None:
        """Mail may be waiting: run a pass soon (never inside the caller,
        which may be the SMTP server committing a delivery)."""
        if not self.running:
            return
        if self.busy:
            self.again = True
            return
        self.busy = True
        if self.poll_call is not None and self.poll_call.active():
            self.poll_call.cancel()
        self.poll_call = None
        self.reactor.callLater(0, self._pass)

    def _pass(self) -> None:
        self.again = False
        d = defer.ensureDeferred(self._drain())
        d.addCallbacks(self._passed, self._failed)
        d.addBoth(self._after)

    def _passed(self, count: int) -> None:
        if self.failures:
            log.info("printer {printer}: {source} reachable again", printer=self.name, source=self.source.description)
        self.failures = 0

    def _failed(self, failure) -> None:
        if not self.running and failure.check(defer.CancelledError):
            return  # stopped while waiting for a session slot (remote_source.py)
        if failure.check(SourceBusy):
            # Expected where a mailbox is (wrongly) shared: reachable, so
            # not counted as a failure; no traceback, one line per refused
            # poll, so it can be found and counted.
            log.warn("printer {printer}: {e}; next try in {wait:g}s", printer=self.name,
                     e=failure.getErrorMessage(), wait=self.poll_interval)
            return
        self.failures += 1
        if self.failures == 1:
            log.failure("printer {printer}: retrieving from {source} failed; next try in {wait:g}s", failure,
                        printer=self.name, source=self.source.description, wait=self.poll_interval)
        else:
            log.warn("printer {printer}: retrieving from {source} failed again ({n} in a row): {e}",
                     printer=self.name, source=self.source.description, n=self.failures,
                     e=failure.getErrorMessage())

    def _after(self, _result) -> None:
        self.busy = False
        if not self.running:
            if self.pass_done is not None:
                done, self.pass_done = self.pass_done, None
                done.callback(None)
            return
        if self.again:
            self.wake()
        else:
            self.poll_call = self.reactor.callLater(self.poll_interval, self.wake)

    async def _drain(self) -> int:
        """One session: take in everything waiting; return how many."""
        source = self.source.description
        session = await self.source.open()
        taken = 0
        try:
            listing = await session.list()
            for message in listing:
                if not self.running:
                    break
                if self.spool.seen.has_uidl(source, message.uidl):
                    log.info("printer {printer}: {uidl} already spooled; deleting it at {source}",
                             printer=self.name, uidl=message.uidl, source=source)
                    await session.delete(message.uidl)
                    continue
                path, f = self.spool.incoming_file()
                try:
                    await session.retrieve(message.uidl, f)
                    # Closed, not fsync'd here: the spool's create (or
                    # add_part) fsyncs it in the same durable task that
                    # moves it in, one thread hop per message fewer
                    # (bench/scale.py); a dropped duplicate needs no fsync.
                    f.close()
                except BaseException:
                    f.close()
                    path.unlink(missing_ok=True)
                    raise
                try:
                    await self.intake.take(path, message.uidl, source)
                except Exception:
                    # Not spooled: leave it at the source for the next pass.
                    log.failure("printer {printer}: could not spool {uidl}; it stays at {source}",
                                printer=self.name, uidl=message.uidl, source=source)
                    path.unlink(missing_ok=True)
                    continue
                await session.delete(message.uidl)
                taken += 1
        except BaseException:
            session.abort()
            raise
        await session.close()
        return taken

"""The operator's job and printer operations, each written once
(docs/console.md): cancel, hold, release, retry, pause, resume, and the
read views the console shows.

Each operation changes the job through its printer's spool (one spool
call, durable when it fires) before it answers, and then lets the
dispatcher act on it: so what the operator was told is what a restart
finds.  The rules:

- **cancel**: ``pending``, ``pending-held`` (any reason) or ``processing``
  -> ``canceled`` (job-canceled-by-operator).  A job being sent is cut
  first (the dispatcher cancels the output's Deferred, which aborts the
  connection: LPD never gets the control file, so no job is made; a raw
  9100 printer may print what it already received, and the timeline says
  so; a ``file:`` printer's partial file is removed), then recorded.  The
  job is then finished as any other: the sender gets the "not printed"
  status mail when the printer's ``notify`` has ``errors``; a canceled
  message/partial set is recorded as done, so later fragments are dropped.
- **hold**: ``pending`` (not already being prepared) -> ``pending-held``
  (job-hold-until-specified); **release** undoes it (also for a job held
  for its sender's release).
- **retry**: a job held because its printer is down -> ``pending`` and the
  printer tried at once.
- **pause** / **resume**: a marker file ``paused`` in the printer's spool
  directory (fsync'd), read again at start; a paused printer takes mail
  and keeps its jobs waiting, ``stopped`` with reason ``paused``.
"""

from __future__ import annotations


import inspect
import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from phaserlink.durable import fsync_dir, write_atomic
from phaserlink.printer import control as C
from phaserlink.printer import jobs as J
from phaserlink.printer.history import JobHistory, history_path
from phaserlink.threads import pools_for

log = Logger()

PAUSED_FILE = "paused"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    OPERATIONS_PRUNE_INTERVAL as PRUNE_INTERVAL,
    CUT_TIMEOUT,
)


def public_uri(uri: str) -> str:
    """An output URI without a password (``lpd://user:pw@host/q`` -> no pw)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def paused_marker(runner) -> Path:
    return Path(runner.spool.root) / PAUSED_FILE


def cut_note(uri: str) -> str:
    """What cutting a send did at this kind of printer, for the timeline."""
    scheme = uri.partition(":")[0]
    if scheme == "lpd":
        return "the connection to lpd was closed before the control file, so the printer made no job"
    if scheme == "socket":
        return ("the connection to the raw printer was aborted mid-job: it may print a partial copy "
                "of what it had already received")
    if scheme == "file":
        return "the partial output file was removed"
    return "the send was cut"


@implementer(C.IPrinterControl)
class PrinterOperations(service.Service):
    """IPrinterControl over a PrinterService's runners.

    Made before the printers start (it attaches the history to each spool
    and reads each printer's pause marker), and parented before them, so
    that it stops after them and the history closes last.
    """

    name = "printer-operations"

    def __init__(self, printers, reactor=None, history_days: float = 30.0):
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.pools = pools_for(reactor)
        self.runners: dict[str, Any] = dict(printers.runners)
        self.history = JobHistory(history_path(printers.site.appliance.spool), history_days)
        self.locks: dict[str, defer.DeferredLock] = {n: defer.DeferredLock() for n in self.runners}
        self.prune_call = None
        for runner in self.runners.values():
            runner.spool.history = self.history
            self._note_mails(runner.status)
            runner.dispatcher.paused = paused_marker(runner).exists()

    def _note_mails(self, mailer) -> None:
        """Keep the text of each status mail the printer queues, for the
        job's page (written in the durable pool, never in the way)."""
        notify = mailer.notify

        def noted(job, event, text):
            queued = notify(job, event, text)
            if queued:
                d = self.pools.durable(self.history.note_mail, job.job_id, event, text)
                d.addErrback(lambda f: log.failure("console history: cannot note a status mail", f))
            return queued

        mailer.notify = noted

    # -- service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._prune()

    def _prune(self) -> None:
        self.prune_call = self.reactor.callLater(PRUNE_INTERVAL, self._prune)
        d = self.pools.durable(self.history.prune)
        d.addCallback(lambda n: n and log.info("console history: pruned {n} finished job(s)", n=n))
        d.addErrback(self._prune_failed)

    def _prune_failed(self, failure) -> None:
        # A full disk or a locked database is the disk's state, not a bug:
        # one line, and the next round tries again.
        if failure.check(OSError, sqlite3.Error):
            log.warn("console history: pruning failed ({why}); trying again in {s:g}s",
                     why=failure.value, s=PRUNE_INTERVAL)
        else:
            log.failure("console history: pruning failed", failure)

    def stopService(self):
        super().stopService()
        if self.prune_call is not None and self.prune_call.active():
            self.prune_call.cancel()
        return self.pools.durable(self.history.close)

    # -- read views -----------------------------------------------------------------

    def printers(self) -> list[dict[str, Any]]:
        return [self._printer_view(name) for name in self.runners]

    def gauges(self) -> list[tuple[str, int, bool]]:
        """(printer, jobs waiting, paused) of every printer, for
        ``/metrics``: one history query and no state file read, where
        :meth:`printers` reads each printer's head job and counts each
        printer's jobs in a query of its own."""
        waiting = self.history.waiting_by_printer()
        return [(name, waiting.get(name, 0), bool(getattr(runner.dispatcher, "paused", False)))
                for name, runner in self.runners.items()]

    def printer(self, name: str) -> dict[str, Any]:
        if name not in self.runners:
            raise C.UnknownPrinter(name)
        return self._printer_view(name)

    def _printer_view(self, name: str) -> dict[str, Any]:
        runner = self.runners[name]
        d = runner.dispatcher
        last_error = None
        if getattr(d, "paused", False):
            state, reasons = C.PRINTER_STOPPED, [C.PAUSED]
        elif d.current is not None:
            state, reasons = C.PRINTER_PROCESSING, []
        elif d.retry_call is not None and d.retry_call.active():
            state, reasons = C.PRINTER_STOPPED, ["offline-report"]
        else:
            state, reasons = C.PRINTER_IDLE, []
        head = d.queue[0] if d.queue else d.current
        if head is not None and (state == C.PRINTER_STOPPED or d.current is None):
            try:
                job = runner.spool.load(head)
                if job.state == J.PENDING_HELD and job.detail:
                    last_error = job.detail
            except (OSError, ValueError):
                pass
        return {"name": name, "state": state, "state_reasons": reasons,
                "jobs_waiting": self.history.waiting(name), "output": public_uri(runner.printer.output),
                "last_error": last_error}

    def jobs(self, filter: C.JobFilter, cursor: str | None, limit: int):
        return self.pools.lookup(self.history.page, filter, cursor, limit, list(self.runners))

    async def job(self, job_id: str) -> dict[str, Any]:
        view = await self.pools.lookup(self.history.get, job_id)
        if view is None or view["printer"] not in self.runners:
            raise C.UnknownJob(job_id)
        return view

    # -- finding a job ------------------------------------------------------------------

    async def _find(self, job_id: str):
        """(runner, job) for a job still in a spool; NotAllowed for one
        that is only in the history (it is finished); UnknownJob else."""
        if "/" in job_id or job_id.startswith("."):
            raise C.UnknownJob(job_id)
        for runner in self.runners.values():
            if runner.spool.exists(job_id):
                try:
                    return runner, runner.spool.load(job_id)
                except FileNotFoundError:
                    break  # finished just now
        view = await self.pools.lookup(self.history.get, job_id)
        if view is not None and view["printer"] in self.runners:
            raise C.NotAllowed(f"job {job_id} is {view['state']} already", view)
        raise C.UnknownJob(job_id)

    async def _record(self, runner, job: J.Job, by: str, state: str, reasons: list[str], detail: str,
                      seen=()) -> None:
        job.state, job.reasons, job.detail = state, reasons, detail
        job.changed = self.reactor.seconds()
        self.history.expect_by(job.job_id, by)
        if seen:
            await defer.maybeDeferred(runner.spool.save, job, seen=list(seen))
        else:
            await defer.maybeDeferred(runner.spool.save, job)
        log.info("printer {printer} job {job}: {state} ({reasons}) by {by}", printer=runner.name, job=job.job_id,
                 state=state, reasons=", ".join(reasons), by=by)

    async def _operate(self, job_id: str, by: str, op: str) -> dict[str, Any]:
        runner, _ = await self._find(job_id)
        async with _locked(self.locks[runner.name]):
            runner, job = await self._find(job_id)  # again, under the lock
            await getattr(self, f"_{op}")(runner, job, by)
        return await self.job(job_id)

    # -- job operations -------------------------------------------------------------------

    def cancel(self, job_id: str, by: str):
        return defer.ensureDeferred(self._operate(job_id, by, "cancel"))

    def hold(self, job_id: str, by: str):
        return defer.ensureDeferred(self._operate(job_id, by, "hold"))

    def release(self, job_id: str, by: str):
        return defer.ensureDeferred(self._operate(job_id, by, "release"))

    def retry(self, job_id: str, by: str):
        return defer.ensureDeferred(self._operate(job_id, by, "retry"))

    async def _view_of(self, job: J.Job) -> dict[str, Any]:
        view = await self.pools.lookup(self.history.get, job.job_id)
        return view or {"id": job.job_id, "state": job.state, "state_reasons": job.reasons}

    async def _cancel(self, runner, job: J.Job, by: str) -> None:
        if job.terminal:
            raise C.NotAllowed(f"job {job.job_id} is {job.state} already", await self._view_of(job))
        d = runner.dispatcher
        job_id = job.job_id
        note = ""
        if d.current == job.job_id:
            was_sending = d.sending is not None
            await d.cut(job.job_id).addTimeout(CUT_TIMEOUT, self.reactor)
            try:
                job = runner.spool.load(job.job_id)
            except FileNotFoundError:
                job = None
            if job is None or job.terminal:
                view = await self.pools.lookup(self.history.get, job_id)
                raise C.NotAllowed("the job finished before it could be stopped", view)
            if was_sending:
                note = "; " + cut_note(runner.printer.output)
        else:
            d.forget(job.job_id)
        seen = []
        if job.partial is not None:
            from phaserlink.printer import journal

            seen.append(journal.partial_done(job.partial.id))  # later fragments are dropped
        intake = runner.intake
        turn = getattr(intake, "_turn", None) if J.JOB_INCOMING in job.reasons else None
        if turn is not None:
            await turn.acquire()  # no fragment of this set is being taken in meanwhile
        try:
            call = getattr(intake, "timers", {}).pop(job.job_id, None)
            if call is not None and call.active():
                call.cancel()
            if job.partial is not None:
                getattr(intake, "sets", {}).pop(job.partial.id, None)
            await self._record(runner, job, by, J.CANCELED, [C.JOB_CANCELED_BY_OPERATOR],
                               f"canceled by operator {by}{note}", seen)
        finally:
            if turn is not None:
                turn.release()
        try:
            await _deferred(d.finish, job)
        except Exception:
            # canceled is on disk: a restart finishes it (mail, removal)
            log.failure("printer {printer} job {job}: finishing the canceled job failed; done at restart",
                        printer=runner.name, job=job.job_id)

    async def _hold(self, runner, job: J.Job, by: str) -> None:
        d = runner.dispatcher
        if job.state != J.PENDING or d.current == job.job_id:
            why = "being prepared for printing" if d.current == job.job_id else job.state
            raise C.NotAllowed(f"only a pending job can be held; job {job.job_id} is {why}", await self._view_of(job))
        d.forget(job.job_id)
        await self._record(runner, job, by, J.PENDING_HELD, [C.JOB_HOLD_UNTIL_SPECIFIED], f"held by operator {by}")

    async def _release(self, runner, job: J.Job, by: str) -> None:
        if job.state != J.PENDING_HELD or not ({C.JOB_HOLD_UNTIL_SPECIFIED, C.SENDER_RELEASE} & set(job.reasons)):
            raise C.NotAllowed(f"job {job.job_id} is not held for release ({job.state})", await self._view_of(job))
        await self._record(runner, job, by, J.PENDING, [J.JOB_QUEUED], f"released by operator {by}")
        runner.dispatcher.submit(job)

    async def _retry(self, runner, job: J.Job, by: str) -> None:
        d = runner.dispatcher
        waiting = job.state == J.PENDING_HELD and J.JOB_INCOMING not in job.reasons and not (
            {C.JOB_HOLD_UNTIL_SPECIFIED, C.SENDER_RELEASE} & set(job.reasons))
        if not waiting or d.current == job.job_id:
            raise C.NotAllowed(f"job {job.job_id} is not waiting for its printer ({job.state})",
                               await self._view_of(job))
        await self._record(runner, job, by, J.PENDING, [J.JOB_QUEUED], f"retry now asked by operator {by}")
        d.retry_job(job)

    # -- printer operations -------------------------------------------------------------------

    def pause(self, name: str, by: str):
        return defer.ensureDeferred(self._pause(name, by, True))

    def resume(self, name: str, by: str):
        return defer.ensureDeferred(self._pause(name, by, False))

    async def _pause(self, name: str, by: str, pause: bool) -> dict[str, Any]:
        if name not in self.runners:
            raise C.UnknownPrinter(name)
        runner = self.runners[name]
        async with _locked(self.locks[name]):
            d = runner.dispatcher
            if bool(getattr(d, "paused", False)) == pause:
                raise C.NotAllowed(f"printer {name} is {'already' if pause else 'not'} paused",
                                   self._printer_view(name))
            marker = paused_marker(runner)
            if pause:
                text = f"paused by {by} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode()
                await self.pools.durable(write_atomic, marker, text)
                d.paused = True
            else:
                await self.pools.durable(_unlink_durably, marker)
                d.paused = False
                d.retry_now()
        log.info("printer {printer}: {what} by {by}", printer=name, what="paused" if pause else "resumed", by=by)
        return self._printer_view(name)


def _deferred(f, *args) -> defer.Deferred:
    """Call *f* (plain, Deferred-returning or a coroutine function) and
    give a Deferred of its result."""
    result = f(*args)
    if inspect.iscoroutine(result):
        return defer.ensureDeferred(result)
    return defer.maybeDeferred(lambda: result)


def _unlink_durably(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


class _locked:
    """``async with`` for a DeferredLock."""

    def __init__(self, lock: defer.DeferredLock):
        self.lock = lock

    async def __aenter__(self):
        await self.lock.acquire()

    async def __aexit__(self, *exc):
        self.lock.release()

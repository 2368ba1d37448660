"""Sending one printer's jobs, one at a time, and finishing them.

A job goes pending -> processing -> completed, or -> aborted when it cannot
be printed, or pending-held (printer-stopped) while the printer is down.
Each change is in ``state.json`` before it is acted on: the documents are
extracted (and converted) and recorded together with ``processing`` before
the first byte goes to the printer; ``completed`` is recorded before the
status mail is queued and the job leaves the spool.

A printer that is down holds its queue (the head job is retried with
exponential back-off on reactor timers; other printers have their own
dispatcher and keep printing).  Jobs older than ``delay_notice`` get one
"delayed" mail; jobs older than ``max_retry_time`` are aborted.  Ages count
from the moment a job was spooled, so jobs waiting behind a dead printer
are told and given up on just as the one being retried.
"""

from __future__ import annotations

import re
import shutil
from collections import deque
from pathlib import Path
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import PrinterConfig
from phaserlink.printer import jobs as J
from phaserlink.printer import journal
from phaserlink.printer.jobs import Document, Job
from phaserlink.printer.local_source import run_inline
from phaserlink.printer.spool import JobSpool
from phaserlink.printer.status import DELAYED, ERRORS, PRINTED, StatusMailer
from phaserlink.printer.toolkit import Toolkit

log = Logger()

#: First wait after a printer failed, then multiplied by RETRY_FACTOR per
#: failure in a row, never more than RETRY_MAX.
RETRY_INITIAL = 5.0
RETRY_FACTOR = 2.0
RETRY_MAX = 600.0
#: How long stopping the service waits for a job being sent before cutting it.
STOP_GRACE = 10.0

MIME_TYPES = {"postscript": "application/postscript", "pdf": "application/pdf",
              "pcl": "application/vnd.hp-pcl", "text": "text/plain"}
EXTENSIONS = {"postscript": "ps", "pdf": "pdf", "pcl": "pcl", "text": "txt"}


class Unprintable(Exception):
    def __init__(self, reason: str, ipp_reason: str = J.DOCUMENT_FORMAT_ERROR):
        super().__init__(reason)
        self.reason = reason
        self.ipp_reason = ipp_reason


def backoff(attempts: int) -> float:
    """Seconds to wait after the *attempts*-th failure in a row."""
    return min(RETRY_INITIAL * RETRY_FACTOR ** max(attempts - 1, 0), RETRY_MAX)


def human_duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = round(seconds / size, 1)
            n_text = f"{n:g}"
            return f"{n_text} {unit}" + ("" if n_text == "1" else "s")
    n_text = f"{round(seconds):d}"
    return f"{n_text} second" + ("" if n_text == "1" else "s")


def _lpd_user(sender: str | None) -> str:
    local = (sender or "phaserlink").partition("@")[0]
    return re.sub(r"[^A-Za-z0-9._-]", "_", local)[:31] or "phaserlink"


class Dispatcher:
    """The print queue of one printer."""

    def __init__(self, printer: PrinterConfig, spool: JobSpool, output,
                 status: StatusMailer, tools: Toolkit, reactor, *,
                 blocking: Callable[..., defer.Deferred] = run_inline, hostname: str = "phaserlink"):
        self.printer = printer
        self.spool = spool
        self.output = output
        self.status = status
        self.tools = tools
        self.reactor = reactor
        self.blocking = blocking
        self.hostname = hostname
        self.queue: deque[str] = deque()
        self.current: str | None = None
        self.sending: defer.Deferred | None = None
        self.retry_call = None
        self.running = False
        self.idle: defer.Deferred | None = None

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._next()

    def stop(self) -> defer.Deferred:
        self.running = False
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        self.retry_call = None
        if self.current is None:
            return defer.succeed(None)
        self.idle = defer.Deferred()
        if self.sending is not None:
            sending = self.sending
            cut = self.reactor.callLater(STOP_GRACE, sending.cancel)
            self.idle.addBoth(lambda r: (cut.active() and cut.cancel(), r)[1])
        return self.idle

    # -- queueing -------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Take a spooled job (pending, held, processing or terminal)."""
        if job.terminal:
            self.finish(job)
            return
        if job.job_id != self.current and job.job_id not in self.queue:
            self.queue.append(job.job_id)
        self._next()

    def _next(self) -> None:
        if not self.running or self.current is not None or self.retry_call is not None:
            return
        if not self.queue:
            return
        job_id = self.queue.popleft()
        self.current = job_id
        d = defer.ensureDeferred(self._run(job_id))
        d.addErrback(self._crashed, job_id)
        d.addBoth(self._done)

    def _done(self, _result) -> None:
        self.current = None
        self.sending = None
        if not self.running:
            if self.idle is not None:
                idle, self.idle = self.idle, None
                idle.callback(None)
            return
        self._next()

    def _crashed(self, failure, job_id: str) -> None:
        # A bug, not the job's fault: hold it and try again later rather
        # than lose it or spin on it.
        log.failure("printer {printer} job {job}: unexpected error", failure,
                    printer=self.printer.name, job=job_id)
        if self.running and job_id not in self.queue:
            self.queue.appendleft(job_id)
            self._schedule_retry(RETRY_MAX)

    # -- one job ------------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = self.spool.load(job_id)
        if job.terminal:
            self.finish(job)
            return
        if job.documents is None:
            try:
                documents = await self._prepare(job)
            except Unprintable as e:
                reasons = [J.DOCUMENT_FORMAT_ERROR]
                if e.ipp_reason != J.DOCUMENT_FORMAT_ERROR:
                    reasons.append(e.ipp_reason)
                self.abort(job, reasons, e.reason)
                return
            job.documents = documents
        self._set(job, J.PROCESSING, [J.JOB_PRINTING])
        from phaserlink.printer.output import PrinterRejected, PrinterUnavailable

        for index in range(job.printed_documents, len(job.documents)):
            document = job.documents[index]
            out_job = self._output_job(job, document, index)
            self.sending = defer.maybeDeferred(self.output.send, out_job)
            try:
                result = await self.sending
            except defer.CancelledError:
                log.info("printer {printer} job {job}: send cut short by shutdown; resumes at restart",
                         printer=self.printer.name, job=job.job_id)
                return
            except PrinterRejected as e:
                reasons = [e.ipp_reason] if e.ipp_reason == J.DOCUMENT_FORMAT_ERROR else [J.ABORTED_BY_SYSTEM, e.ipp_reason]
                self.abort(job, reasons, f"the printer refused the job: {e.reason}")
                return
            except PrinterUnavailable as e:
                self._hold(job, e.reason)
                return
            except Exception as e:  # an output bug: temporary, per its contract
                log.failure("printer {printer} job {job}: output failed", printer=self.printer.name, job=job.job_id)
                self._hold(job, f"internal error while sending: {e}")
                return
            finally:
                self.sending = None
            job.printed_documents = index + 1
            if result.pages is not None:
                job.pages = (job.pages or 0) + result.pages
            job.acknowledged = result.acknowledged
            job.attempts = 0
            log.info("printer {printer} job {job}: document {n}/{total} delivered: {ack}",
                     printer=self.printer.name, job=job.job_id, n=index + 1, total=len(job.documents),
                     ack=result.acknowledged)
            if index + 1 < len(job.documents):
                self._save(job)
        self._set(job, J.COMPLETED, [J.JOB_COMPLETED_SUCCESSFULLY])
        self.finish(job)

    async def _prepare(self, job: Job) -> list[Document]:
        """Extract the documents and convert what the printer does not take."""
        docs_dir = self.spool.docs_dir(job.job_id)
        shutil.rmtree(docs_dir, ignore_errors=True)
        docs_dir.mkdir()
        try:
            extracted = await self.blocking(self.tools.extract, self.spool.message_path(job.job_id), docs_dir)
        except self.tools.unprintable as e:
            raise Unprintable(e.reason, e.ipp_reason) from None
        if not extracted:
            raise Unprintable("there is nothing printable in the message", J.UNSUPPORTED_DOCUMENT_FORMAT)
        documents = []
        paths = []
        for i, doc in enumerate(extracted):
            name = doc.filename or doc.content_type
            try:
                target = self.tools.needs_conversion(doc.format, self.printer.formats)
            except self.tools.unprintable as e:
                raise Unprintable(f"{name}: {e.reason}", e.ipp_reason) from None
            path, fmt = Path(doc.path), doc.format
            if target is not None:
                dst = docs_dir / f"converted-{i:02d}.{EXTENSIONS.get(target, 'bin')}"
                log.info("printer {printer} job {job}: converting {name} from {f} to {t}",
                         printer=self.printer.name, job=job.job_id, name=name, f=fmt, t=target)
                try:
                    await self.tools.convert(self.reactor, path, dst, fmt, target)
                except self.tools.unprintable as e:
                    raise Unprintable(f"{name}: {e.reason}", e.ipp_reason) from None
                path, fmt = dst, target
            paths.append(path)
            documents.append(Document(file=str(path.relative_to(self.spool.job_dir(job.job_id))), format=fmt,
                                      content_type=doc.content_type, filename=doc.filename,
                                      size=path.stat().st_size))
        # Not fsync'd: derived data, extracted again after a crash (see
        # Intake.recover), so the state never points at a lost document.
        return documents

    def _output_job(self, job: Job, document: Document, index: int):
        from phaserlink.printer.output import OutputJob

        suffix = f"-{index + 1}" if job.documents and len(job.documents) > 1 else ""
        return OutputJob(
            path=self.spool.job_dir(job.job_id) / document.file,
            job_id=f"{job.job_id}{suffix}",
            title=job.title or document.filename or "mail print job",
            user=_lpd_user(job.sender),
            host=self.hostname,
            copies=max(1, min(job.copies, self.printer.copies_max)),
            format=MIME_TYPES.get(document.format, "application/octet-stream"),
        )

    # -- state changes ------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        job.changed = self.reactor.seconds()
        self.spool.save(job)

    def _set(self, job: Job, state: str, reasons: list[str]) -> None:
        job.state, job.reasons = state, reasons
        self._save(job)
        log.info("printer {printer} job {job}: {state} ({reasons})", printer=self.printer.name,
                 job=job.job_id, state=state, reasons=", ".join(reasons))

    def abort(self, job: Job, reasons: list[str], why: str) -> None:
        job.detail = why
        if J.ABORTED_BY_SYSTEM not in reasons and reasons[:1] != [J.DOCUMENT_FORMAT_ERROR]:
            reasons = reasons + [J.ABORTED_BY_SYSTEM]
        self._set(job, J.ABORTED, reasons)
        log.warn("printer {printer} job {job}: aborted: {why}", printer=self.printer.name, job=job.job_id, why=why)
        self.finish(job)

    def finish(self, job: Job) -> defer.Deferred:
        """A terminal job: tell the sender, remember it, forget its files
        (the "done" record and the removal are one spool call)."""
        if self.spool.finished(job.job_id):
            return self.spool.remove(job.job_id)  # mail went out before a crash
        if job.state == J.COMPLETED:
            pages = f" ({job.pages} page{'s' if job.pages != 1 else ''})" if job.pages is not None else ""
            text = (f"Your print job {_quoted(job.title)} was delivered to printer {self.printer.name}{pages}.\n"
                    f"The printer side reported: {job.acknowledged or 'done'}.")
            self.status.notify(job, PRINTED, text)
        elif J.SENDER_NOT_ALLOWED not in job.reasons:
            text = (f"Your print job {_quoted(job.title)} for printer {self.printer.name} "
                    f"was not printed.\nReason: {job.detail or 'unknown'}.")
            self.status.notify(job, ERRORS, text)
        return self.spool.remove(job.job_id, seen=[journal.done(job, self.reactor.seconds())])

    # -- a printer that is down ---------------------------------------------------------

    def _hold(self, job: Job, reason: str) -> None:
        now = self.reactor.seconds()
        job.attempts += 1
        job.detail = reason
        self._set(job, J.PENDING_HELD, [J.PRINTER_STOPPED])
        log.warn("printer {printer} job {job}: printer unavailable ({why}); attempt {n}",
                 printer=self.printer.name, job=job.job_id, why=reason, n=job.attempts)
        if not self._age_out(job, now):
            self.queue.appendleft(job.job_id)
        for other_id in list(self.queue):
            if other_id == job.job_id:
                continue
            try:
                other = self.spool.load(other_id)
            except OSError:
                continue
            other.detail = reason
            if self._age_out(other, now):
                self.queue.remove(other_id)
        wait = backoff(job.attempts)
        for other_id in self.queue:
            deadline = self._next_deadline(other_id, now)
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.0))
        self._schedule_retry(wait)

    def _age_out(self, job: Job, now: float) -> bool:
        """Send the delayed notice or give up, by the job's age; True if aborted."""
        age = now - job.created
        if age >= self.printer.max_retry_time:
            self._give_up(job)
            return True
        if age >= self.printer.delay_notice and not job.delayed_notified:
            job.delayed_notified = True
            self._save(job)
            until = human_duration(self.printer.max_retry_time - age)
            self.status.notify(job, DELAYED, (
                f"Your print job {_quoted(job.title)} has not been printed yet: printer "
                f"{self.printer.name} has not been reachable ({job.detail}).\n"
                f"It was received {human_duration(age)} ago. PhaserLink keeps trying for "
                f"{until} more; you will get another message if it gives up."))
        return False

    def _give_up(self, job: Job) -> None:
        age = self.reactor.seconds() - job.created
        self.abort(job, [J.ABORTED_BY_SYSTEM, J.PRINTER_STOPPED],
                   f"printer {self.printer.name} could not be reached for {human_duration(age)} "
                   f"({job.detail or 'no answer'})")

    def _next_deadline(self, job_id: str, now: float) -> float | None:
        try:
            job = self.spool.load(job_id)
        except OSError:
            return None
        if not job.delayed_notified:
            return job.created + self.printer.delay_notice
        return job.created + self.printer.max_retry_time

    def _schedule_retry(self, wait: float) -> None:
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        log.info("printer {printer}: next attempt in {wait:.1f}s", printer=self.printer.name, wait=wait)
        self.retry_call = self.reactor.callLater(wait, self._retry)

    def _retry(self) -> None:
        self.retry_call = None
        self._next()

    def retry_now(self) -> None:
        """Try a held printer again at once (e.g. an operator says it is back)."""
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        self.retry_call = None
        self._next()


def _quoted(title: str) -> str:
    return f'"{title}"' if title else "(untitled)"

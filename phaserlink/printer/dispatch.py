"""Sending one printer's jobs, one at a time, and finishing them.

A job goes pending -> processing -> completed, or -> aborted when it cannot
be printed, or pending-held while it cannot be printed *now*.  Each change
is in ``state.json`` before it is acted on: the documents are extracted
(and converted) and recorded together with ``processing`` before the first
byte goes to the printer; ``completed`` is recorded before the status mail
is queued and the job leaves the spool.

Every failure is classified once, by :func:`phaserlink.printer.faults.classify`
in :meth:`Dispatcher._run` (docs/faults.md): a fault in the document aborts
the job (document-format-error, the converter's words in the mail); a
permanent refusal aborts it (aborted-by-system); a temporary fault never
does before ``max_retry_time``.  A temporary fault that every job would meet
(the printer is down, the disk is full, the converter cannot start) holds
the queue: its head is retried with exponential back-off on reactor timers,
in order; other printers have their own dispatcher and keep printing.  A
temporary fault of one job alone (its conversion killed or timed out, a bug
it triggers) sets that job aside with its own back-off, and the printer goes
on with the next one: one crashing job never wedges its printer.

Jobs older than ``delay_notice`` get one "delayed" mail; jobs older than
``max_retry_time`` are aborted with a mail that says why.  Ages count from
the moment a job was spooled, so jobs waiting behind a dead printer are
told and given up on just as the one being retried.
"""

from __future__ import annotations

import re
import shutil
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import PrinterConfig
from phaserlink.message import formats as _formats
from phaserlink.message.job_options import JobOptions, apply_policy, format_pages
from phaserlink.printer import jobs as J
from phaserlink.printer import journal
from phaserlink.printer.faults import DocumentFault, Fault, PermanentFault, TemporaryFault, classify
from phaserlink.printer.jobs import Document, Job
from phaserlink.printer.local_source import run_inline
from phaserlink.printer.output.interfaces import IDescribingOutput, IExactlyOnceOutput, IPageSelecting
from phaserlink.printer.spool import JobSpool
from phaserlink.printer.status import DELAYED, ERRORS, PRINTED, StatusMailer
from phaserlink.printer.target import PrintTarget, print_target
from phaserlink.printer.toolkit import Toolkit

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    RETRY_INITIAL,
    RETRY_FACTOR,
    RETRY_MAX,
    DISPATCH_STOP_GRACE as STOP_GRACE,
)

MIME_TYPES = dict(_formats.CONTENT_TYPES)
EXTENSIONS = dict(_formats.EXTENSIONS)


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


class JobQueue:
    """The waiting job ids of one printer, in order, with O(1) membership.

    ``job_id in deque`` walks the deque: submitting each of 10,000 jobs
    recovered for one printer cost O(n) per job at start (bench/scale.py)."""

    def __init__(self) -> None:
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def append(self, job_id: str) -> None:
        self._order.append(job_id)
        self._members.add(job_id)

    def appendleft(self, job_id: str) -> None:
        self._order.appendleft(job_id)
        self._members.add(job_id)

    def popleft(self) -> str:
        job_id = self._order.popleft()
        self._members.discard(job_id)
        return job_id

    def remove(self, job_id: str) -> None:
        self._order.remove(job_id)
        self._members.discard(job_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._members

    def __iter__(self):
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, index: int) -> str:
        return self._order[index]


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
        self.queue = JobQueue()
        #: (created, delayed_notified) of each queued job: what the back-off
        #: needs to know of the jobs behind a held head, so that a retry
        #: reads no state file of a job whose deadline has not come
        #: (bench/scale.py: it read every queued job twice per retry).
        self.ages: dict[str, tuple[float, bool]] = {}
        #: The record submitted with a job that runs at once (an idle
        #: printer), as its caller just wrote it: its run need not read
        #: state.json back (an open and a JSON parse in the reactor per
        #: job, bench/scale.py).  A job that waits in the queue is read from
        #: the disk when its turn comes, which stays the truth.
        self.handed: dict[str, Job] = {}
        self.current: str | None = None
        self.sending: defer.Deferred | None = None
        self.retry_call = None
        self.running = False
        self.idle: defer.Deferred | None = None
        #: An operator paused this printer (printer/operations.py).
        self.paused = False
        #: Jobs an operator cancels while they are worked on: fired when let go.
        self.cutting: dict[str, defer.Deferred] = {}
        #: Jobs set aside after a job-scoped fault, each with its own timer.
        self.aside: dict[str, object] = {}
        #: Crashes in a row of a job whose fault could not even be recorded.
        self.crashes: dict[str, int] = {}
        #: The newest record of a job whose save failed: it, not the older
        #: state on disk, is what the next attempt resumes from (a document
        #: the printer acknowledged is never sent again by this process).
        self.unsaved: dict[str, Job] = {}

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._next()

    def stop(self) -> defer.Deferred:
        self.running = False
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        self.retry_call = None
        for call in self.aside.values():
            if call.active():  # type: ignore[attr-defined]
                call.cancel()  # type: ignore[attr-defined]
        self.aside.clear()
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
            d = defer.ensureDeferred(self.finish(job))
            d.addErrback(lambda f: log.failure("printer {printer} job {job}: finishing failed", f,
                                               printer=self.printer.name, job=job.job_id))
            return
        if operator_held(job):
            return
        self._note_age(job)
        if self.running and not self.paused and self.current is None and self.retry_call is None \
                and not self.queue and job.job_id not in self.aside:
            self.handed[job.job_id] = job  # _next below runs it now
        if job.job_id != self.current and job.job_id not in self.queue and job.job_id not in self.aside:
            self.queue.append(job.job_id)
        self._next()

    def _note_age(self, job: Job) -> None:
        self.ages[job.job_id] = (job.created, job.delayed_notified)

    def _deadline(self, job_id: str) -> float | None:
        """When the queued *job_id* next needs a look (its delayed notice,
        or giving up), from memory; None if not known here."""
        age = self.ages.get(job_id)
        if age is None:
            return None
        created, notified = age
        if notified:
            return created + self.printer.max_retry_time
        return created + min(self.printer.delay_notice, self.printer.max_retry_time)

    def _next(self) -> None:
        if not self.running or self.paused or self.current is not None or self.retry_call is not None:
            return
        if not self.queue:
            return
        job_id = self.queue.popleft()
        self.current = job_id
        d = defer.ensureDeferred(self._run(job_id))
        d.addErrback(self._crashed, job_id)
        d.addBoth(self._done)

    def _done(self, _result) -> None:
        cut = self.cutting.pop(self.current, None) if self.current is not None else None
        self.current = None
        self.sending = None
        if cut is not None:
            cut.callback(None)
        if not self.running:
            if self.idle is not None:
                idle, self.idle = self.idle, None
                idle.callback(None)
            return
        self._next()

    def _crashed(self, failure, job_id: str) -> None:
        """Even handling the job's fault failed (a bug, or the spool cannot
        be written): set the job aside, in memory only, with back-off, and
        let the printer go on with the next job.  Never put it back at the
        head of the queue: one crashing job must not wedge its printer."""
        log.failure("printer {printer} job {job}: unexpected error", failure,
                    printer=self.printer.name, job=job_id)
        if not self.running or job_id in self.queue or job_id in self.aside:
            return
        count = self.crashes[job_id] = self.crashes.get(job_id, 0) + 1
        self._put_aside(job_id, backoff(count))

    # -- one job ------------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = self.unsaved.pop(job_id, None)
        handed = self.handed.pop(job_id, None)
        if job is None:
            job = handed
        if job is None:
            try:
                job = await defer.maybeDeferred(self.spool.load, job_id)
            except FileNotFoundError:
                log.info("printer {printer} job {job}: gone from the spool; nothing to do",
                         printer=self.printer.name, job=job_id)
                self.crashes.pop(job_id, None)
                return
            except (ValueError, TypeError) as e:
                # As at start (JobSpool.recover): never guess about a job
                # whose record cannot be read; leave it for a human.
                log.error("printer {printer}: cannot read job {job}: {e}; left in {dir}",
                          printer=self.printer.name, job=job_id, e=e, dir=str(self.spool.job_dir(job_id)))
                return
        if job.terminal:
            await self.finish(job)
            return
        if operator_held(job):
            self.ages.pop(job_id, None)
            return
        self._note_age(job)
        try:
            await self._print(job)
        except defer.CancelledError:
            if job.job_id in self.cutting:
                return  # an operator canceled it: printer/operations.py records that
            log.info("printer {printer} job {job}: send cut short by shutdown; resumes at restart",
                     printer=self.printer.name, job=job.job_id)
            return
        except Exception as e:
            if job.terminal:
                # Printed (or decided) already; only finishing it failed (the
                # journal, the spool).  Never hold or resend it: finish it
                # again later, from this record.
                log.failure("printer {printer} job {job}: finishing failed; will finish it again",
                            printer=self.printer.name, job=job.job_id)
                self.unsaved[job.job_id] = job
                count = self.crashes[job_id] = self.crashes.get(job_id, 0) + 1
                self._put_aside(job_id, backoff(count))
                return
            fault = classify(e, self.tools.unprintable)
            if isinstance(fault, TemporaryFault) and fault.internal:
                log.failure("printer {printer} job {job}: unexpected error", printer=self.printer.name,
                            job=job.job_id)
            await self._fault(job, fault)
            return
        self.crashes.pop(job_id, None)

    async def _print(self, job: Job) -> None:
        """Prepare *job* if it is not yet, send each document not yet
        acknowledged, finish it.  Any failure propagates, to be classified
        once by :func:`classify` in :meth:`_run`."""
        if job.documents is None or await self._takes_no_more(job):
            job.documents = await self._prepare(job)
        if job.job_id in self.cutting:
            raise defer.CancelledError()  # an operator cancels it: send nothing
        await self._set(job, J.PROCESSING, [J.JOB_PRINTING], quiet=True)
        delivered = ""
        for index in range(job.printed_documents, len(job.documents)):
            if job.job_id in self.cutting:
                raise defer.CancelledError()  # canceled between documents: send no more
            document = job.documents[index]
            out_job = self._output_job(job, document, index)
            if IExactlyOnceOutput.providedBy(self.output):
                # IPP: the printer's job id is in the spool before a byte is
                # sent, and asked about first after a crash (docs/ipp.md).
                self.sending = defer.maybeDeferred(
                    self.output.send, out_job, record=lambda token, job=job: defer.ensureDeferred(
                        self._record_printer_job(job, token)), previous=job.printer_job)
            else:
                self.sending = defer.maybeDeferred(self.output.send, out_job)
            try:
                result = await self.sending
            finally:
                self.sending = None
            job.printed_documents = index + 1
            job.printer_job = None
            _note(job, *result.notes)
            if result.pages is not None:  # the printer's own count replaces ours
                job.pages = (job.pages or 0) - (document.pages or 0) + result.pages
            job.acknowledged = result.acknowledged
            job.attempts = 0
            delivered = (f"document {index + 1}/{len(job.documents)} delivered: {result.acknowledged}"
                         + (f" ({result.detail})" if result.detail else ""))
            if index + 1 < len(job.documents):
                log.info("printer {printer} job {job}: {delivered}", printer=self.printer.name, job=job.job_id,
                         delivered=delivered)
                await self._save(job)
        # One line for a printed job, not three (processing, delivered,
        # completed): at site scale the log lines were 15% of the reactor's
        # time (bench/scale.py).
        await self._set(job, J.COMPLETED, [J.JOB_COMPLETED_SUCCESSFULLY], quiet=True)
        log.info("printer {printer} job {job}: {state} ({reasons}); {delivered}", printer=self.printer.name,
                 job=job.job_id, state=J.COMPLETED, reasons=J.JOB_COMPLETED_SUCCESSFULLY,
                 delivered=delivered or "nothing to send")
        await self.finish(job)

    async def _record_printer_job(self, job: Job, token: str) -> None:
        """The output's exactly-once hook: the printer's id for the document
        being sent, durable before the document goes."""
        job.printer_job = token
        await self._save(job)

    async def _fault(self, job: Job, fault: Fault) -> None:
        """Act on a classified fault: hold, set aside, or abort."""
        if isinstance(fault, TemporaryFault):
            if fault.holds_queue:
                await self._hold(job, fault.reason, fault.ipp_reason)
            else:
                await self._set_aside(job, fault)
            return
        reasons = fault.reasons if isinstance(fault, (DocumentFault, PermanentFault)) else [J.ABORTED_BY_SYSTEM]
        details = getattr(fault, "details", "")
        if details:
            log.info("printer {printer} job {job}: converter said: {details}", printer=self.printer.name,
                     job=job.job_id, details=details)
        await self.abort(job, reasons, fault.reason)

    async def _prepare(self, job: Job) -> list[Document]:
        """Extract the documents and convert what the printer does not take.

        Raises whatever the tools raise; :meth:`_run` classifies it."""
        target = await self._target(job)  # first: a printer that is down costs no extraction
        docs_dir = self.spool.docs_dir(job.job_id)
        shutil.rmtree(docs_dir, ignore_errors=True)
        docs_dir.mkdir()
        extracted = await self.blocking(self.tools.extract, self.spool.message_path(job.job_id), docs_dir)
        if not extracted:
            raise DocumentFault("there is nothing printable in the message", J.UNSUPPORTED_DOCUMENT_FORMAT)
        options, notes = self.options(job)
        _note(job, *notes)
        printer_selects = bool(options.pages) and await self._printer_selects_pages()
        documents = []
        for i, group in enumerate(_picture_runs(extracted, target.formats)):
            doc = group[0]
            name = doc.filename or doc.content_type
            if len(group) > 1:
                name = f"{len(group)} pictures ({name}, ...)"
            try:
                to_format = self.tools.needs_conversion(doc.format, target.formats)
            except self.tools.unprintable as e:
                raise DocumentFault(f"{name}: {e.reason}", e.ipp_reason) from None
            path, fmt = Path(doc.path), doc.format
            select = bool(options.pages) and not printer_selects
            pages_by = ("printer" if printer_selects else "none") if options.pages else None
            sources = [Path(d.path) for d in group] if len(group) > 1 else path
            if select and to_format == "postscript" and not _selectable(fmt) and fmt != "text":
                # Pictures (an Office file, HTML) for a PostScript printer: made
                # a PDF first, so that their pages are chosen in the PDF (below).
                pdf = docs_dir / f"converted-{i:02d}.pdf"
                await self._convert(name, sources, pdf, fmt, "pdf", target)
                path, fmt = pdf, "pdf"
                sources = path
            if select and to_format is not None and _selectable(fmt) and (
                    not _selectable(to_format) or fmt == "pdf"):
                # A PDF or PostScript document for a raster printer: its pages
                # are chosen before it becomes raster (Ghostscript cannot after).
                # A PDF for a PostScript printer too: pdfwrite keeps its JPEGs,
                # ps2write on pdftops' PostScript would decode them (docs/convert.md).
                counted = await self._count_pages(path, fmt, interpret=True)
                path, _counted, pages_by = await self._select_pages(job, name, path, fmt, counted, options, i)
                sources, select = path, False
            if to_format is not None:
                dst = docs_dir / f"converted-{i:02d}.{EXTENSIONS.get(to_format, 'bin')}"
                log.info("printer {printer} job {job}: converting {name} from {f} to {t}",
                         printer=self.printer.name, job=job.job_id, name=name, f=fmt, t=to_format)
                await self._convert(name, sources, dst, fmt, to_format, target)
                path, fmt = dst, to_format
            # PostScript without a %%Pages: comment is counted by running it
            # only where a page cap (or choosing pages) needs the count: that
            # costs a Ghostscript start per job (docs/convert.md).
            pages = await self._count_pages(path, fmt, interpret=self.printer.max_pages_per_job is not None or select)
            if select:
                path, pages, pages_by = await self._select_pages(job, name, path, fmt, pages, options, i)
            documents.append(Document(file=str(path.relative_to(self.spool.job_dir(job.job_id))), format=fmt,
                                      content_type=doc.content_type, filename=doc.filename,
                                      size=path.stat().st_size, pages=pages, pages_by=pages_by))
        counts = [d.pages for d in documents]
        job.pages = sum(counts) if counts and None not in counts else None  # type: ignore[arg-type]
        await self._check_pages(job, documents)
        # Not fsync'd: derived data, extracted again after a crash (see
        # Intake.recover), so the state never points at a lost document.
        return documents

    async def _convert(self, name: str, sources, dst: Path, fmt: str, to_format: str, target) -> None:
        """One conversion for :meth:`_prepare`; a document's fault names the document."""
        try:
            await self.tools.convert(self.reactor, sources, dst, fmt, to_format,
                                     media=target.media, raster=target.raster(to_format))
        except Exception as e:
            fault = classify(e, self.tools.unprintable)
            if isinstance(fault, DocumentFault):
                raise DocumentFault(f"{name}: {fault.reason}", fault.ipp_reason,
                                    getattr(fault, "details", "")) from None
            raise

    # -- job options (docs/options.md) ------------------------------------------------

    def options(self, job: Job) -> tuple[JobOptions, list[str]]:
        """The options this printer applies to *job*: the sender's (header,
        or Subject, read at intake), less what ``options_allowed`` forbids,
        with ``options_default`` where the sender said nothing; and the
        sentences for the status mail about what was not applied."""
        asked = JobOptions.parse(job.options)
        notes = [f"option {item!r} not understood; ignored" for item in asked.ignored]
        asked = replace(asked, ignored=(), copies=job.copies if job.copies > 1 else None)
        options, refused = apply_policy(asked, self.printer.options_allowed, self.printer.options_default)
        if options.copies and options.copies > self.printer.copies_max:
            options = replace(options, copies=self.printer.copies_max)
        return options, notes + refused

    async def _count_pages(self, path: Path, fmt: str, *, interpret: bool) -> int | None:
        if self.tools.count_pages is None:
            return None
        return await self.tools.count_pages(self.reactor, path, fmt, interpret=interpret)

    async def _printer_selects_pages(self) -> bool:
        if not IPageSelecting.providedBy(self.output):
            return False
        return bool(await defer.maybeDeferred(self.output.selects_pages))

    async def _select_pages(self, job: Job, name: str, path: Path, fmt: str, pages: int | None,
                            options: JobOptions, index: int) -> tuple[Path, int | None, str]:
        """pages= for a printer that cannot select pages: Ghostscript keeps
        only those pages of a PDF or PostScript document (ranges past its
        end are cut to it: a range that selects nothing is the sender's
        mistake, said in the status mail); other formats are printed whole
        and the status mail says so.  -> (path, pages, how)."""
        wanted = options.describe("pages")
        if not _selectable(fmt) or self.tools.select_pages is None:
            _note(job, f"{wanted} not applied to {name}: pages of {fmt} cannot be selected; all pages printed")
            return path, pages, "none"
        ranges = options.pages
        if pages is not None:
            ranges = tuple((a, min(b, pages)) for a, b in ranges if a <= pages)
            if not ranges:
                raise DocumentFault(f"{name} has {pages} page{'s' if pages != 1 else ''}; {wanted} selects none of them",
                                    J.ABORTED_BY_SYSTEM)
        dst = path.with_name(f"pages-{index:02d}.{EXTENSIONS.get(fmt, 'bin')}")
        log.info("printer {printer} job {job}: keeping pages {pages} of {name}", printer=self.printer.name,
                 job=job.job_id, pages=format_pages(ranges), name=name)
        try:
            await self.tools.select_pages(self.reactor, path, dst, fmt, format_pages(ranges))
        except Exception as e:
            fault = classify(e, self.tools.unprintable)
            if isinstance(fault, DocumentFault):
                raise DocumentFault(f"{name}: {fault.reason}", fault.ipp_reason,
                                    getattr(fault, "details", "")) from None
            raise
        if pages is not None:
            pages = sum(b - a + 1 for a, b in ranges)  # ranges may overlap: what Ghostscript prints
        return dst, pages, "ghostscript"

    async def _takes_no_more(self, job: Job) -> bool:
        """A job prepared at an earlier attempt, for a printer that says what
        it takes (IPP): is it still what the printer takes?  A printer that
        was reconfigured while the job waited gets the job converted again,
        provided none of it reached the printer yet."""
        if not IDescribingOutput.providedBy(self.output) or job.printed_documents or job.printer_job:
            return False
        formats = (await self._target(job)).formats
        stale = [d.format for d in job.documents or () if d.format not in formats]
        if stale:
            log.info("printer {printer} job {job}: the printer no longer takes {stale}; converting again",
                     printer=self.printer.name, job=job.job_id, stale=", ".join(dict.fromkeys(stale)))
        return bool(stale)

    async def _target(self, job: Job) -> PrintTarget:
        """What this job's documents are made into (phaserlink/printer/target.py).
        A printer that says what it takes (IPP) is asked now, at each
        attempt: it fails as a send would (down: the job is held)."""
        status = None
        if IDescribingOutput.providedBy(self.output):
            status = await self.output.probe()
        target = print_target(self.printer, status, JobOptions.parse(job.options), getattr(self.output, "uri", ""))
        if status is not None:
            log.info("printer {printer} job {job}: the printer takes {formats}; pictures on {media}",
                     printer=self.printer.name, job=job.job_id, formats=", ".join(target.formats),
                     media=target.media)
        return target

    async def _check_pages(self, job: Job, documents: list[Document]) -> None:
        """``max_pages_per_job`` (docs/trust.md): PDF and PostScript pages
        counted with Ghostscript before anything is sent; over the cap the
        job is aborted and its status mail says the count and the cap."""
        cap = getattr(self.printer, "max_pages_per_job", None)
        if cap is None:
            return
        from phaserlink.printer.convert import count_pages_blocking  # the one page counter

        root = self.spool.job_dir(job.job_id)
        total = 0
        for document in documents:
            pages = document.pages
            if pages is None:  # not counted while preparing (a fake toolkit, an odd format)
                pages = await self.blocking(count_pages_blocking, root / document.file, document.format)
            total += (pages or 0) * (self.options(job)[0].copies or 1)
        if total > cap:
            n = self.options(job)[0].copies or 1
            copies = f" ({n} copies)" if n > 1 else ""
            raise DocumentFault(f"the job has {total} pages{copies}; printer {self.printer.name} prints at most "
                                f"{cap} pages per job", J.ABORTED_BY_SYSTEM)

    def _output_job(self, job: Job, document: Document, index: int):
        from phaserlink.printer.output import OutputJob

        suffix = f"-{index + 1}" if job.documents and len(job.documents) > 1 else ""
        options, _notes = self.options(job)
        if document.pages_by in ("ghostscript", "none"):
            options = options.without("pages")  # chosen already, or cannot be (said in the mail)
        return OutputJob(
            path=self.spool.job_dir(job.job_id) / document.file,
            job_id=f"{job.job_id}{suffix}",
            title=job.title or document.filename or "mail print job",
            user=_lpd_user(job.sender),
            host=self.hostname,
            copies=max(1, min(options.copies or 1, self.printer.copies_max)),
            format=MIME_TYPES.get(document.format, "application/octet-stream"),
            options=options.without("copies").header_value(),
        )

    # -- state changes ------------------------------------------------------------------

    async def _save(self, job: Job) -> None:
        """Record *job*; returns once the spool says it is durable (the
        spool's save may return a Deferred or nothing)."""
        job.changed = self.reactor.seconds()
        try:
            await defer.maybeDeferred(self.spool.save, job)
        except BaseException:
            self.unsaved[job.job_id] = job
            raise
        self.unsaved.pop(job.job_id, None)

    async def _set(self, job: Job, state: str, reasons: list[str], quiet: bool = False) -> None:
        """Record the change; log it unless *quiet* (the caller says it in its own line)."""
        job.state, job.reasons = state, reasons
        await self._save(job)
        if quiet:
            return
        log.info("printer {printer} job {job}: {state} ({reasons})", printer=self.printer.name,
                 job=job.job_id, state=state, reasons=", ".join(reasons))

    async def abort(self, job: Job, reasons: list[str], why: str) -> None:
        job.detail = why
        if J.ABORTED_BY_SYSTEM not in reasons and reasons[:1] != [J.DOCUMENT_FORMAT_ERROR]:
            reasons = reasons + [J.ABORTED_BY_SYSTEM]
        await self._set(job, J.ABORTED, reasons)
        log.warn("printer {printer} job {job}: aborted: {why}", printer=self.printer.name, job=job.job_id, why=why)
        await self.finish(job)

    async def finish(self, job: Job) -> None:
        """A terminal job: tell the sender, remember it, forget its files
        (the "done" record and the removal are one spool call)."""
        self.ages.pop(job.job_id, None)
        if self.spool.finished_before(job.job_id):
            await defer.maybeDeferred(self.spool.remove, job.job_id, done=True)  # mail went out before a crash
            return
        if job.state == J.COMPLETED:
            pages = f" ({job.pages} page{'s' if job.pages != 1 else ''})" if job.pages is not None else ""
            text = (f"Your print job {_quoted(job.title)} was delivered to printer {self.printer.name}{pages}.\n"
                    f"The printer side reported: {job.acknowledged or 'done'}.")
            if job.option_notes:
                text += "\n\nNot printed as asked:\n" + "".join(f"- {note}\n" for note in job.option_notes)
            self.status.notify(job, PRINTED, text)
        elif not (J.SENDER_NOT_ALLOWED in job.reasons and job.state == J.ABORTED) and not (
                job.state == J.CANCELED and J.JOB_HOLD_UNTIL_SPECIFIED in job.reasons):  # canceled by an operator: told
            # (a held job its sender never released: no mail, docs/trust.md)
            text = (f"Your print job {_quoted(job.title)} for printer {self.printer.name} "
                    f"was not printed.\nReason: {job.detail or 'unknown'}.")
            self.status.notify(job, ERRORS, text)
        await defer.maybeDeferred(self.spool.remove, job.job_id, seen=[journal.done(job, self.reactor.seconds())],
                                  done=True)

    # -- a printer that is down, a server that cannot print now ------------------------

    async def _hold(self, job: Job, reason: str, ipp_reason: str = J.PRINTER_STOPPED) -> None:
        """A fault every job behind this one would meet too (the printer is
        down, the disk is full): the queue waits, in order, and its head is
        tried again with back-off."""
        now = self.reactor.seconds()
        job.attempts += 1
        job.detail = reason
        await self._set(job, J.PENDING_HELD, [ipp_reason])
        log.warn("printer {printer} job {job}: cannot print now ({why}); attempt {n}",
                 printer=self.printer.name, job=job.job_id, why=reason, n=job.attempts)
        if not await self._age_out(job, now):
            self.queue.appendleft(job.job_id)
        for other_id in list(self.queue):
            if other_id == job.job_id:
                continue
            deadline = self._deadline(other_id)
            if deadline is not None and deadline > now:
                continue  # neither its notice nor its end has come: nothing to read
            try:
                other = await defer.maybeDeferred(self.spool.load, other_id)
            except OSError:
                continue
            self._note_age(other)
            other.detail = reason
            if await self._age_out(other, now, ipp_reason):
                if other_id in self.queue:
                    self.queue.remove(other_id)
        wait = backoff(job.attempts)
        for other_id in list(self.queue):
            deadline = await self._next_deadline(other_id, now)
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.0))
        self._schedule_retry(wait)

    async def _set_aside(self, job: Job, fault: TemporaryFault) -> None:
        """A fault of this job alone (its conversion was killed or timed
        out, it crashes our code): hold it with its own back-off and let the
        printer go on with the next job."""
        now = self.reactor.seconds()
        job.attempts += 1
        job.detail = fault.reason
        await self._set(job, J.PENDING_HELD, [fault.ipp_reason])
        log.warn("printer {printer} job {job}: set aside ({why}); attempt {n}",
                 printer=self.printer.name, job=job.job_id, why=fault.reason, n=job.attempts)
        if await self._age_out(job, now):
            return
        wait = backoff(job.attempts)
        deadline = await self._next_deadline(job.job_id, now)
        if deadline is not None:
            wait = min(wait, max(deadline - now, 0.0))
        self._put_aside(job.job_id, wait)

    def _put_aside(self, job_id: str, wait: float) -> None:
        old = self.aside.pop(job_id, None)
        if old is not None and old.active():  # type: ignore[attr-defined]
            old.cancel()  # type: ignore[attr-defined]
        log.info("printer {printer} job {job}: next attempt in {wait:.1f}s", printer=self.printer.name,
                 job=job_id, wait=wait)
        self.aside[job_id] = self.reactor.callLater(wait, self._back_from_aside, job_id)

    def _back_from_aside(self, job_id: str) -> None:
        self.aside.pop(job_id, None)
        if job_id != self.current and job_id not in self.queue:
            self.queue.appendleft(job_id)
        self._next()

    async def _age_out(self, job: Job, now: float, ipp_reason: str | None = None) -> bool:
        """Send the delayed notice or give up, by the job's age; True if aborted."""
        age = now - job.created
        printer_down = (ipp_reason or (job.reasons[0] if job.reasons else J.PRINTER_STOPPED)) == J.PRINTER_STOPPED
        if age >= self.printer.max_retry_time:
            await self._give_up(job, printer_down)
            return True
        if age >= self.printer.delay_notice and not job.delayed_notified:
            job.delayed_notified = True
            await self._save(job)
            if job.job_id in self.ages:
                self._note_age(job)
            until = human_duration(self.printer.max_retry_time - age)
            if printer_down:
                why = f"printer {self.printer.name} has not been reachable ({job.detail})"
            else:
                why = f"PhaserLink cannot print it at the moment: {job.detail}"
            self.status.notify(job, DELAYED, (
                f"Your print job {_quoted(job.title)} has not been printed yet: {why}.\n"
                f"It was received {human_duration(age)} ago. PhaserLink keeps trying for "
                f"{until} more; you will get another message if it gives up."))
        return False

    async def _give_up(self, job: Job, printer_down: bool = True) -> None:
        age = self.reactor.seconds() - job.created
        if printer_down:
            await self.abort(job, [J.ABORTED_BY_SYSTEM, J.PRINTER_STOPPED],
                             f"printer {self.printer.name} could not be reached for {human_duration(age)} "
                             f"({job.detail or 'no answer'})")
            return
        await self.abort(job, [J.ABORTED_BY_SYSTEM],
                         f"PhaserLink tried for {human_duration(age)} and gave up: {job.detail or 'unknown error'}")

    async def _next_deadline(self, job_id: str, now: float) -> float | None:
        deadline = self._deadline(job_id)
        if deadline is not None:
            return deadline
        try:
            job = await defer.maybeDeferred(self.spool.load, job_id)
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

    # -- what an operator does (printer/operations.py) -----------------------------------

    def cut(self, job_id: str) -> defer.Deferred:
        """Stop working on *job_id*: a send under way is cancelled (the
        output aborts its connection); fires once the job is let go."""
        if self.current != job_id:
            return defer.succeed(None)
        waiter = self.cutting.setdefault(job_id, defer.Deferred())
        if self.sending is not None:
            self.sending.cancel()
        return waiter

    def forget(self, job_id: str) -> None:
        """Take *job_id* out of the queue and from aside (canceled or held)."""
        if job_id in self.queue:
            self.queue.remove(job_id)
        self.ages.pop(job_id, None)
        self.handed.pop(job_id, None)
        call = self.aside.pop(job_id, None)
        if call is not None and call.active():  # type: ignore[attr-defined]
            call.cancel()  # type: ignore[attr-defined]

    def retry_job(self, job: Job) -> None:
        """Try *job* (waiting for its printer, or set aside) first, now."""
        self.forget(job.job_id)
        self._note_age(job)
        self.queue.appendleft(job.job_id)
        self.retry_now()

    def retry_now(self) -> None:
        """Try a held printer, and the jobs set aside, again at once (e.g.
        an operator says it is back)."""
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        self.retry_call = None
        for job_id in list(self.aside):
            call = self.aside.pop(job_id)
            if call.active():  # type: ignore[attr-defined]
                call.cancel()  # type: ignore[attr-defined]
            if job_id not in self.queue:
                self.queue.append(job_id)
        self._next()


def operator_held(job: Job) -> bool:
    """Held by an operator or for its sender's release: not queued until released."""
    from phaserlink.printer.control import JOB_HOLD_UNTIL_SPECIFIED, SENDER_RELEASE

    return job.state == J.PENDING_HELD and bool({JOB_HOLD_UNTIL_SPECIFIED, SENDER_RELEASE} & set(job.reasons))


def _picture_runs(extracted: list, accepted: tuple[str, ...]) -> list[list]:
    """The documents, with pictures next to each other in one group: several
    photos in one mail become one PDF of several pages (docs/convert.md).
    A picture the printer takes as it is goes alone, as it is."""
    def joins(doc) -> bool:
        return doc.format in _formats.IMAGES and doc.format not in accepted

    runs: list[list] = []
    for doc in extracted:
        if runs and joins(doc) and joins(runs[-1][-1]):
            runs[-1].append(doc)
        else:
            runs.append([doc])
    return runs


def _selectable(fmt: str) -> bool:
    """Ghostscript can choose pages of *fmt* (PDF, PostScript)."""
    from phaserlink.printer.convert import PAGE_SELECT_DEVICES

    return fmt in PAGE_SELECT_DEVICES


def _note(job: Job, *notes: str) -> None:
    """Add to what the status mail says was not applied as asked (once each:
    a job prepared again after a crash notes the same things again)."""
    for note in notes:
        if note and note not in job.option_notes:
            job.option_notes.append(note)


def _quoted(title: str) -> str:
    return f'"{title}"' if title else "(untitled)"

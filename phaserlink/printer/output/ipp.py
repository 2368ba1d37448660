"""IPP / IPPS output: ``ipp://host[:631]/path`` and ``ipps://...``.

Unlike LPD or raw 9100, IPP says when a job has really printed, so a job
counts as delivered only when the printer reports it ``completed``; the page
count in the status mail is its ``job-impressions-completed``.  Per send:

1. Get-Printer-Attributes: a printer that is stopped or not accepting jobs
   is PrinterUnavailable (``printer-stopped``: held, retried with the
   spool's back-off).  What it answered (document formats, sides, copies,
   media, ...) is kept as :attr:`IPPOutput.capabilities` for the conversion
   graph and the job options.
2. If the spool recorded a printer job id for this document before (a crash
   or a failure after the job was created), ask the printer about that job
   first: completed -> delivered without sending again; still pending or
   processing with all its data -> wait for it; gone, aborted, canceled or
   never given its data -> send again.
3. Create-Job, then the *record* hook ("write this printer job id to the
   spool, durably"), then Send-Document streaming the file; a printer
   without Create-Job gets Print-Job (and the id is recorded after).
4. Get-Job-Attributes every ``poll_interval`` seconds until the job is
   terminal: ``completed`` -> OutputResult; ``aborted`` / ``canceled`` ->
   PrinterRejected with the printer's job-state-reasons and message.

See docs/ipp.md (the exactly-once argument and the crash table row).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer, error, task
from twisted.logger import Logger
from twisted.web import client as web_client
from zope.interface import implementer

from phaserlink.net import ipp_client as ipp
from phaserlink.net.ipp_client import IPPClient, IPPError, IPPHTTPError, IPPProtocolError, IPPTimeout, JobStatus
from phaserlink.message.job_options import JobOptions
from phaserlink.net.ipp_codec import Attribute, IntRange, Tag, attr

from .interfaces import (  # IExactlyOnceOutput, RecordHook: defined there, importable here too
    IDescribingOutput,
    IExactlyOnceOutput,
    RecordHook,
    REASON_CONNECTING,
    REASON_DOCUMENT_FORMAT,
    REASON_NOT_FOUND,
    REASON_OTHER,
    REASON_STOPPED,
    REASON_TIMED_OUT,
    IPageSelecting,
    IPrinterOutput,
    OutputJob,
    OutputResult,
    PrinterOutputError,
    PrinterRejected,
    PrinterUnavailable,
)

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    IPP_POLL_INTERVAL as POLL_INTERVAL,
    JOB_WAIT_LIMIT,
    MAX_JOB_NAME,
)

#: IPP status codes that mean "the printer is not taking jobs now" (every
#: other server-error is a temporary fault too, but not a stopped printer).
STOPPED_STATUSES = frozenset({ipp.SERVER_ERROR_BUSY, ipp.SERVER_ERROR_NOT_ACCEPTING_JOBS,
                              ipp.SERVER_ERROR_SERVICE_UNAVAILABLE})
#: A job still waiting for its document (our Send-Document never arrived).
INCOMPLETE_JOB_REASONS = frozenset({"job-incoming", "job-data-insufficient"})

log = Logger()

@dataclass(frozen=True)
class _Plan:
    """What will be asked of the printer for one job, and what it cannot do."""

    format: str
    attributes: tuple[Attribute, ...]
    notes: tuple[str, ...]


@implementer(IPrinterOutput, IExactlyOnceOutput, IPageSelecting, IDescribingOutput)
class IPPOutput:
    def __init__(self, uri: str, *, reactor, ca_file: str | None = None, verify: bool = True,
                 timeout: float = ipp.REQUEST_TIMEOUT, connect_timeout: float = ipp.CONNECT_TIMEOUT,
                 poll_interval: float = POLL_INTERVAL, job_wait_limit: float = JOB_WAIT_LIMIT) -> None:
        self.uri = uri
        self.reactor = reactor
        self.client = IPPClient(reactor, uri, ca_file=ca_file, verify=verify, timeout=timeout,
                                connect_timeout=connect_timeout)
        self.poll_interval = poll_interval
        self.job_wait_limit = job_wait_limit
        self.capabilities: ipp.PrinterStatus | None = None

    # -- the output interface -----------------------------------------------------

    def send(self, job: OutputJob, record: RecordHook | None = None,
             previous: str | None = None) -> defer.Deferred:
        return defer.ensureDeferred(self._send(job, record, previous))

    def probe(self) -> defer.Deferred:
        """Get-Printer-Attributes now (at start): fires with the PrinterStatus
        or fails with PrinterUnavailable / PrinterRejected."""
        return defer.ensureDeferred(self._printer_status())

    def selects_pages(self) -> defer.Deferred:
        """IPageSelecting: page-ranges-supported (the printer is asked once
        if it was not yet): else Ghostscript selects the pages before."""
        async def ask() -> bool:
            status = self.capabilities or await self._printer_status()
            return True in status.supported("page-ranges")
        return defer.ensureDeferred(ask())

    @property
    def formats(self) -> tuple[str, ...]:
        """document-format-supported from the last answer (empty before one)."""
        return self.capabilities.formats if self.capabilities is not None else ()

    # -- one job ------------------------------------------------------------------

    async def _send(self, job: OutputJob, record: RecordHook | None, previous: str | None) -> OutputResult:
        status = await self._printer_status()
        if status.stopped or not status.accepting:
            why = "is stopped" if status.stopped else "is not accepting jobs"
            raise PrinterUnavailable(self._printer_words(f"the IPP printer {self.uri} {why}", status),
                                     REASON_STOPPED)
        name = job_name(job)
        if previous:
            done = await self._resume(previous, name)
            if done is not None:
                return done
        plan = self.plan(job, status)
        use_create = ipp.CREATE_JOB in status.operations and ipp.SEND_DOCUMENT in status.operations
        if use_create:
            created = await self._call("Create-Job", self.client.create_job(
                job_name=name, user=job.user, job_attributes=list(plan.attributes)))
            await self._record(record, created.job_id)
            log.info("IPP {uri}: job {id} created for {job}; sending the document", uri=self.uri,
                     id=created.job_id, job=job.job_id)
            try:
                # No document-name: CUPS 2.4.2's cupsd dies (SIGSEGV) on a
                # Send-Document that has one (seen here; docs/ipp.md).
                sent = await self._call("Send-Document", self.client.send_document(
                    created.job_id, job.path, document_format=plan.format, user=job.user))
            except PrinterRejected:
                await self._cancel_quietly(created.job_id)
                raise
            job_id = created.job_id
            first = sent
        else:
            first = await self._call("Print-Job", self.client.print_job(
                job.path, job_name=name, document_format=plan.format, user=job.user,
                job_attributes=list(plan.attributes)))
            job_id = first.job_id
            await self._record(record, job_id)
        final = first if first.terminal else await self._wait(job_id)
        return self._outcome(final, plan.notes)

    def plan(self, job: OutputJob, status: ipp.PrinterStatus) -> _Plan:
        """The document-format and job-template attributes for *job* on this
        printer, and what it cannot do (said in the status mail)."""
        notes: list[str] = []
        formats = status.formats
        specific = [f for f in formats if f != "application/octet-stream"]
        if not formats or job.format in formats:
            fmt = job.format
        elif not specific:
            # A printer that lists only octet-stream detects the format itself.
            fmt = "application/octet-stream"
        else:
            raise PrinterRejected(f"the IPP printer {self.uri} takes {', '.join(formats)}, not {job.format}",
                                  REASON_DOCUMENT_FORMAT)
        attributes: list[Attribute] = []
        if job.copies > 1:
            supported = status.supported("copies")
            top = supported[0].upper if supported and isinstance(supported[0], IntRange) else 1
            if top >= job.copies:
                attributes.append(attr("copies", Tag.INTEGER, job.copies))
            else:
                notes.append(f"the printer cannot make {job.copies} copies (at most {top}); printed once")
        self._plan_options(job, status, attributes, notes)
        return _Plan(fmt, tuple(attributes), tuple(notes))

    def _plan_options(self, job: OutputJob, status: ipp.PrinterStatus, attributes: list[Attribute],
                      notes: list[str]) -> None:
        """The sender's options as job-template attributes (RFC 8011 5.2,
        PWG 5100.x), each only if the printer says it supports the value;
        what it cannot do becomes a note for the status mail."""
        options = JobOptions.parse(job.options)
        for item in options.ignored:
            notes.append(f"option {item!r} not understood; ignored")
        if options.sides:
            if options.sides in status.supported("sides"):
                attributes.append(attr("sides", Tag.KEYWORD, options.sides))
            else:
                notes.append(f"the printer cannot print {options.sides} "
                             f"(it can: {', '.join(map(str, status.supported('sides'))) or 'nothing it names'})")
        if options.media:
            media = options.pwg_media
            if media in status.supported("media"):
                attributes.append(attr("media", Tag.KEYWORD, media))
            else:
                notes.append(f"the printer has no {options.media} media; printed on its default")
        if options.color:
            modes = status.supported("print-color-mode")
            if options.color in modes:
                attributes.append(attr("print-color-mode", Tag.KEYWORD, options.color))
            elif options.color == "color":
                notes.append("the printer cannot print in colour")
            else:
                notes.append("the printer cannot be asked for monochrome")
        if options.pages:
            if True in status.supported("page-ranges"):
                attributes.append(attr("page-ranges", Tag.RANGE_OF_INTEGER,
                                       *(IntRange(a, b) for a, b in options.pages)))
            else:
                notes.append("the printer cannot select pages; all pages were printed")

    async def _resume(self, previous: str, name: str) -> OutputResult | None:
        """Ask about a job an earlier attempt created; an OutputResult when
        it needs no sending again, None when it must be sent anew."""
        try:
            job_id = int(previous)
        except ValueError:
            log.warn("IPP {uri}: recorded printer job {p!r} is not a job id; sending again", uri=self.uri,
                     p=previous)
            return None
        try:
            known = await self._call("Get-Job-Attributes", self.client.get_job_attributes(job_id))
        except PrinterRejected as e:
            log.info("IPP {uri}: job {id} from an earlier attempt is unknown ({e}); sending again",
                     uri=self.uri, id=job_id, e=e.reason)
            return None
        if known.name is not None and known.name != name:
            log.info("IPP {uri}: job {id} is now someone else's ({n!r}); sending again", uri=self.uri,
                     id=job_id, n=known.name)
            return None
        if known.state == ipp.JOB_COMPLETED:
            log.info("IPP {uri}: job {id} from an earlier attempt completed; not sending again",
                     uri=self.uri, id=job_id)
            return self._outcome(known, ())
        if known.terminal:
            log.info("IPP {uri}: job {id} from an earlier attempt is {s}; sending again", uri=self.uri,
                     id=job_id, s=known.state_name)
            return None
        if INCOMPLETE_JOB_REASONS & set(known.reasons):
            log.info("IPP {uri}: job {id} never got its document; canceling it and sending again",
                     uri=self.uri, id=job_id)
            await self._cancel_quietly(job_id)
            return None
        log.info("IPP {uri}: job {id} from an earlier attempt is {s}; waiting for it", uri=self.uri,
                 id=job_id, s=known.state_name)
        return self._outcome(await self._wait(job_id), ())

    async def _wait(self, job_id: int) -> JobStatus:
        started = self.reactor.seconds()
        while True:
            await task.deferLater(self.reactor, self.poll_interval, lambda: None)
            try:
                status = await self._call("Get-Job-Attributes", self.client.get_job_attributes(job_id))
            except PrinterRejected as e:
                # The printer forgot the job (restarted): it will be sent again.
                raise PrinterUnavailable(f"the IPP printer {self.uri} lost job {job_id}: {e.reason}",
                                         REASON_OTHER) from None
            if status.terminal:
                return status
            if self.reactor.seconds() - started > self.job_wait_limit:
                raise PrinterUnavailable(f"job {job_id} at the IPP printer {self.uri} is still "
                                         f"{status.state_name} after {self.job_wait_limit:g} s", REASON_TIMED_OUT)

    def _outcome(self, status: JobStatus, notes: tuple[str, ...]) -> OutputResult:
        reasons = ", ".join(r for r in status.reasons if r != "none") or "none"
        if status.state == ipp.JOB_COMPLETED:
            pages = status.impressions_completed or None
            ack = f"completed by the IPP printer {self.uri} as job {status.job_id}"
            return OutputResult(acknowledged=ack, pages=pages,
                                detail=f"job-state-reasons {reasons}; {status.message}".rstrip("; "),
                                notes=tuple(notes))
        words = (f"the IPP printer {self.uri} {status.state_name} job {status.job_id} "
                 f"(job-state-reasons: {reasons})")
        if status.message:
            words += f": {status.message}"
        ipp_reason = REASON_DOCUMENT_FORMAT if "document-format-error" in status.reasons else REASON_OTHER
        raise PrinterRejected(words, ipp_reason)

    # -- helpers ------------------------------------------------------------------

    async def _printer_status(self) -> ipp.PrinterStatus:
        status = await self._call("Get-Printer-Attributes", self.client.get_printer_attributes())
        self.capabilities = status
        return status

    async def _record(self, record: RecordHook | None, job_id: int) -> None:
        if record is None:
            return
        try:
            await defer.maybeDeferred(record, str(job_id))
        except Exception as e:
            await self._cancel_quietly(job_id)
            raise PrinterUnavailable(f"could not record IPP job {job_id} in the spool: {e}", REASON_OTHER) from e

    async def _cancel_quietly(self, job_id: int) -> None:
        try:
            await self.client.cancel_job(job_id)
        except Exception as e:  # best effort: the job was not given its data anyway
            log.info("IPP {uri}: Cancel-Job {id}: {e}", uri=self.uri, id=job_id, e=e)

    def _printer_words(self, head: str, status: ipp.PrinterStatus) -> str:
        words = head
        if status.reasons:
            words += f" (printer-state-reasons: {', '.join(status.reasons)})"
        if status.message:
            words += f": {status.message}"
        return words

    async def _call(self, operation: str, awaitable) -> object:
        """Await one operation; turn every failure into PrinterUnavailable /
        PrinterRejected (a cancellation passes through)."""
        try:
            return await awaitable
        except defer.CancelledError:
            raise
        except PrinterOutputError:
            raise
        except IPPError as e:
            raise self._status_error(e) from None
        except IPPHTTPError as e:
            raise self._http_error(operation, e) from None
        except IPPTimeout as e:
            raise PrinterUnavailable(str(e), REASON_TIMED_OUT) from None
        except IPPProtocolError as e:
            raise PrinterUnavailable(f"the IPP printer {self.uri}: {e}", REASON_OTHER) from None
        except Exception as e:
            raise describe_transport_error(e, self.uri, operation) from None

    def _status_error(self, e: IPPError) -> PrinterOutputError:
        words = f"the IPP printer {self.uri} answered {e.operation} with {ipp.status_name(e.status)}"
        if e.message:
            words += f" ({e.message})"
        if e.status in STOPPED_STATUSES:
            return PrinterUnavailable(words, REASON_STOPPED)
        if e.status >= 0x0500:
            return PrinterUnavailable(words, REASON_OTHER)
        if e.status in (ipp.CLIENT_ERROR_DOCUMENT_FORMAT_ERROR, ipp.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED) or (
                e.status == ipp.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED and "document-format" in e.message):
            return PrinterRejected(words, REASON_DOCUMENT_FORMAT)
        if e.status == ipp.CLIENT_ERROR_NOT_FOUND:
            return PrinterRejected(words, REASON_NOT_FOUND)
        return PrinterRejected(words, REASON_OTHER)

    def _http_error(self, operation: str, e: IPPHTTPError) -> PrinterOutputError:
        words = f"the IPP printer {self.uri} answered {operation} with {e}"
        if e.code == 426:
            return PrinterRejected(words + " (it wants TLS: use ipps://)", REASON_NOT_FOUND)
        if e.code in (401, 403):
            return PrinterRejected(words + " (printer authentication is not supported)", REASON_OTHER)
        if e.code == 404:
            return PrinterRejected(words + " (no such printer path)", REASON_NOT_FOUND)
        if e.code >= 500:
            return PrinterUnavailable(words, REASON_OTHER)
        return PrinterRejected(words, REASON_OTHER)


def describe_transport_error(e: BaseException, uri: str, operation: str) -> PrinterUnavailable:
    """A connection-level failure as PrinterUnavailable with words a human can use."""
    if isinstance(e, (web_client.ResponseNeverReceived, web_client.ResponseFailed,
                      web_client.RequestTransmissionFailed, web_client.RequestGenerationFailed)):
        inner = [f.value for f in getattr(e, "reasons", [])]
        tls = [x for x in inner if type(x).__module__.startswith("OpenSSL")]
        if tls:
            return PrinterUnavailable(f"TLS with the IPP printer {uri} failed ({tls[0]!r}); "
                                      "is output_ca right?", REASON_CONNECTING)
        text = "; ".join(str(x) or type(x).__name__ for x in inner) or type(e).__name__
        return PrinterUnavailable(f"the IPP printer {uri} dropped the connection during {operation}: {text}",
                                  REASON_TIMED_OUT)
    if isinstance(e, error.ConnectionRefusedError):
        return PrinterUnavailable(f"the IPP printer {uri} refused the connection", REASON_CONNECTING)
    if isinstance(e, (error.TimeoutError, error.ConnectingCancelledError)):
        return PrinterUnavailable(f"the IPP printer {uri} did not answer the connection", REASON_CONNECTING)
    if isinstance(e, error.DNSLookupError):
        return PrinterUnavailable(f"cannot resolve the IPP printer {uri}: {e}", REASON_CONNECTING)
    if isinstance(e, (error.ConnectError, OSError)):
        return PrinterUnavailable(f"cannot reach the IPP printer {uri}: {e}", REASON_CONNECTING)
    return PrinterUnavailable(f"the IPP printer {uri}: {operation} failed: {e!r}", REASON_OTHER)


def job_name(job: OutputJob) -> str:
    """The job-name sent, also how a job is recognised after a crash: the
    title plus the spool's job id (unique), trimmed to name(MAX)."""
    tail = f" [{job.job_id}]"
    head = job.title.encode("utf-8")[:MAX_JOB_NAME - len(tail.encode())].decode("utf-8", "ignore")
    return head + tail


__all__ = ["IPPOutput", "IExactlyOnceOutput", "POLL_INTERVAL", "job_name"]

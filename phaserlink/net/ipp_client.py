"""An IPP client (RFC 8011 operations over HTTP, RFC 8010) on twisted.web.client.

One :class:`IPPClient` talks to one printer URI: ``ipp://host[:631]/path``
over HTTP, ``ipps://host[:631]/path`` over TLS verified against a CA file or
the system CAs (:func:`phaserlink.tls.client_options`).  It knows the
operations a print path needs (Get-Printer-Attributes, Create-Job,
Send-Document, Print-Job, Get-Job-Attributes, Cancel-Job) and nothing of
the spool: what a printer's answer means for a job is decided by
:mod:`phaserlink.printer.output.ipp`.  See docs/ipp.md.

Documents stream from disk (:class:`IPPBodyProducer`: the encoded request,
then the file, one chunk at a time, paused whenever the socket's buffers are
full), so memory does not grow with the job.  A request with a document is
bounded by a watchdog that every chunk taken restarts, not by a deadline; a
request without one by a plain time-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from . import ipp_codec as codec
from .ipp_codec import Attribute, Delimiter, Group, Message, Tag, attr

IPP_PORT = 631
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_RESPONSE,
    IPP_CLIENT_CHUNK_SIZE as CHUNK_SIZE,
    IPP_CLIENT_REQUEST_TIMEOUT as REQUEST_TIMEOUT,
    IPP_CLIENT_CONNECT_TIMEOUT as CONNECT_TIMEOUT,
)

# Operations (RFC 8011 5.4.15)
PRINT_JOB = 0x0002
VALIDATE_JOB = 0x0004
CREATE_JOB = 0x0005
SEND_DOCUMENT = 0x0006
CANCEL_JOB = 0x0008
GET_JOB_ATTRIBUTES = 0x0009
GET_PRINTER_ATTRIBUTES = 0x000B

# Status codes (RFC 8011 appendix B) the output acts on.
SUCCESSFUL_OK = 0x0000
CLIENT_ERROR_NOT_FOUND = 0x0406
CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED = 0x040A
CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED = 0x040B
CLIENT_ERROR_DOCUMENT_FORMAT_ERROR = 0x0411
SERVER_ERROR_SERVICE_UNAVAILABLE = 0x0502
SERVER_ERROR_VERSION_NOT_SUPPORTED = 0x0503
SERVER_ERROR_TEMPORARY = 0x0505
SERVER_ERROR_NOT_ACCEPTING_JOBS = 0x0506
SERVER_ERROR_BUSY = 0x0507

STATUS_NAMES = {
    0x0000: "successful-ok", 0x0001: "successful-ok-ignored-or-substituted-attributes",
    0x0002: "successful-ok-conflicting-attributes",
    0x0400: "client-error-bad-request", 0x0401: "client-error-forbidden",
    0x0402: "client-error-not-authenticated", 0x0403: "client-error-not-authorized",
    0x0404: "client-error-not-possible", 0x0405: "client-error-timeout", 0x0406: "client-error-not-found",
    0x0407: "client-error-gone", 0x0408: "client-error-request-entity-too-large",
    0x0409: "client-error-request-value-too-long", 0x040A: "client-error-document-format-not-supported",
    0x040B: "client-error-attributes-or-values-not-supported", 0x040C: "client-error-uri-scheme-not-supported",
    0x040D: "client-error-charset-not-supported", 0x040E: "client-error-conflicting-attributes",
    0x040F: "client-error-compression-not-supported", 0x0410: "client-error-compression-error",
    0x0411: "client-error-document-format-error", 0x0412: "client-error-document-access-error",
    0x0500: "server-error-internal-error", 0x0501: "server-error-operation-not-supported",
    0x0502: "server-error-service-unavailable", 0x0503: "server-error-version-not-supported",
    0x0504: "server-error-device-error", 0x0505: "server-error-temporary-error",
    0x0506: "server-error-not-accepting-jobs", 0x0507: "server-error-busy",
    0x0508: "server-error-job-canceled", 0x0509: "server-error-multiple-document-jobs-not-supported",
}

# job-state (RFC 8011 5.3.7)
JOB_PENDING, JOB_HELD, JOB_PROCESSING, JOB_STOPPED, JOB_CANCELED, JOB_ABORTED, JOB_COMPLETED = range(3, 10)
JOB_STATE_NAMES = {3: "pending", 4: "pending-held", 5: "processing", 6: "processing-stopped",
                   7: "canceled", 8: "aborted", 9: "completed"}
TERMINAL_JOB_STATES = (JOB_CANCELED, JOB_ABORTED, JOB_COMPLETED)
# printer-state (RFC 8011 5.4.11)
PRINTER_IDLE, PRINTER_PROCESSING, PRINTER_STOPPED = 3, 4, 5

#: What Get-Printer-Attributes asks for: what the output and the conversion
#: graph need, not the printer's whole description.
PRINTER_ATTRIBUTES = (
    "printer-state", "printer-state-reasons", "printer-state-message", "printer-is-accepting-jobs",
    "operations-supported", "document-format-supported", "document-format-default",
    "copies-supported", "sides-supported", "media-supported", "media-default",
    "print-color-mode-supported", "page-ranges-supported", "job-creation-attributes-supported",
    "printer-make-and-model", "ipp-versions-supported",
    # What a raster-only printer takes (phaserlink/printer/target.py).
    "pwg-raster-document-resolution-supported", "pwg-raster-document-type-supported", "urf-supported",
)
JOB_ATTRIBUTES = (
    "job-id", "job-name", "job-state", "job-state-reasons", "job-state-message",
    "job-impressions-completed", "job-media-sheets-completed", "job-originating-user-name",
)

log = Logger()


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"status {code:#06x}")


class IPPError(Exception):
    """The printer answered the operation with a non-successful status."""

    def __init__(self, operation: str, status: int, message: str = "") -> None:
        self.operation = operation
        self.status = status
        self.message = message
        super().__init__(f"{operation}: {status_name(status)}" + (f" ({message})" if message else ""))


class IPPHTTPError(Exception):
    """The HTTP layer refused the request (404, 401, 426, 5xx, ...)."""

    def __init__(self, code: int, phrase: str) -> None:
        self.code = code
        super().__init__(f"HTTP {code} {phrase}")


class IPPProtocolError(Exception):
    """The answer was not an IPP response (wrong content, too big, garbled)."""


class IPPTimeout(Exception):
    """The printer took no data and said nothing for too long."""


@dataclass(frozen=True)
class JobStatus:
    """What Get-Job-Attributes (or a job creation) said about one job."""

    job_id: int
    state: int
    reasons: tuple[str, ...] = ()
    message: str = ""
    impressions_completed: int | None = None
    name: str | None = None

    @property
    def state_name(self) -> str:
        return JOB_STATE_NAMES.get(self.state, str(self.state))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_JOB_STATES

    @classmethod
    def from_group(cls, group: Group) -> "JobStatus":
        def one(name: str, default: Any = None) -> Any:
            a = group.get(name)
            if a is None or codec.is_out_of_band(a.tag):
                return default
            v = a.value
            return v.text if isinstance(v, codec.StringWithLanguage) else v

        reasons_attr = group.get("job-state-reasons")
        reasons = tuple(str(v) for v in reasons_attr.all if isinstance(v, str)) if reasons_attr else ()
        impressions = one("job-impressions-completed")
        return cls(job_id=int(one("job-id", 0)), state=int(one("job-state", 0)), reasons=reasons,
                   message=str(one("job-state-message", "") or ""),
                   impressions_completed=impressions if isinstance(impressions, int) else None,
                   name=one("job-name"))


@dataclass(frozen=True)
class PrinterStatus:
    """The parts of Get-Printer-Attributes the appliance uses.  *attributes*
    keeps the whole printer group, for what is not parsed here."""

    state: int
    reasons: tuple[str, ...]
    message: str
    accepting: bool
    operations: frozenset[int]
    formats: tuple[str, ...]
    attributes: Group

    @property
    def stopped(self) -> bool:
        return self.state == PRINTER_STOPPED

    def supported(self, name: str) -> list[Any]:
        """Every value of *name*-supported (e.g. ``supported('sides')``)."""
        a = self.attributes.get(f"{name}-supported")
        return [] if a is None else [v for v in a.all if v is not None]

    @classmethod
    def from_group(cls, group: Group) -> "PrinterStatus":
        def values(name: str) -> list[Any]:
            a = group.get(name)
            return [] if a is None else [v.text if isinstance(v, codec.StringWithLanguage) else v
                                         for v in a.all if v is not None]

        state = values("printer-state")
        accepting = values("printer-is-accepting-jobs")
        message = values("printer-state-message")
        return cls(state=int(state[0]) if state else PRINTER_IDLE,
                   reasons=tuple(str(r) for r in values("printer-state-reasons") if r != "none"),
                   message=str(message[0]) if message else "",
                   accepting=bool(accepting[0]) if accepting else True,
                   operations=frozenset(int(o) for o in values("operations-supported")),
                   formats=tuple(str(f) for f in values("document-format-supported")),
                   attributes=group)


@implementer(IBodyProducer)
class IPPBodyProducer:
    """The encoded request, then *path*'s bytes, pushed chunk by chunk.

    A push producer that stops whenever the transport says its buffers are
    full (``pauseProducing``) and goes on when they drain, so at most one
    chunk of the document is in memory.  *progress* is called per chunk
    (the caller's watchdog).
    """

    def __init__(self, head: bytes, path: Path | None, *, progress: Callable[[], None] = lambda: None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.head = head
        self.path = path
        self.size = path.stat().st_size if path is not None else 0
        self.length = len(head) + self.size
        self.progress = progress
        self.chunk_size = chunk_size
        self.sent = 0
        self._file = None
        self._consumer = None
        self._paused = False
        self._pumping = False
        self._done: defer.Deferred | None = None

    def startProducing(self, consumer) -> defer.Deferred:
        self._consumer = consumer
        self._done = done = defer.Deferred()
        consumer.write(self.head)
        if self.path is not None:
            self._file = open(self.path, "rb")
        self._pump()
        return done

    def _pump(self) -> None:
        if self._pumping or self._done is None:
            return
        self._pumping = True
        try:
            while not self._paused and self._done is not None:
                if self._file is None or self.sent >= self.size:
                    self._finish(None)
                    return
                chunk = self._file.read(min(self.chunk_size, self.size - self.sent))
                if not chunk:
                    self._finish(IPPProtocolError(f"{self.path} ended after {self.sent} of {self.size} bytes"))
                    return
                self.sent += len(chunk)
                self._consumer.write(chunk)
                self.progress()
        finally:
            self._pumping = False

    def _finish(self, error: Exception | None) -> None:
        done, self._done = self._done, None
        if self._file is not None:
            self._file.close()
            self._file = None
        if done is not None:
            if error is None:
                done.callback(None)
            else:
                done.errback(error)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        # The request is gone (cancelled, connection lost): Twisted fails the
        # request itself; our Deferred must not fire any more.
        self._done = None
        if self._file is not None:
            self._file.close()
            self._file = None


class _ResponseReader(Protocol):
    def __init__(self, limit: int, progress: Callable[[], None]) -> None:
        self.limit = limit
        self.progress = progress
        self.parts: list[bytes] = []
        self.size = 0
        self.done: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.progress()
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()
            if not self.done.called:
                self.done.errback(IPPProtocolError(f"response larger than {self.limit} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


@implementer(IPolicyForHTTPS)
class _VerifiedTLS:
    """ipps: TLS to the printer, verified against *ca_file* or the system CAs;
    with *verify* False (``output_tls = none``) encrypted but not verified."""

    def __init__(self, ca_file: str | None, verify: bool) -> None:
        self.ca_file = ca_file
        self.verify = verify

    def creatorForNetloc(self, hostname: bytes, port: int):
        from phaserlink.tls import client_options

        name = hostname.decode("idna") if isinstance(hostname, bytes) else hostname
        if self.verify:
            return client_options(name, self.ca_file)
        return _Unverified(name)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """A client connection creator that encrypts and checks nothing."""

    def __init__(self, hostname: str) -> None:
        from twisted.internet import ssl

        self._options = ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        self.hostname = hostname

    def clientConnectionForTLS(self, tlsProtocol):
        from OpenSSL import SSL

        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_tlsext_host_name(self.hostname.encode("idna"))
        connection.set_app_data(tlsProtocol)
        return connection


def parse_ipp_uri(uri: str) -> tuple[str, str, int, str]:
    """``ipp[s]://host[:port]/path`` -> (scheme, host, port, path); ValueError names the URI."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("ipp", "ipps"):
        raise ValueError(f"{uri!r}: not an ipp:// or ipps:// URI")
    try:
        port = parts.port or IPP_PORT
    except ValueError as e:
        raise ValueError(f"{uri!r}: bad port") from e
    if not parts.hostname:
        raise ValueError(f"{uri!r}: no host")
    path = parts.path or "/"
    if parts.query or parts.fragment:
        raise ValueError(f"{uri!r}: no query or fragment allowed")
    return scheme, parts.hostname, port, path


class IPPClient:
    """Operations on one printer.  Every method returns a Deferred; each
    request is one HTTP exchange (``Connection: close`` is not forced: the
    Agent's default non-persistent pool opens one connection per request)."""

    def __init__(self, reactor, uri: str, *, ca_file: str | None = None, verify: bool = True,
                 timeout: float = REQUEST_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
                 user: str = "phaserlink") -> None:
        scheme, host, port, path = parse_ipp_uri(uri)
        self.reactor = reactor
        self.uri = uri
        self.printer_uri = urlunsplit((scheme, _netloc(host, port), path, "", ""))
        self.http_url = urlunsplit(("https" if scheme == "ipps" else "http", _netloc(host, port), path, "", ""))
        self.timeout = timeout
        self.user = user
        self.version = (2, 0)
        self._request_id = 0
        self.tls = _VerifiedTLS(ca_file, verify) if scheme == "ipps" else None
        self.connect_timeout = connect_timeout

    # -- the operations -------------------------------------------------------------

    def operation_attributes(self, *extra: Attribute, user: str | None = None) -> list[Attribute]:
        return [attr("attributes-charset", Tag.CHARSET, "utf-8"),
                attr("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en"),
                attr("printer-uri", Tag.URI, self.printer_uri),
                attr("requesting-user-name", Tag.NAME, user or self.user),
                *extra]

    async def get_printer_attributes(self, requested=PRINTER_ATTRIBUTES) -> PrinterStatus:
        response = await self.request(GET_PRINTER_ATTRIBUTES, "Get-Printer-Attributes", [
            Group(Delimiter.OPERATION, tuple(self.operation_attributes(
                attr("requested-attributes", Tag.KEYWORD, *requested))))])
        return PrinterStatus.from_group(response.group(Delimiter.PRINTER) or Group(Delimiter.PRINTER))

    async def create_job(self, *, job_name: str, user: str, job_attributes: list[Attribute] = ()) -> JobStatus:
        groups = [Group(Delimiter.OPERATION, tuple(self.operation_attributes(
            attr("job-name", Tag.NAME, job_name), user=user)))]
        if job_attributes:
            groups.append(Group(Delimiter.JOB, tuple(job_attributes)))
        response = await self.request(CREATE_JOB, "Create-Job", groups)
        return self._job_from(response, "Create-Job")

    async def send_document(self, job_id: int, path: Path, *, document_format: str, user: str,
                            document_name: str | None = None) -> JobStatus:
        extra = [attr("job-id", Tag.INTEGER, job_id)]
        if document_name:
            extra.append(attr("document-name", Tag.NAME, document_name))
        extra += [attr("document-format", Tag.MIME_MEDIA_TYPE, document_format),
                  attr("last-document", Tag.BOOLEAN, True)]
        ops = self.operation_attributes(user=user)
        # printer-uri + job-id identify the job (RFC 8011 4.3.1): keep the order.
        groups = [Group(Delimiter.OPERATION, tuple(ops + extra))]
        response = await self.request(SEND_DOCUMENT, "Send-Document", groups, document=path)
        return self._job_from(response, "Send-Document", job_id)

    async def print_job(self, path: Path, *, job_name: str, document_format: str, user: str,
                        job_attributes: list[Attribute] = ()) -> JobStatus:
        groups = [Group(Delimiter.OPERATION, tuple(self.operation_attributes(
            attr("job-name", Tag.NAME, job_name),
            attr("document-format", Tag.MIME_MEDIA_TYPE, document_format), user=user)))]
        if job_attributes:
            groups.append(Group(Delimiter.JOB, tuple(job_attributes)))
        response = await self.request(PRINT_JOB, "Print-Job", groups, document=path)
        return self._job_from(response, "Print-Job")

    async def get_job_attributes(self, job_id: int) -> JobStatus:
        response = await self.request(GET_JOB_ATTRIBUTES, "Get-Job-Attributes", [
            Group(Delimiter.OPERATION, tuple(self.operation_attributes(
                attr("job-id", Tag.INTEGER, job_id),
                attr("requested-attributes", Tag.KEYWORD, *JOB_ATTRIBUTES))))])
        return self._job_from(response, "Get-Job-Attributes", job_id)

    async def cancel_job(self, job_id: int) -> None:
        await self.request(CANCEL_JOB, "Cancel-Job", [
            Group(Delimiter.OPERATION, tuple(self.operation_attributes(attr("job-id", Tag.INTEGER, job_id))))])

    # -- one exchange ---------------------------------------------------------------

    def _job_from(self, response: Message, operation: str, job_id: int | None = None) -> JobStatus:
        group = response.group(Delimiter.JOB)
        if group is None or ("job-id" not in group and job_id is None):
            raise IPPProtocolError(f"{operation}: the response has no job attributes")
        status = JobStatus.from_group(group)
        if status.job_id == 0 and job_id is not None:
            status = JobStatus(job_id, status.state, status.reasons, status.message,
                               status.impressions_completed, status.name)
        return status

    async def request(self, code: int, operation: str, groups: list[Group], *,
                      document: Path | None = None) -> Message:
        """One IPP exchange; a successful response, else IPPError / IPPHTTPError /
        IPPProtocolError / IPPTimeout / the connection's own error."""
        try:
            return await self._exchange(code, operation, groups, document)
        except IPPError as e:
            if e.status != SERVER_ERROR_VERSION_NOT_SUPPORTED or self.version == (1, 1):
                raise
        # An IPP/1.1-only printer: say 1.1 from now on.
        self.version = (1, 1)
        return await self._exchange(code, operation, groups, document)

    async def _exchange(self, code: int, operation: str, groups: list[Group], document: Path | None) -> Message:
        self._request_id = self._request_id % 0x7FFFFFFF + 1
        request_id = self._request_id
        head = codec.encode(Message(code, request_id, tuple(groups), self.version))
        watchdog = _Watchdog(self.reactor, self.timeout)
        body = IPPBodyProducer(head, document, progress=watchdog.touch)
        # An Agent per exchange, so that the watchdog knows this exchange's
        # connection: cancelling an Agent's Deferred once the request is
        # written does not reliably drop the connection.
        agent = Agent.usingEndpointFactory(self.reactor, _Endpoints(self, watchdog),
                                           pool=_QuietPool(self.reactor, persistent=False))
        d = agent.request(b"POST", self.http_url.encode("ascii"),
                          Headers({b"Content-Type": [b"application/ipp"]}), body)
        watchdog.arm(d)
        try:
            response = await d
            if response.code != 200:
                response.deliverBody(_Discard())
                raise IPPHTTPError(response.code, response.phrase.decode("latin-1", "replace"))
            reader = _ResponseReader(MAX_RESPONSE, watchdog.touch)
            response.deliverBody(reader)
            d = reader.done
            watchdog.arm(d)
            data = await d
        except Exception:
            if watchdog.fired:
                raise IPPTimeout(f"{operation}: no answer from {self.uri} for {self.timeout:g} s") from None
            raise
        finally:
            watchdog.stop()
        try:
            message = codec.decode(data)
        except codec.IPPEncodingError as e:
            raise IPPProtocolError(f"{operation}: not an IPP response: {e}") from None
        if message.request_id != request_id:
            raise IPPProtocolError(f"{operation}: response to request {message.request_id}, not {request_id}")
        if message.code >= 0x0400:
            op = message.group(Delimiter.OPERATION)
            text = ""
            if op is not None and op.get("status-message") is not None:
                text = str(op.get("status-message").value)
            raise IPPError(operation, message.code, text)
        return message


class _Watchdog:
    """Cancels the Deferred it is armed on after *timeout* seconds without a
    ``touch`` (a chunk taken, data received)."""

    def __init__(self, reactor, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.deferred: defer.Deferred | None = None
        self.call = None
        self.fired = False
        self.protocol = None  # the exchange's connection, once connected

    def arm(self, d: defer.Deferred) -> None:
        self.deferred = d
        self.touch()

    def touch(self) -> None:
        if self.call is not None and self.call.active():
            self.call.reset(self.timeout)
        elif not self.fired:
            self.call = self.reactor.callLater(self.timeout, self._fire)

    def _fire(self) -> None:
        self.fired = True
        transport = getattr(self.protocol, "transport", None)
        if transport is not None:
            transport.abortConnection()  # the request then fails: ResponseFailed & co.
        elif self.deferred is not None and not self.deferred.called:
            self.deferred.cancel()  # still connecting

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Endpoints for one exchange: TCP (HostnameEndpoint: IPv4 and IPv6),
    wrapped in TLS for ipps, telling the watchdog the connection made."""

    def __init__(self, client: "IPPClient", watchdog: _Watchdog) -> None:
        self.client = client
        self.watchdog = watchdog

    def endpointForURI(self, uri):
        endpoint = HostnameEndpoint(self.client.reactor, uri.host, uri.port, timeout=self.client.connect_timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self.client.tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return _Recording(endpoint, self.watchdog)


@implementer(IStreamClientEndpoint)
class _Recording:
    def __init__(self, endpoint, watchdog: _Watchdog) -> None:
        self.endpoint = endpoint
        self.watchdog = watchdog

    def connect(self, factory):
        def connected(protocol):
            self.watchdog.protocol = protocol
            return protocol

        return self.endpoint.connect(factory).addCallback(connected)



class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # a poll every few seconds would log two lines each


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory  # Twisted's (private) hook for the connection factory


class _Discard(Protocol):
    def connectionLost(self, reason) -> None:
        pass


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["IPPClient", "IPPError", "IPPHTTPError", "IPPProtocolError", "IPPTimeout", "IPPBodyProducer",
           "JobStatus", "PrinterStatus", "parse_ipp_uri", "IPP_PORT"]

"""Raw TCP output (port 9100, "AppSocket"/JetDirect): ``socket://host[:port]``.

The protocol has no acknowledgement of its own, so TCP's is used: the job
counts as delivered when every byte was handed to the kernel and the
printer then closed the connection, cleanly (FIN) or with a reset, after
its TCP stack had acknowledged every byte (:func:`unacknowledged_bytes`:
``SIOCOUTQ``, and ``tcpi_bytes_acked`` to tell our FIN from data).  Many
printers reset the connection once they have the job; sending it again
then would print it twice.  A reset while bytes were still unacknowledged,
a printer that closes before it has everything, stops reading or never
closes for ``timeout`` seconds, is PrinterUnavailable and the job is sent
again later.  What TCP cannot tell (bytes the printer acknowledged but
never printed, a printer that resets before its delayed ACK went out) is
in docs/outputs.md.

With PJL the job is wrapped in ``@PJL JOB``/``EOJ`` with ``USTATUS
JOB=ON`` and we wait (up to the PJL end timeout) for the printer's
``USTATUS JOB END`` for our job name, which carries the page count.  A
printer that never reports (p910nd, a PJL-less device) still completes
the job when it closes cleanly: every byte was accepted, and sending it
again would print it twice.

Copies: with PJL, ``@PJL SET QTY=n``; without, the data is sent n times
in the same connection, except for PDF (two PDFs end to end are not a
PDF): then it is sent once and the result says so.  The other job options
(sides, media, color) are ``@PJL SET`` lines with PJL (:func:`pjl.job_settings`);
without PJL a raw socket cannot say them, and the result's notes say so
(docs/options.md).
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
import sys
import termios

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from zope.interface import implementer

from phaserlink.message.job_options import JobOptions

from . import pjl
from .option_notes import not_said
from .interfaces import (
    REASON_CONNECTING,
    IPrinterOutput,
    OutputJob,
    OutputResult,
    PrinterUnavailable,
)
from .transfer import CONNECT_TIMEOUT, FileProducer, JobProtocol, connect, repeat_reader

SOCKET_PORT = 9100
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    SOCKET_TIMEOUT,
    PJL_END_TIMEOUT,
)

# Formats that cannot be repeated end to end for copies.
NOT_REPEATABLE = ("application/pdf",)
# ioctl(SIOCOUTQ): bytes of sequence space not yet acknowledged by the peer
# (data, plus one for our FIN once it is queued).  Linux: SIOCOUTQ is TIOCOUTQ.
SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)
# struct tcp_info (linux/tcp.h): u64 tcpi_bytes_acked at this offset (Linux
# >= 4.1), which counts the SYN and the FIN as one byte each.
TCP_INFO_BYTES_ACKED = 120
TCP_INFO_SIZE = 256

log = Logger()


def unacknowledged_bytes(sock: socket.socket, handed: int) -> int | None:
    """How many of the *handed* bytes (all we ever gave the transport) the
    peer's TCP has not acknowledged; None when the kernel cannot say (not
    Linux, not a TCP socket), which the caller takes as "maybe not".

    SIOCOUTQ counts our FIN too once shutdown(SHUT_WR) queued it, so a
    printer that resets before acknowledging the FIN, after every data
    byte, would read as one byte short.  ``tcpi_bytes_acked`` counts from
    the SYN: the data acknowledged is ``bytes_acked - 1`` (SYN), capped at
    what was handed over (the FIN).  Bytes still in Twisted's buffer were
    handed but not acknowledged, so they count as missing, as they must.
    Works on a socket already reset by the peer: the counters stay.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), SIOCOUTQ, buf, True)
        outq = buf[0]
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    except (OSError, ValueError):
        return None
    if len(info) < TCP_INFO_BYTES_ACKED + 8:
        # An old kernel: SIOCOUTQ alone; a lone unacknowledged FIN then
        # counts as a byte, which errs towards sending again.
        return outq
    (acked,) = struct.unpack_from("Q", info, TCP_INFO_BYTES_ACKED)
    return max(0, handed - max(0, acked - 1))


@implementer(IHalfCloseableProtocol)
class RawJobProtocol(JobProtocol):
    """Stream one job, half-close, wait for the printer's close.

    States: 'sending' (producer running), 'pjl-end' (all handed to the
    transport, waiting for USTATUS JOB END), 'closing' (our FIN is queued
    or sent; waiting for the printer's).
    """

    def __init__(self, clock, timeout: float, *, data_file, data_size: int,
                 pjl_name: str | None, pjl_copies: int = 1,
                 pjl_end_timeout: float = PJL_END_TIMEOUT, pjl_settings: list[bytes] | None = None) -> None:
        super().__init__(clock, timeout)
        self.data_file, self.data_size = data_file, data_size
        self.pjl_name, self.pjl_copies = pjl_name, pjl_copies
        self.pjl_settings = pjl_settings or []
        self.pjl_end_timeout = pjl_end_timeout
        self.parser = pjl.StatusParser()
        self.state = "connecting"
        self.written = False  # our FIN went out: every byte is with the kernel peer
        self.peer_closed = False
        self.pages: int | None = None
        self.statuses: list[str] = []
        self.bytes_sent = 0
        self.end_reported = False
        self.producer: FileProducer | None = None
        self.handed = 0  # bytes given to the transport (job, PJL header and trailer)
        self.unacknowledged: int | None = None  # measured when the connection ended
        self.reset_after_all = False  # delivered, and the printer then reset
        self._probe: socket.socket | None = None

    def connectionMade(self) -> None:
        self.state = "sending"
        self._probe = _probe_socket(self.transport)
        if self.pjl_name is not None:
            self._write(pjl.header(self.pjl_name, self.pjl_copies, self.pjl_settings))
        self.watch("sending the job (the printer stopped reading)")
        self.producer = FileProducer(self.data_file, self.data_size, self.transport,
                                     progress=self.alive)
        # The producer writes the job itself; count it when it is done.
        self.producer.start().addCallbacks(self._all_handed_over, self._producer_failed)

    def _producer_failed(self, failure) -> None:
        if self.decided:
            return
        if failure.check(ConnectionLost):
            # The transport stopped the file (the printer went away mid-job):
            # connectionLost follows and says why, as PrinterUnavailable.
            return
        self.fail(failure.value)

    def _all_handed_over(self, sent: int) -> None:
        if self.decided:
            return
        self.bytes_sent = sent
        self.handed += sent
        if self.pjl_name is not None:
            self._write(pjl.trailer(self.pjl_name))
            if not self.peer_closed:
                self.state = "pjl-end"
                self.watch("waiting for the PJL job end report", self.pjl_end_timeout)
                return
        self._half_close()

    def _write(self, data: bytes) -> None:
        self.handed += len(data)
        self.transport.write(data)

    def _half_close(self) -> None:
        self.state = "closing"
        self.watch("waiting for the printer to close the connection")
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.decided:
            return
        self.alive()
        for message in self.parser.feed(data):
            self.statuses.append(message.text)
            log.debug("printer status: {text}", text=message.text)
            if (message.category == "JOB" and message.event == "END"
                    and message.name == self.pjl_name):
                self.end_reported = True
                self.pages = message.pages
                if self.state == "pjl-end":
                    self._half_close()

    def timed_out(self, what: str) -> None:
        if self.state == "pjl-end":
            # Everything was accepted; the printer just does not report.
            log.info("no PJL job end report within {t}s; closing", t=self.pjl_end_timeout)
            self._half_close()
        else:
            super().timed_out(what)

    # IHalfCloseableProtocol
    def writeConnectionLost(self) -> None:
        """Our FIN went out after the last byte."""
        self.written = True
        if self.peer_closed:
            self._done()

    def readConnectionLost(self) -> None:
        """The printer closed its side (FIN)."""
        self.peer_closed = True
        if self.decided:
            return
        if self.state == "sending":
            self.fail(PrinterUnavailable(
                f"the printer closed the connection after {self._progress()} of the job",
                REASON_CONNECTING))
        elif self.state == "pjl-end":
            self._half_close()
        elif self.written:
            self._done()

    def _progress(self) -> str:
        sent = self.producer.sent if self.producer is not None else 0
        return f"{sent} of {self.data_size} bytes"

    def _done(self) -> None:
        self.transport.loseConnection()
        self.succeed(self)

    def connectionLost(self, reason=None) -> None:
        # Measure before the last reference to the socket goes: Twisted has
        # closed its own descriptor already, ours keeps the counters.
        probe, self._probe = self._probe, None
        if probe is not None:
            try:
                if self.state in ("pjl-end", "closing"):
                    self.unacknowledged = unacknowledged_bytes(probe, self.handed)
            finally:
                probe.close()
        super().connectionLost(reason)

    def lost(self, reason) -> None:
        if reason.check(ConnectionDone) and self.written and self.state == "closing":
            self.succeed(self)
            return
        if self.state in ("pjl-end", "closing") and self.unacknowledged == 0:
            # Every byte is with the printer: a reset now is its way of
            # hanging up, not a failed delivery (docs/outputs.md).
            self.reset_after_all = True
            log.info("printer reset the connection after acknowledging all {n} bytes: delivered",
                     n=self.handed)
            self.succeed(self)
            return
        missing = ("" if self.unacknowledged is None else
                   f"; {self.unacknowledged} of {self.handed} bytes unacknowledged")
        self.fail(PrinterUnavailable(
            f"connection to the printer lost while {self._waiting_for or self.state}: "
            f"{reason.getErrorMessage()}{missing}", REASON_CONNECTING))


def _probe_socket(transport) -> socket.socket | None:
    """A second descriptor on the transport's TCP socket (non-inheritable,
    so converters never get it), or None for a transport without one."""
    try:
        handle = transport.getHandle()
        if not isinstance(handle, socket.socket) or handle.type != socket.SOCK_STREAM:
            return None
        return handle.dup()
    except (AttributeError, OSError):
        return None


@implementer(IPrinterOutput)
class SocketOutput:
    """Sends each job over its own raw TCP connection."""

    def __init__(self, uri: str, host: str, port: int, *, reactor, pjl: bool = False,
                 timeout: float = SOCKET_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
                 pjl_end_timeout: float = PJL_END_TIMEOUT) -> None:
        self.uri, self.host, self.port, self.reactor = uri, host, port, reactor
        self.pjl, self.timeout, self.connect_timeout = pjl, timeout, connect_timeout
        self.pjl_end_timeout = pjl_end_timeout

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def send(self, job: OutputJob) -> defer.Deferred:
        return defer.ensureDeferred(self._send(job))

    async def _send(self, job: OutputJob) -> OutputResult:
        copies = max(1, job.copies)
        repeat = 1 if self.pjl or job.format in NOT_REPEATABLE else copies
        options = JobOptions.parse(job.options)
        unsaid: list[str] = []
        settings: list[bytes] = []
        if self.pjl:
            settings, unsaid = pjl.job_settings(options)
        else:
            unsaid = list(not_said(job, ("sides", "media", "color"),
                                   "a raw socket printer without PJL (pjl = no) cannot be told it"))
        # Pages are chosen before (Ghostscript); any left here cannot be said.
        unsaid += not_said(job, ("pages",), "a raw socket printer cannot select pages")
        if copies > 1 and repeat == 1 and not self.pjl:
            unsaid.append(f"copies={copies} not applied: {job.format} cannot be repeated on a raw socket "
                          "without PJL; printed once")
        data, size = repeat_reader(job.path, repeat)
        try:
            protocol = RawJobProtocol(
                self.reactor, self.timeout, data_file=data, data_size=size,
                pjl_name=pjl.job_name(job.job_id) if self.pjl else None,
                pjl_copies=copies, pjl_end_timeout=self.pjl_end_timeout, pjl_settings=settings)
            await connect(self.reactor, self.host, self.port, protocol,
                          timeout=self.connect_timeout)
            await protocol.finished
        finally:
            data.close()
        notes = [f"{size} bytes to {self.where}"]
        if copies > 1:
            notes.append(f"{copies} copies " + (
                "as PJL QTY" if self.pjl else
                "sent one after another" if repeat > 1 else
                f"not applied ({job.format} cannot be repeated on a raw socket)"))
        if settings:
            notes.append(" ".join(line.decode("ascii").removeprefix("@PJL SET ") for line in settings))
        if self.pjl:
            notes.append("PJL job end reported" if protocol.end_reported
                         else "no PJL job end report")
            notes += protocol.statuses
        if protocol.reset_after_all:
            acknowledged = "all bytes acknowledged by the printer, which then reset the connection"
        else:
            acknowledged = "all bytes written, connection closed"
        if protocol.end_reported:
            acknowledged += "; the printer reported the job printed"
        return OutputResult(acknowledged=acknowledged, pages=protocol.pages,
                            detail="; ".join(notes), notes=tuple(unsaid))

"""LPD output: an RFC 1179 "receive job" client (``lpd://host[:port]/queue``).

One connection per job::

    -> \\x02queue\\n                          <- \\0
    -> \\x03<size> dfA<nnn><host>\\n          <- \\0
    -> <size bytes of data> \\0               <- \\0
    -> \\x02<size> cfA<nnn><host>\\n          <- \\0
    -> <control file> \\0                     <- \\0   = spooled at the printer

The data file goes first and the control file last, as BSD lpr does: the
control file is what turns received files into a job, so a connection that
dies during a long data transfer leaves nothing half-printed behind
(RFC 1179 allows either order; LPRng accepts both).  Every ack byte is
checked; a non-zero one is a refusal, usually followed by text (LPRng:
"\\x03spool queue for 'x' does not exist ...") that we read until the
server closes.  Copies are one ``l`` line each (print the file as is,
control characters included: binary safe).  RFC 1179 has no words for
the other job options (sides, media, color); the result's notes say they
were not applied (docs/options.md).

A refusal is temporary or permanent (:func:`classify_refusal`,
docs/faults.md).  RFC 1179 only says that a non-zero octet is a refusal;
the servers say more.  LPRng (``lp.h``): 1 ``ACK_STOP_Q`` (no spooling to
the queue now, e.g. a bad command line), 2 ``ACK_RETRY`` (retry later:
spooling disabled, "insufficient file space", job too large, transfer
failed), 3 ``ACK_FAIL`` (the job is refused; also an unknown queue, with
"spool queue for 'x' does not exist").  BSD lpd answers 1 for any error
and 2 for "no space", and its own client retries both.  So: a queue that
does not exist is permanent (PrinterRejected, the job is aborted), so is
LPRng's 3 unless its text says to try later; 1, 2 and any other byte are
temporary (PrinterUnavailable: the job is held and sent again later).

Source port: RFC 1179 says 721-731, and BSD-style servers refuse others.
As root ('auto' or 'privileged') we bind the first free one; these ports
stay in TIME_WAIT a minute after each job, so with 'auto' we fall back to
an ordinary port when all eleven are busy, with 'privileged' the job waits
(PrinterUnavailable).  Not root and 'auto': an ordinary port.
"""

from __future__ import annotations

import os
import random
import re
import socket
from pathlib import Path

from twisted.internet import defer, error
from twisted.logger import Logger
from zope.interface import implementer

from .option_notes import not_said
from .interfaces import (
    REASON_NOT_FOUND,
    REASON_OTHER,
    REASON_SPOOL_FULL,
    REASON_STOPPED,
    IPrinterOutput,
    OutputJob,
    OutputResult,
    PrinterRejected,
    PrinterUnavailable,
    REASON_CONNECTING,
)
from .transfer import CONNECT_TIMEOUT, FileProducer, JobProtocol, connect

LPD_PORT = 515
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    LPD_TIMEOUT,
    REFUSAL_TEXT_MAX,
    HOST_MAX,
    USER_MAX,
    JOB_NAME_MAX,
    SOURCE_NAME_MAX,
)

# After a refusal byte, how long to read the server's explanation.
REFUSAL_TEXT_WAIT = 2.0
# Ack bytes with a meaning beyond "refused" (LPRng's lp.h; BSD lpd agrees on 2).
ACK_STOP_QUEUE = 1  # LPRng: no spooling to this queue now; BSD: any error
ACK_RETRY = 2  # LPRng: retry later (no space, spooling disabled); BSD: no space
ACK_FAIL = 3  # LPRng: job refused (also: unknown queue)
# A refusal's text that names the queue as missing: permanent whatever the byte.
QUEUE_MISSING = re.compile(r"does not exist|unknown printer|unknown queue|no such (?:queue|printer)|"
                           r"bad printer name|illegal char", re.IGNORECASE)
# A refusal's text that says "not now": temporary whatever the byte.
TRY_LATER = re.compile(r"\btry (?:again )?later\b|\btry again\b|\bretry\b|\btemporar|\bdisabled\b|"
                       r"\bbusy\b|\bspace\b|\bfull\b|\btoo (?:large|big)\b|\bexceeds\b", re.IGNORECASE)
NO_ROOM = re.compile(r"\bspace\b|\bfull\b|\btoo (?:large|big)\b|\bexceeds\b", re.IGNORECASE)
PRIVILEGED_PORTS = range(721, 732)  # RFC 1179 section 3.1
SOURCE_PORT_MODES = ("auto", "privileged", "any")

log = Logger()


def classify_refusal(code: int | None, text: str, what: str) -> PrinterUnavailable | PrinterRejected:
    """One LPD refusal -> temporary (hold and retry) or permanent (abort).

    *code* is the ack byte (None: the server sent bytes that are no ack at
    all), *text* its explanation, *what* the sentence for the status mail."""
    reason = f"{what}: {text}"
    if QUEUE_MISSING.search(text):
        return PrinterRejected(reason, REASON_NOT_FOUND)
    if TRY_LATER.search(text):
        return PrinterUnavailable(reason, REASON_SPOOL_FULL if NO_ROOM.search(text) else REASON_STOPPED)
    if code == ACK_FAIL:
        return PrinterRejected(reason, REASON_OTHER)
    if code == ACK_RETRY:
        return PrinterUnavailable(reason, REASON_SPOOL_FULL)
    if code == ACK_STOP_QUEUE:
        return PrinterUnavailable(reason, REASON_STOPPED)
    return PrinterUnavailable(reason, REASON_OTHER)


def control_text(value: str, limit: int) -> bytes:
    """A control-file operand: printable ASCII, no line breaks (a newline
    in a mail subject must not add control lines), at most *limit* bytes."""
    text = "".join(c if " " <= c <= "~" else ("?" if ord(c) > 127 else " ") for c in value)
    return text.strip().encode("ascii")[:limit]


def file_host(host: str) -> bytes:
    """The host part of cfA/dfA names: letters, digits, dot and dash only."""
    clean = re.sub(r"[^A-Za-z0-9.-]", "", host)[:HOST_MAX]
    return (clean or socket.gethostname().split(".")[0][:HOST_MAX] or "phaserlink").encode()


def build_control_file(job: OutputJob, number: int) -> tuple[bytes, bytes, bytes]:
    """Return (control file, data file name, control file name) for *job*
    as job *number* (0-999)."""
    host = file_host(job.host)
    stem = b"A%03d%s" % (number, host)
    data_name, control_name = b"df" + stem, b"cf" + stem
    title = control_text(job.title, JOB_NAME_MAX) or control_text(job.job_id, JOB_NAME_MAX)
    lines = [
        b"H" + control_text(job.host, HOST_MAX),
        b"P" + (control_text(job.user, USER_MAX) or b"nobody"),
        b"J" + title,
        b"N" + title[:SOURCE_NAME_MAX],
    ]
    lines += [b"l" + data_name] * max(1, job.copies)
    lines.append(b"U" + data_name)
    return b"".join(line + b"\n" for line in lines), data_name, control_name


class LPDJobProtocol(JobProtocol):
    """The client side of one "receive job" exchange, as a state machine.

    States name what we wait for: 'queue-ack', 'data-command-ack',
    'data' (streaming), 'data-ack', 'control-command-ack', 'control-ack';
    'refused' collects the server's text after a non-zero ack.
    """

    _STEP = {
        "queue-ack": "the queue to accept a job",
        "data-command-ack": "the data file announcement",
        "data-ack": "the data file",
        "control-command-ack": "the control file announcement",
        "control-ack": "the control file",
    }

    def __init__(self, clock, timeout: float, *, queue: bytes, data_file, data_size: int,
                 data_name: bytes, control: bytes, control_name: bytes, where: str,
                 number: int) -> None:
        super().__init__(clock, timeout)
        self.queue, self.data_file, self.data_size = queue, data_file, data_size
        self.data_name, self.control, self.control_name = data_name, control, control_name
        self.where, self.number = where, number
        self.state = "connecting"
        self.refused_at = ""
        self.refusal_code = b""
        self.refusal = b""

    def connectionMade(self) -> None:
        self._expect("queue-ack", b"\x02" + self.queue + b"\n")

    def _expect(self, state: str, send: bytes) -> None:
        self.state = state
        self.transport.write(send)
        self.watch(f"waiting for lpd to ack {self._STEP[state]}")

    def dataReceived(self, data: bytes) -> None:
        if self.decided or self.state == "closing":
            return  # after the last ack the job is lpd's; nothing can undo that
        if self.state == "refused":
            self._collect_refusal(data)
            return
        self.alive()
        if self.state not in self._STEP or data[:1] != b"\x00" or len(data) > 1:
            # A refusal, or bytes the protocol has no place for (an lpd
            # complaining mid-transfer): read its text, then give up.
            ack, text = (data[:1], data[1:]) if self.state in self._STEP else (b"", data)
            self._refused(ack, text)
            return
        self._acked()

    def _acked(self) -> None:
        if self.state == "queue-ack":
            self._expect("data-command-ack",
                         b"\x03%d %s\n" % (self.data_size, self.data_name))
        elif self.state == "data-command-ack":
            self._send_data()
        elif self.state == "data-ack":
            self._expect("control-command-ack",
                         b"\x02%d %s\n" % (len(self.control), self.control_name))
        elif self.state == "control-command-ack":
            self._expect("control-ack", self.control + b"\x00")
        elif self.state == "control-ack":
            # Spooled.  Close and report once closed: LPRng starts the job
            # only when the client hangs up (it waits for more subcommands).
            self.state = "closing"
            self.watch("closing the connection")
            self.transport.loseConnection()

    def _send_data(self) -> None:
        self.state = "data"
        self.watch("sending the data file (lpd stopped reading)")
        producer = FileProducer(self.data_file, self.data_size, self.transport,
                                progress=self.alive)

        def sent(_: int) -> None:
            if not self.decided:
                self._expect("data-ack", b"\x00")

        producer.start().addCallbacks(sent, self._producer_failed)

    def _producer_failed(self, failure) -> None:
        if not self.decided:
            self.fail(failure.value)

    # --- refusals --------------------------------------------------------

    def _refused(self, ack: bytes, text: bytes) -> None:
        self.refused_at = self.state
        self.refusal_code = ack
        self.state = "refused"
        self.refusal = b""
        self.watch("reading lpd's refusal", REFUSAL_TEXT_WAIT)
        self._collect_refusal(text)

    def _collect_refusal(self, data: bytes) -> None:
        self.refusal += data
        if len(self.refusal) >= REFUSAL_TEXT_MAX:
            self._reject()

    def timed_out(self, what: str) -> None:
        if self.state == "refused":
            self._reject()
        elif self.state == "closing":
            self.transport.abortConnection()  # -> lost() -> succeed
        else:
            super().timed_out(what)

    def lost(self, reason) -> None:
        if self.state == "refused":
            self._reject()
        elif self.state == "closing":
            self.succeed(self.number)  # the last ack came: however it closed, lpd has the job
        else:
            super().lost(reason)

    def _reject(self) -> None:
        text = self.refusal[:REFUSAL_TEXT_MAX].decode("utf-8", "replace")
        text = "".join(c for c in text if c.isprintable() or c.isspace())
        text = " ".join(text.split()) or "no reason given"
        step = self._STEP.get(self.refused_at, "data")
        code = self.refusal_code
        what = (f"refused {step} (ack byte {code[0]:#04x})" if code
                else f"sent unexpected bytes while receiving {step}")
        self.fail(classify_refusal(code[0] if code else None, text, f"lpd on {self.where} {what}"))


@implementer(IPrinterOutput)
class LPDOutput:
    """Sends each job to one LPD queue; see the module docstring."""

    def __init__(self, uri: str, host: str, port: int, queue: str, *, reactor,
                 timeout: float = LPD_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
                 source_port: str = "auto") -> None:
        if source_port not in SOURCE_PORT_MODES:
            raise ValueError(f"source_port must be one of {SOURCE_PORT_MODES}, not {source_port!r}")
        if not queue or any(c in queue for c in "\n\0 \t"):
            raise ValueError(f"bad LPD queue name {queue!r} in {uri}")
        self.uri, self.host, self.port, self.queue = uri, host, port, queue
        self.reactor, self.timeout, self.connect_timeout = reactor, timeout, connect_timeout
        self.source_port = source_port
        self._next_number = random.randrange(1000)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _job_number(self) -> int:
        number, self._next_number = self._next_number, (self._next_number + 1) % 1000
        return number

    def send(self, job: OutputJob) -> defer.Deferred:
        return defer.ensureDeferred(self._send(job))

    async def _send(self, job: OutputJob) -> OutputResult:
        with open(Path(job.path), "rb") as data:
            size = os.fstat(data.fileno()).st_size
            number = self._job_number()
            control, data_name, control_name = build_control_file(job, number)
            protocol = LPDJobProtocol(
                self.reactor, self.timeout, queue=self.queue.encode("utf-8"),
                data_file=data, data_size=size, data_name=data_name, control=control,
                control_name=control_name, where=self.where, number=number)
            local_port = await self._connect(protocol)
            await protocol.finished
        log.info("job {job_id} spooled at lpd queue {queue} on {where} as job {number:03d} "
                 "({size} bytes, {copies} copies)", job_id=job.job_id, queue=self.queue,
                 where=self.where, number=number, size=size, copies=job.copies)
        return OutputResult(
            acknowledged=f"spooled at lpd queue {self.queue} on {self.where} as job {number:03d}",
            pages=None,
            detail=(f"{size} bytes as {data_name.decode()}, {max(1, job.copies)} copies, "
                    f"from local port {local_port}"),
            notes=not_said(job, ("sides", "media", "color", "pages"),
                           "LPD (RFC 1179) has no way to ask for it; printed as the queue is set up"),
        )

    def _privileged(self) -> bool:
        if self.source_port == "privileged":
            return True
        return self.source_port == "auto" and os.geteuid() == 0

    async def _connect(self, protocol: LPDJobProtocol) -> int:
        """Connect, from a privileged port when asked; return the local port."""
        if self._privileged():
            for port in PRIVILEGED_PORTS:
                try:
                    await connect(self.reactor, self.host, self.port, protocol,
                                  timeout=self.connect_timeout, bind_port=port)
                    return port
                except error.ConnectBindError:
                    continue
            if self.source_port == "privileged":
                raise PrinterUnavailable(
                    f"cannot connect to {self.where}: all privileged source ports "
                    f"{PRIVILEGED_PORTS.start}-{PRIVILEGED_PORTS.stop - 1} are busy",
                    REASON_CONNECTING)
            log.info("all privileged source ports busy, connecting to {where} from any port",
                     where=self.where)
        await connect(self.reactor, self.host, self.port, protocol, timeout=self.connect_timeout)
        local = protocol.transport.getHost()
        return getattr(local, "port", 0)

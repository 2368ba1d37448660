"""Fakes for the printer side's unit tests: a site on a task.Clock, a fake
toolkit (simple header-based 'mail'), an output and an outbound queue that
record what they were given."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

from twisted.internet import defer, task
from zope.interface import implementer

from phaserlink import config
from phaserlink.pop3_store.maildir import MaildirStore
from phaserlink.printer.output import IPrinterOutput, OutputResult, PrinterRejected, PrinterUnavailable
from phaserlink.printer.service import PrinterService
from phaserlink.printer.toolkit import MessageFacts, Toolkit, notify_words


class FakeUnprintable(Exception):
    def __init__(self, reason, ipp_reason="document-format-error"):
        super().__init__(reason)
        self.reason, self.ipp_reason = reason, ipp_reason


def _split(path: Path) -> tuple[object, bytes]:
    data = Path(path).read_bytes()
    head, _, body = data.partition(b"\n\n")
    return BytesHeaderParser().parsebytes(head + b"\n\n"), body


def fake_inspect(path: Path) -> MessageFacts:
    h, _ = _split(path)
    partial = None
    if h.get("X-Fake-Partial"):
        pid, n, total = h["X-Fake-Partial"].split()
        partial = (pid, int(n), None if total == "?" else int(total))
    copies = int(h.get("X-PhaserLink-Copies", "1"))
    return MessageFacts(sender=h.get("From"), message_id=h.get("Message-ID"), title=h.get("Subject"),
                        copies=copies, notify=notify_words(h.get("X-PhaserLink-Notify")), partial=partial)


@dataclass
class FakeDoc:
    path: Path
    format: str
    content_type: str
    filename: str | None
    size: int


def fake_extract(message: Path, out_dir: Path) -> list[FakeDoc]:
    h, body = _split(message)
    fmt = h.get("X-Format", "postscript")
    if fmt == "bad":
        raise FakeUnprintable("nothing printable in the message (found: image/png)", "unsupported-document-format")
    out = Path(out_dir) / f"01.{fmt}"
    out.write_bytes(body)
    return [FakeDoc(out, fmt, "application/" + fmt, "doc." + fmt, len(body))]


def fake_reassemble(paths: list[Path], out: Path) -> None:
    """The body of fragment 1 starts with the inner header; bodies concatenate."""
    with open(out, "wb") as f:
        for p in paths:
            f.write(_split(p)[1])


def fake_needs_conversion(fmt: str, accepted) -> str | None:
    if fmt in accepted:
        return None
    if fmt == "pdf" and "postscript" in accepted:
        return "postscript"
    raise FakeUnprintable(f"this printer takes {', '.join(accepted)}; a {fmt} document cannot be converted")


def fake_convert(reactor, src, dst, f, t, **_settings):  # media=, raster=: not used by the fake
    Path(dst).write_bytes(b"%!converted from " + f.encode() + b"\n" + Path(src).read_bytes())
    return defer.succeed(Path(dst))


def fake_report(out, **fields) -> None:
    lines = [f"{k}: {v}" for k, v in sorted(fields.items()) if k != "human_text"]
    out.write(("\n".join(lines) + "\n\n" + fields["human_text"] + "\n").encode())


def fake_toolkit(authserv_id: str | None = None) -> Toolkit:
    """Stands in for default_toolkit (whose argument says whose
    Authentication-Results are ours; the fakes read none)."""
    return Toolkit(inspect=fake_inspect, extract=fake_extract, reassemble=fake_reassemble,
                   needs_conversion=fake_needs_conversion, convert=fake_convert,
                   unprintable=(FakeUnprintable,), write_report=fake_report)


@implementer(IPrinterOutput)
class FakeOutput:
    """mode: ok, down, reject, hang (send returns a Deferred kept in .pending)."""

    def __init__(self, mode: str = "ok"):
        self.uri = "fake:"
        self.mode = mode
        self.sent: list[tuple[object, bytes]] = []  # (OutputJob, data) acknowledged
        self.attempts: list[float] = []
        self.pending: defer.Deferred | None = None
        self.clock = None

    def send(self, job):
        if self.clock is not None:
            self.attempts.append(self.clock.seconds())
        if self.mode == "down":
            return defer.fail(PrinterUnavailable("connection refused", "connecting-to-device"))
        if self.mode == "reject":
            return defer.fail(PrinterRejected("queue does not exist", "destination-uri-failed"))
        data = Path(job.path).read_bytes()
        if self.mode == "hang":
            self.pending = defer.Deferred()
            self.pending_job = (job, data)
            return self.pending
        self.sent.append((job, data))
        return defer.succeed(OutputResult("all bytes written", pages=2))

    def finish(self):
        d, self.pending = self.pending, None
        self.sent.append(self.pending_job)
        d.callback(OutputResult("all bytes written", pages=2))


@dataclass
class Queued:
    mail_from: str
    recipients: list[str]
    data: bytes = b""
    committed: bool = False

    def write(self, data: bytes) -> None:
        self.data += data

    def commit(self) -> str:
        self.committed = True
        return "Q1"

    def commit_in_background(self) -> str:  # the real queue's commit for status mail
        return self.commit()

    def abort(self) -> None:
        pass

    @property
    def text(self) -> str:
        return self.data.decode()

    def field(self, name: str) -> str | None:
        for line in self.text.splitlines():
            if line.startswith(name + ": "):
                return line[len(name) + 2:]
        return None


class FakeQueue:
    def __init__(self):
        self.messages: list[Queued] = []

    def submit(self, mail_from, recipients):
        q = Queued(mail_from, list(recipients))
        self.messages.append(q)
        return q

    def events(self) -> list[str]:
        return [m.field("event") for m in self.messages if m.committed]


PRINTER = """\
[printer:{name}]
sender_auth = none
addresses = {name}@phaserlink.test
output = socket://127.0.0.1:9
allowed_senders = *@example.com
formats = postscript
notify = {notify}
partial_timeout = 1h
delay_notice = {delay_notice}
max_retry_time = {max_retry_time}
copies_max = 10
poll_interval = 60s
"""


def make_site(tmp: Path, names=("lp",), notify="received, printed, errors, delayed, trace",
              delay_notice="60s", max_retry_time="300s") -> config.SiteConfig:
    text = textwrap.dedent(f"""\
        [appliance]
        hostname = phaserlink.test
        spool = {tmp / 'var'}
        smtp_listen = tcp:0
        pop3_listen = tcp:0
        status_sender = postmaster@phaserlink.test
        """)
    for name in names:
        text += "\n" + PRINTER.format(name=name, notify=notify, delay_notice=delay_notice,
                                      max_retry_time=max_retry_time)
    path = tmp / "site.ini"
    path.write_text(text)
    return config.load(path)


def message(sender="alice@example.com", msgid="<m1@example.com>", subject="Report", body=b"%!PS\nshowpage\n",
            **headers) -> bytes:
    lines = [f"From: {sender}", f"Subject: {subject}"]
    if msgid:
        lines.append(f"Message-ID: {msgid}")
    for k, v in headers.items():
        lines.append(f"{k.replace('_', '-')}: {v}")
    return ("\n".join(lines) + "\n\n").encode() + body


@dataclass
class Rig:
    """A PrinterService on a task.Clock over a real Maildir store."""

    tmp: Path
    site: config.SiteConfig
    clock: task.Clock = field(default_factory=task.Clock)
    outputs: dict = field(default_factory=dict)
    queue: FakeQueue = field(default_factory=FakeQueue)
    service: PrinterService | None = None
    store: MaildirStore | None = None

    def start(self, **output_modes) -> "Rig":
        self.store = MaildirStore(self.site.appliance.spool / "mail", list(self.site.printers))
        for name in self.site.printers:
            out = FakeOutput(output_modes.get(name, "ok"))
            out.clock = self.clock
            self.outputs[name] = out
        self.service = PrinterService(self.site, self.store, self.queue, reactor=self.clock,
                                      tools=fake_toolkit(), outputs=self.outputs)
        self.service.startService()
        self.settle()
        return self

    def restart(self, **output_modes) -> "Rig":
        """A new service over the same spool and store (the old one is
        abandoned, as after kill -9)."""
        now = self.clock.seconds()
        self.clock = task.Clock()
        self.clock.advance(now)  # wall-clock time goes on across a restart
        old_queue = self.queue
        self.queue = FakeQueue()
        self.old_queue = old_queue
        return self.start(**output_modes)

    def deliver(self, data: bytes, printer: str = "lp") -> None:
        d = self.store.deliver([printer])
        d.write(data)
        d.commit()
        self.settle()

    def settle(self) -> None:
        for _ in range(5):
            self.clock.advance(0)

    def run_for(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def runner(self, name="lp"):
        return self.service.runners[name]

    def job_dirs(self, name="lp") -> list[Path]:
        root = self.site.appliance.spool / "jobs" / name
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name != "incoming")

    def mailbox(self, name="lp"):
        return self.store.mailbox(name).messages()


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

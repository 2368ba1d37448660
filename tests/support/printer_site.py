"""The site the printer end-to-end tests build around the real appliance
(twistd): its status mail goes to Postfix's smtp-sink (the smarthost),
and each test module adds the printers it needs (real lpd, p910nd,
ippeveprinter, a file: printer).

The modules differ in their printers, not in how the appliance is set up,
mail sent in, status mail read back or everything stopped, so that part
lives here once: a subclass starts its printers, then calls
``configure(sections)`` and ``self.appliance.start()``, and lists its own
clean-ups in ``peer_stops``.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Iterable

import pytest

from support.appliance import Appliance
from support.e2e import SENDER, job_states, printer_idle, wait_until
from support.smtp_sink import SmtpSink


def status_mail_config(sink_port: int) -> str:
    """The appliance's ``appliance_extra`` for status mail to smtp-sink on
    *sink_port*, retried every 1-2 s so that a test never waits long."""
    return f"""\
        smarthost = 127.0.0.1:{sink_port}
        smarthost_tls = none
        status_sender = postmaster@phaserlink.test
        queue_retry_min = 1s
        queue_retry_max = 2s
        """


def crlf(raw: bytes) -> bytes:
    """*raw* with every line ending in CRLF, as on the wire (the appliance
    refuses bare LF)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class PrinterSite:
    """The appliance with status mail to smtp-sink; subclasses add printers."""

    log_tail = 5000  # how much of the appliance's log a failed wait shows
    status_timeout: float = 60  # how long status_text waits by default

    def __init__(self, base: Path) -> None:
        self.sink = SmtpSink(base / "sink")
        self.appliance = Appliance(base / "appliance")
        self.appliance.directory.mkdir()

    def configure(self, sections: str) -> None:
        """Start smtp-sink and give the (unstarted) appliance its status-mail
        settings and printer *sections*; the caller starts it."""
        self.sink.start()
        self.appliance.appliance_extra = status_mail_config(self.sink.port)
        self.appliance.sections = sections

    def peer_stops(self) -> Iterable[Callable[[], object]]:
        """The clean-ups of the printers a subclass started."""
        return ()

    def stop(self) -> None:
        """Stop everything, each clean-up tried even when one before it fails."""
        for stop in (self.appliance.stop, self.sink.stop, *self.peer_stops()):
            try:
                stop()
            except Exception:
                pass

    def log(self) -> str:
        return self.appliance.log()[-self.log_tail:]

    def send(self, msg: EmailMessage) -> None:
        with smtplib.SMTP("127.0.0.1", self.appliance.smtp_port, timeout=30) as smtp:
            smtp.send_message(msg)

    def send_raw(self, to: str, raw: bytes) -> None:
        """*raw* from SENDER to the address *to*, its lines made CRLF."""
        with smtplib.SMTP("127.0.0.1", self.appliance.smtp_port, timeout=30) as smtp:
            smtp.sendmail(SENDER, [to], crlf(raw))

    def status_text(self, needle: str, words: str = "delivered", timeout: float | None = None) -> str:
        """The human text (text/plain part) of the complete status mail whose
        raw text holds *needle* (a Message-ID, a file name) and says *words*."""
        def find():
            for saved in self.sink.messages():
                if not saved.raw.rstrip().endswith(b"--") or needle.encode() not in saved.raw:
                    continue
                for part in saved.message.walk():
                    if part.get_content_type() == "text/plain" and words in part.get_content():
                        return part.get_content()
            return None
        return wait_until(find, self.status_timeout if timeout is None else timeout,
                          f"the status mail about {needle} saying {words!r}", self.log)

    def report_mail(self, message_id: str, event: str, timeout: float = 30):
        """(saved, message, fields) of the complete status mail (parsed by the
        stdlib, not by our own parser) about *message_id* for *event*: the
        message/disposition-notification part's fields as text."""
        def find():
            for saved in self.sink.messages():
                if not saved.raw.rstrip().endswith(b"--"):
                    continue  # smtp-sink is still writing it
                msg = saved.message
                for part in msg.walk():
                    if part.get_content_type() == "message/disposition-notification":
                        inner = part.get_payload(0) if part.is_multipart() else None
                        text = str(inner) if inner is not None else part.get_payload(decode=False)
                        if message_id in text and f"X-PhaserLink-Event: {event}" in text:
                            return saved, msg, text
            return None
        return wait_until(find, timeout, f"the {event} status mail at smtp-sink", self.log)

    def report(self, message_id: str, event: str, timeout: float = 30) -> str:
        """The status mail's notification fields about *message_id* for *event*."""
        return self.report_mail(message_id, event, timeout)[2]

    def held_jobs(self, printer: str, reason: str | None = "printer-stopped") -> list[dict]:
        """*printer*'s jobs in state pending-held (with *reason* among their
        reasons, unless *reason* is None)."""
        return [s for s in job_states(self.appliance, printer).values()
                if s["state"] == "pending-held" and (reason is None or reason in s["reasons"])]

    def wait_held(self, printer: str, timeout: float, what: str = "the job held with printer-stopped",
                  reason: str | None = "printer-stopped") -> list[dict]:
        """Wait until *printer* holds a job (see held_jobs); those jobs."""
        return wait_until(lambda: self.held_jobs(printer, reason), timeout, what, self.log)

    def settle(self, printer: str) -> None:
        wait_until(lambda: printer_idle(self.appliance, printer), 60, f"printer {printer} to be idle", self.log)


def module_site(site_class: type, name: str):
    """A module-scoped ``site`` fixture: one *site_class* (a PrinterSite
    with a ``start``) in a fresh directory *name*, started for all the
    module's tests and stopped after them."""
    @pytest.fixture(scope="module")
    def site(tmp_path_factory):
        s = site_class(tmp_path_factory.mktemp(name))
        try:
            yield s.start()
        finally:
            s.stop()
    return site

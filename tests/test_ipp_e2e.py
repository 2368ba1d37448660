"""The appliance (real twistd) printing over IPP to real peers: ippeveprinter
(cups-ipp-utils) as an IPP Everywhere printer and a private cupsd queue.

- a PDF to a PDF printer arrives byte-identical; the status mail says
  completed with the printer's page count (job-impressions-completed);
- a printer that is down holds the job (printer-stopped) and gets it once
  when it is back;
- kill -9 of the appliance while its IPP job is at the printer: after the
  restart the appliance asks the printer about that job and does not send
  it again (printed once, reported completed);
- a CUPS queue over IPP: the job completes and ``lpstat -W completed -o``
  lists it.
"""

from __future__ import annotations

import os
import signal
import smtplib
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from support.appliance import Appliance
from support.e2e import SENDER, job_states, printer_idle, printer_section, wait_until
from support.ippeveprinter import IppEvePrinter
from support.smtp_sink import SmtpSink

pytestmark = pytest.mark.timeout(120)


def pdf_bytes(pages: int, tag: str, padding: int = 0) -> bytes:
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objs = ["1 0 obj<</Type /Catalog /Pages 2 0 R>>endobj\n",
            f"2 0 obj<</Type /Pages /Kids [{kids}] /Count {pages}>>endobj\n"]
    objs += [f"{3 + i} 0 obj<</Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]>>endobj\n"
             for i in range(pages)]
    return ("%PDF-1.4\n%" + tag + "\n" + "".join(objs) + "%" + "x" * padding
            + "\ntrailer<</Root 1 0 R>>\n%%EOF\n").encode()


def job_mail(printer: str, data: bytes, *, subject: str = "ipp job", message_id: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = f"{printer}@phaserlink.test"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    msg.set_content("Please print the attached file.\n")
    msg.add_attachment(data, maintype="application", subtype="pdf", filename="report.pdf")
    return msg


class Site:
    """The appliance, status mail to smtp-sink, and the IPP printers."""

    def __init__(self, base: Path, printers: dict[str, str]) -> None:
        self.sink = SmtpSink(base / "sink")
        self.appliance = Appliance(base / "appliance")
        self.appliance.directory.mkdir()
        self.printers = printers

    def start(self) -> "Site":
        self.sink.start()
        self.appliance.appliance_extra = f"""\
            smarthost = 127.0.0.1:{self.sink.port}
            smarthost_tls = none
            status_sender = postmaster@phaserlink.test
            queue_retry_min = 1s
            queue_retry_max = 2s
            """
        self.appliance.sections = "".join(printer_section(name, uri, formats="pdf, postscript")
                                          for name, uri in self.printers.items())
        self.appliance.start()
        return self

    def stop(self) -> None:
        for stop in (self.appliance.stop, self.sink.stop):
            try:
                stop()
            except Exception:
                pass

    def log(self) -> str:
        return self.appliance.log()[-6000:]

    def send(self, msg: EmailMessage) -> None:
        with smtplib.SMTP("127.0.0.1", self.appliance.smtp_port, timeout=30) as smtp:
            smtp.send_message(msg)

    def report(self, message_id: str, event: str, timeout: float = 30) -> str:
        """The status mail's notification fields about *message_id* for *event*."""
        def find():
            for saved in self.sink.messages():
                if not saved.raw.rstrip().endswith(b"--"):
                    continue
                for part in saved.message.walk():
                    if part.get_content_type() == "message/disposition-notification":
                        inner = part.get_payload(0) if part.is_multipart() else None
                        text = str(inner) if inner is not None else part.get_payload(decode=False)
                        if message_id in text and f"X-PhaserLink-Event: {event}" in text:
                            return text
            return None
        return wait_until(find, timeout, f"the {event} status mail", self.log)

    def settle(self, printer: str) -> None:
        wait_until(lambda: printer_idle(self.appliance, printer), 60, f"printer {printer} idle", self.log)


@pytest.fixture
def ippeve(tmp_path):
    printers = []

    def start(name: str = "pdf", **kw) -> IppEvePrinter:
        p = IppEvePrinter(tmp_path / f"ippeve-{name}", **kw).start()
        printers.append(p)
        return p

    yield start
    for p in printers:
        p.close()


@pytest.fixture
def site_for(tmp_path):
    sites = []

    def make(printers: dict[str, str]) -> Site:
        s = Site(tmp_path / f"site-{len(sites)}", printers).start()
        sites.append(s)
        return s

    yield make
    for s in sites:
        s.stop()


def test_pdf_to_a_pdf_printer_arrives_byte_identical_and_reports_its_pages(ippeve, site_for):
    printer = ippeve()
    site = site_for({"office": printer.uri})
    data = pdf_bytes(3, "e2e-identical")
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("office", data, message_id=message_id))
    fields = site.report(message_id, "printed")
    assert "X-PhaserLink-Job-State: completed" in fields
    assert "X-PhaserLink-Pages: 3" in fields
    [doc] = printer.documents()
    assert doc.read_bytes() == data
    [state] = job_states(site.appliance, "office").values() or [None]
    assert state is None or state.get("printer_job") is None
    # At start the appliance asked the printer what it takes.
    assert f"printer office: {printer.uri} takes application/octet-stream, application/pdf" in site.appliance.log()


def test_a_printer_that_is_down_holds_the_job_and_prints_it_once_when_back(ippeve, site_for):
    printer = ippeve()
    site = site_for({"office": printer.uri})
    printer.stop()  # SIGTERM: connections refused
    data = pdf_bytes(2, "e2e-down")
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("office", data, message_id=message_id))

    def held():
        return [s for s in job_states(site.appliance, "office").values()
                if s["state"] == "pending-held" and "printer-stopped" in s["reasons"]]

    wait_until(held, 30, "the job held with printer-stopped", site.log)
    printer.start()  # the same port, a fresh spool
    fields = site.report(message_id, "printed", timeout=60)
    assert "X-PhaserLink-Pages: 2" in fields
    assert [d.read_bytes() for d in printer.documents()] == [data]


def test_a_printer_stopped_mid_job_gets_the_job_once_when_back(ippeve, site_for):
    """SIGSTOP while the job is at the printer: polls time out, the job is
    held; after SIGCONT the recorded IPP job id is asked about, not sent again."""
    printer = ippeve(delay=4)
    site = site_for({"office": printer.uri})
    data = pdf_bytes(1, "e2e-sigstop")
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("office", data, message_id=message_id))
    printer.wait_documents(1)
    printer.pause()
    wait_until(lambda: [s for s in job_states(site.appliance, "office").values() if s["state"] == "pending-held"],
               90, "the job held while the printer is frozen", site.log)
    printer.resume()
    fields = site.report(message_id, "printed", timeout=60)
    assert "X-PhaserLink-Job-State: completed" in fields
    assert [d.read_bytes() for d in printer.documents()] == [data]


def test_kill9_after_the_ipp_job_was_created_prints_once(ippeve, site_for):
    printer = ippeve(delay=3)  # the job stays "processing" for 3 s at the printer
    site = site_for({"office": printer.uri})
    data = pdf_bytes(4, "e2e-kill9")
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("office", data, message_id=message_id))

    def recorded():
        return [s for s in job_states(site.appliance, "office").values() if s.get("printer_job")]

    [state] = wait_until(recorded, 30, "the IPP job id in the spool", site.log)
    printer.wait_documents(1)
    os.kill(site.appliance.proc.pid, signal.SIGKILL)
    site.appliance.proc.wait()
    site.appliance.start()
    fields = site.report(message_id, "printed", timeout=60)
    assert "X-PhaserLink-Pages: 4" in fields
    time.sleep(1.0)
    assert [d.read_bytes() for d in printer.documents()] == [data]
    assert f"job {state['printer_job']} from an earlier attempt" in site.appliance.log()


def test_a_cups_queue_over_ipp_completes_and_cups_lists_it(site_for, tmp_path):
    from support.cups import CupsServer, make_cups_directory

    cups = CupsServer(make_cups_directory())
    out = cups.directory / "printed"
    out.mkdir()
    os.chmod(out, 0o777)
    try:
        cups.start()
        backend = cups.backend_dir / "keep"
        backend.write_text("#!/bin/sh\n[ $# -eq 0 ] && { echo 'direct keep \"Unknown\" \"keep\"'; exit 0; }\n"
                           f"cat \"${{6:--}}\" > {out}/job-$1\nexit 0\n")
        backend.chmod(0o744)
        cups.run("lpadmin", "-p", "Q", "-E", "-v", "keep:/")
        site = site_for({"cupsq": f"ipp://127.0.0.1:{cups.port}/printers/Q"})
        data = pdf_bytes(1, "e2e-cups")
        message_id = make_msgid(domain="example.com")
        site.send(job_mail("cupsq", data, subject="Via CUPS", message_id=message_id))
        fields = site.report(message_id, "printed", timeout=60)
        assert "X-PhaserLink-Job-State: completed" in fields
        listed = cups.run("lpstat", "-W", "completed", "-o", "Q").stdout
        assert "Q-1" in listed, listed
        [printed] = list(out.glob("job-*"))
        assert printed.read_bytes() == data
    finally:
        cups.stop()

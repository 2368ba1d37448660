"""End to end, the printer side on real peers (issue 3, "Tests on real
peers"): mail goes into the real appliance (twistd) over SMTP, and comes
out at a real LPRng lpd, a real p910nd, and, as status mail, at Postfix's
smtp-sink.  Ghostscript proves that what reached a printer renders; mpack
makes fragments the way another program does.

One appliance with four printers serves the module:

- ``lp``: LPRng lpd (lpd://), PostScript;
- ``raw``: p910nd (socket://), PostScript only (PDF is converted);
- ``flaky``: another p910nd, stopped and started by a test;
- status mail for every printer goes to smtp-sink (the smarthost).
"""

from __future__ import annotations

import random
import subprocess
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from support.e2e import (
    MARKER,
    SENDER,
    pdf_from_postscript,
    postscript,
    printer_section,
    rendered_text,
    sha256,
    wait_until,
)
from support.lpd import LPRngServer
from support.message_samples import mail_with
from support.p910nd import P910ndPrinter
from support.peers import require_program
from support.printer_site import PrinterSite, module_site

pytestmark = pytest.mark.timeout(180)


class Site(PrinterSite):
    def __init__(self, base: Path):
        self.lpd = LPRngServer(queues=("raw",))
        self.raw = P910ndPrinter()
        self.flaky = P910ndPrinter()
        super().__init__(base)

    def start(self) -> "Site":
        self.lpd.start()
        self.raw.start()
        self.configure(printer_section("lp", self.lpd.uri())
                       + printer_section("raw", self.raw.uri())
                       + printer_section("flaky", self.flaky.uri()))
        self.appliance.start()
        return self

    def peer_stops(self):
        return (self.lpd.cleanup, self.raw.cleanup, self.flaky.cleanup)

    def send(self, msg: EmailMessage | bytes, to: str | None = None) -> None:
        if isinstance(msg, bytes):
            self.send_raw(to, msg)
        else:
            super().send(msg)


site = module_site(Site, "e2e-printer")


def job_mail(printer: str, data: bytes, *, subtype: str = "postscript", filename: str = "job.ps",
             subject: str = "e2e job", message_id: str | None = None) -> EmailMessage:
    """What a mail client sends: a text body and the document attached."""
    return mail_with((data, "application", subtype, filename), sender=SENDER, to=f"{printer}@phaserlink.test",
                     subject=subject, message_id=message_id, body="Please print the attached file.\n")


def test_lprng_lpd_receives_the_job_byte_identical(site):
    data = postscript(size=2 * 1024 * 1024, seed=b"lpd")
    site.lpd.clear_jobs()
    site.send(job_mail("lp", data, subject="Quarterly report"))
    [job] = wait_until(lambda: site.lpd.jobs(), 30, "the job at LPRng", site.log)
    assert sha256(job) == sha256(data)
    args = site.lpd.job_args(job)
    assert args["-n"] == "alice"  # the LPD user is the sender's local part
    assert args["-J"] == "Quarterly report"
    site.settle("lp")
    assert len(site.lpd.jobs()) == 1
    assert site.lpd.spooled() == []


def test_what_reached_p910nd_is_byte_identical_and_renders(site):
    data = postscript(marker=MARKER, size=300_000, seed=b"p910nd")
    site.raw.clear_jobs()
    site.send(job_mail("raw", data))
    [job] = wait_until(lambda: site.raw.jobs(), 30, "the job at p910nd", site.log)
    assert sha256(job) == sha256(data)
    assert MARKER in rendered_text(job)
    site.settle("raw")
    assert len(site.raw.jobs()) == 1


def test_mpack_fragments_in_shuffled_order_reassemble_and_print(site, tmp_path):
    """Debian's mpack splits as another program would (application/octet-
    stream, base64, Content-MD5, ``total`` on every part, no From: of its
    own: sendmail adds the header lines a direct ``mpack ADDRESS`` would
    get, so we add From/To as it does)."""
    mpack = require_program("mpack")
    marker = MARKER + "-MPACK"
    data = postscript(marker=marker, size=400_000, seed=b"mpack")
    source = tmp_path / "drawing.ps"
    source.write_bytes(data)
    subprocess.run([mpack, "-s", "mpack drawing", "-m", "40000", "-o", str(tmp_path / "part"), str(source)],
                   check=True, capture_output=True, timeout=30)
    fragments = sorted(tmp_path.glob("part.*"))
    assert len(fragments) >= 10
    random.Random(20261126).shuffle(fragments)
    assert fragments != sorted(fragments)
    site.raw.clear_jobs()
    for fragment in fragments:
        header = f"From: {SENDER}\nTo: raw@phaserlink.test\n".encode()
        site.send(header + fragment.read_bytes(), to="raw@phaserlink.test")
    [job] = wait_until(lambda: site.raw.jobs(), 30, "the reassembled job at p910nd", site.log)
    assert sha256(job) == sha256(data)
    assert marker in rendered_text(job)
    site.settle("raw")
    assert len(site.raw.jobs()) == 1


def test_pdf_for_a_postscript_printer_arrives_as_postscript_that_renders(site, tmp_path):
    marker = MARKER + "-PDF"
    ps = tmp_path / "source.ps"
    ps.write_bytes(postscript(marker=marker))
    pdf = pdf_from_postscript(ps, tmp_path / "source.pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    site.raw.clear_jobs()
    site.send(job_mail("raw", pdf.read_bytes(), subtype="pdf", filename="letter.pdf"))
    [job] = wait_until(lambda: site.raw.jobs(), 60, "the converted job at p910nd", site.log)
    printed = job.read_bytes()
    assert printed.startswith(b"%!PS"), printed[:40]
    assert b"%PDF-" not in printed[:1024]
    assert marker in rendered_text(job)
    site.settle("raw")


def test_status_mail_at_smtp_sink_is_a_disposition_notification_report(site):
    message_id = make_msgid(domain="example.com")
    data = postscript(marker=MARKER, seed=b"status")
    site.raw.clear_jobs()
    site.send(job_mail("raw", data, subject="Status please", message_id=message_id))
    saved, msg, fields = site.report_mail(message_id, "printed")
    # The envelope: null reverse-path, to the sender only.
    assert saved.mail_from == "" and saved.recipients == [SENDER]
    # RFC 6522 / RFC 8098 as a stock parser sees them.
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    assert msg["Auto-Submitted"].startswith("auto-replied")
    assert msg["To"] == SENDER and msg["In-Reply-To"] == message_id
    human, notification = msg.get_payload()[:2]
    assert human.get_content_type() == "text/plain"
    assert "Status please" in human.get_content()
    assert notification.get_content_type() == "message/disposition-notification"
    assert f"Original-Message-ID: {message_id}" in fields
    assert "Disposition: automatic-action/MDN-sent-automatically; processed" in fields
    assert "X-PhaserLink-Printer: raw" in fields and "X-PhaserLink-Job-State: completed" in fields
    [job] = site.raw.jobs()
    assert job.read_bytes() == data


def test_a_printer_that_is_down_gets_its_job_when_it_comes_back(site):
    """p910nd is not running: the job is held (printer-stopped) and retried
    with back-off; when the printer is started it gets the job, once."""
    data = postscript(marker=MARKER, size=100_000, seed=b"flaky")
    site.flaky.stop()
    site.flaky.clear_jobs()
    site.send(job_mail("flaky", data))

    site.wait_held("flaky", 30)
    assert site.flaky.jobs() == []
    site.flaky.start()
    [job] = wait_until(lambda: site.flaky.jobs(), 30, "the job at the printer once it is back", site.log)
    assert sha256(job) == sha256(data)
    site.settle("flaky")
    assert len(site.flaky.jobs()) == 1

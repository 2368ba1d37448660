"""Job options on real peers (issue 10, "Options"): mail into the real
appliance (twistd) over SMTP, options out at p910nd, LPRng, a file:
printer and ippeveprinter; what a printer cannot do, or may not be asked,
is read in the status mail at smtp-sink.  What reached a printer is
counted and read with Ghostscript.

Printers of the one appliance of this module:

- ``raw``: p910nd (socket://, no PJL), PostScript: pages by Ghostscript;
- ``disk``: a file: printer, PDF: pages by Ghostscript, copies it cannot make;
- ``lp``: LPRng, ``subject_options = yes``: copies as ``l`` lines;
- ``subj`` / ``plain``: the same ippeveprinter, with and without
  ``subject_options``;
- ``forced``: that ippeveprinter again, duplex forced by ``options_default``
  with ``sides`` not in ``options_allowed``;
- ``rast``: a raster-only ippeveprinter (no page-ranges): the pages of a
  PDF are chosen before it becomes PWG raster.
"""

from __future__ import annotations

import re
import subprocess
from email.utils import make_msgid
from pathlib import Path

import pytest
import pytest_twisted

from phaserlink.client import cli
from phaserlink.client.send_command import send_options
from phaserlink.message import build
from phaserlink.printer.output import OutputJob, make_output
from support.e2e import SENDER, phaserlink, printer_section, rendered_text, user_env
from support.ippeveprinter import IppEvePrinter
from support.lpd import LPRngServer
from support.message_samples import mail_with
from support.p910nd import P910ndPrinter
from support.peers import require_program
from support.printer_site import PrinterSite, module_site
from test_ipp_e2e import pdf_bytes

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

THREE_PAGES = b"""%!PS-Adobe-3.0
%%Pages: 3
%%EndComments
/Helvetica findfont 24 scalefont setfont
72 700 moveto (PAGE-ONE) show showpage
72 700 moveto (PAGE-TWO) show showpage
72 700 moveto (PAGE-THREE) show showpage
%%EOF
"""


def pages_of(path: Path) -> int:
    """How many pages Ghostscript prints of *path* (the bbox device says
    one %%BoundingBox per page, for PostScript and PDF alike)."""
    gs = require_program("gs", "ghostscript")
    out = subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=bbox", str(path)],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return len(re.findall(rb"^%%BoundingBox:", out.stderr, re.MULTILINE))


def flags(*argv: str) -> str | None:
    """The X-PhaserLink-Options header ``phaserlink send`` writes for *argv*."""
    return send_options(cli.build_parser().parse_args(["send", "--to", "p", *argv, "f"]))


class Site(PrinterSite):
    def __init__(self, base: Path):
        self.raw = P910ndPrinter()
        self.lpd = LPRngServer(queues=("raw",))
        self.ippeve = IppEvePrinter(base / "ippeve", duplex=True, formats="application/pdf")
        self.raster = IppEvePrinter(base / "ippeve-raster", formats="image/pwg-raster")
        self.disk = base / "disk"
        self.disk.mkdir()
        super().__init__(base)

    def start(self) -> "Site":
        self.raw.start()
        self.lpd.start()
        self.ippeve.start()
        self.raster.start()
        ipp = self.ippeve.uri
        self.configure(
            printer_section("raw", self.raw.uri())
            + printer_section("disk", f"file:{self.disk}", formats="pdf")
            + printer_section("lp", self.lpd.uri(), subject_options="yes")
            + printer_section("subj", ipp, formats="pdf", subject_options="yes")
            + printer_section("plain", ipp, formats="pdf")
            + printer_section("forced", ipp, formats="pdf", options_allowed="copies, pages",
                              options_default="sides=two-sided-long-edge")
            + printer_section("rast", self.raster.uri, formats="pwg-raster"))
        self.appliance.start()
        return self

    def peer_stops(self):
        return (self.lpd.cleanup, self.raw.cleanup, self.ippeve.close, self.raster.close)

    def send(self, to: str, raw: bytes) -> None:
        self.send_raw(f"{to}@phaserlink.test", raw)

    def send_job(self, to: str, data: bytes, fmt: str, *, options: str | None = None, copies: int = 1,
                 title: str = "options test") -> str:
        """A job as ``phaserlink send`` builds it; returns its Message-ID."""
        message_id = make_msgid(domain="example.com")
        path = self.appliance.directory / f"job-{message_id.strip('<>')}.eml"
        ext = {"postscript": "ps"}.get(fmt, fmt)
        source = path.with_suffix("." + ext)
        source.write_bytes(data)
        with open(path, "wb") as out:
            build.write_job_message(out, source, sender=SENDER, recipient=f"{to}@phaserlink.test", title=title,
                                    format=fmt, filename=f"doc.{ext}", job_id=f"j{abs(hash(message_id)) % 10**8}",
                                    copies=copies, message_id=message_id, options=options)
        self.send(to, path.read_bytes())
        return message_id

    def send_mail(self, to: str, subject: str, data: bytes, subtype: str, filename: str) -> str:
        """A plain mail, as a person's mail program sends it."""
        msg = mail_with((data, "application", subtype, filename), sender=SENDER, to=f"{to}@phaserlink.test",
                        subject=subject, body="Please print the attached file.\n")
        self.send(to, msg.as_bytes())
        return msg["Message-ID"]

    def printed_text(self, message_id: str, words: str = "delivered") -> str:
        """The human text of the "printed" status mail about *message_id*
        (or anything else its raw text holds: the file name), or of the one
        with other *words*."""
        return self.status_text(message_id, words)


site = module_site(Site, "job-options")


def test_pages_2_of_a_3_page_postscript_job_prints_one_page_on_a_raw_printer(site, tmp_path):
    """``phaserlink send --pages 2`` as a user runs it, straight to the appliance."""
    site.raw.clear_jobs()
    document = tmp_path / "three.ps"
    document.write_bytes(THREE_PAGES)
    out = phaserlink(user_env(tmp_path / "home"), "send", str(document), "--to", "raw@phaserlink.test",
                     "--from", SENDER, "--server", f"127.0.0.1:{site.appliance.smtp_port}",
                     "--pages", "2", "--sides", "two-sided-long-edge")
    assert out.returncode == 0, out.stdout + out.stderr
    [job] = site.raw.wait_for_jobs(1, timeout=60)
    text = site.printed_text("three.ps")
    assert pages_of(job) == 1
    printed = rendered_text(job)
    assert "PAGE-TWO" in printed and "PAGE-ONE" not in printed and "PAGE-THREE" not in printed
    assert "(1 page)" in text
    # A raw socket without PJL cannot be told duplex: the mail says so.
    assert "sides=two-sided-long-edge not applied: a raw socket printer without PJL" in text, text


def test_pages_past_the_end_of_the_document_are_said_and_nothing_is_printed(site):
    site.raw.clear_jobs()
    message_id = site.send_job("raw", THREE_PAGES, "postscript", options=flags("--pages", "5-6"))
    text = site.printed_text(message_id, "was not printed")
    assert "doc.ps has 3 pages; pages=5-6 selects none of them" in text, text
    site.settle("raw")
    assert site.raw.jobs() == []


def test_pages_of_a_pdf_for_a_raster_printer_are_chosen_before_it_becomes_raster(site):
    before = len(site.raster.documents())
    message_id = site.send_job("rast", pdf_bytes(3, "raster"), "pdf", options=flags("--pages", "2"))
    text = site.printed_text(message_id)
    [doc] = site.raster.wait_documents(before + 1)[before:]
    raster = doc.read_bytes()
    assert raster.startswith(b"RaS2")
    assert raster.count(b"PwgRaster\0") == 1  # one page header: one page
    assert "IPP_PAGE_RANGES" not in site.raster.environment(doc)
    assert "(1 page)" in text


def test_pages_of_a_pdf_to_a_file_printer_and_the_copies_it_cannot_make(site):
    message_id = site.send_job("disk", pdf_bytes(3, "three"), "pdf", options=flags("--pages", "1,3"), copies=2)
    text = site.printed_text(message_id)
    [written] = list(site.disk.glob("*.pdf"))
    assert pages_of(written) == 2
    assert "(2 pages)" in text
    assert "copies=2 not applied: a file: printer writes the document once" in text, text


def test_subject_copies_reach_lprng_as_two_prints_and_duplex_is_said_not_applied(site):
    site.lpd.clear_jobs()
    page = THREE_PAGES.replace(b"%%Pages: 3", b"%%Pages: 1").split(b"72 700 moveto (PAGE-TWO)")[0] + b"%%EOF\n"
    message_id = site.send_mail("lp", "Figures [copies=2] [Duplex]", page, "postscript", "figures.ps")
    text = site.printed_text(message_id)
    jobs = site.lpd.wait_for_jobs(2, timeout=30)
    site.settle("lp")
    assert len(site.lpd.jobs()) == 2  # LPRng ran the filter once per "l" line of the control file
    assert all("PAGE-ONE" in rendered_text(j) for j in jobs)
    assert site.lpd.job_args(jobs[0])["-J"] == "Figures"  # the brackets read are not the title
    assert "sides=two-sided-long-edge not applied: LPD (RFC 1179) has no way to ask for it" in text, text


def test_subject_options_reach_ippeveprinter_only_where_subject_options_is_on(site):
    before = len(site.ippeve.documents())
    subject = "Report [duplex] [copies=2] [pages=1]"
    on = site.send_mail("subj", subject, pdf_bytes(2, "subject-on"), "pdf", "report.pdf")
    site.printed_text(on)
    off = site.send_mail("plain", subject, pdf_bytes(2, "subject-off"), "pdf", "report.pdf")
    site.printed_text(off)
    docs = site.ippeve.wait_documents(before + 2)
    with_options, without = (site.ippeve.environment(d) for d in docs[before:before + 2])
    assert with_options.get("IPP_SIDES") == "two-sided-long-edge"
    assert with_options.get("IPP_COPIES") == "2"
    assert with_options.get("IPP_PAGE_RANGES") == "1-1"
    assert without.get("IPP_SIDES", "one-sided") == "one-sided"
    assert without.get("IPP_COPIES", "1") == "1"
    assert "IPP_PAGE_RANGES" not in without


def test_a_disallowed_option_is_named_in_the_status_mail_and_the_sites_default_applies(site):
    before = len(site.ippeve.documents())
    message_id = site.send_job("forced", pdf_bytes(1, "forced"), "pdf",
                               options=flags("--sides", "one-sided"), copies=2)
    text = site.printed_text(message_id)
    [doc] = site.ippeve.wait_documents(before + 1)[before:]
    env = site.ippeve.environment(doc)
    assert env.get("IPP_SIDES") == "two-sided-long-edge"
    assert env.get("IPP_COPIES") == "2"
    assert ("sides=one-sided is not allowed on this printer; not applied "
            "(printed with sides=two-sided-long-edge)") in text, text


# -- PJL at a real raw printer (output level: p910nd never reports a PJL job end,
# so the appliance would wait the PJL end timeout, minutes, for each job) -------------


@pytest_twisted.ensureDeferred
async def test_pjl_set_lines_reach_p910nd(tmp_path):
    from twisted.internet import reactor

    printer = P910ndPrinter()
    try:
        printer.start()
        data = tmp_path / "job.ps"
        data.write_bytes(THREE_PAGES)
        out = make_output(printer.uri(), reactor=reactor, pjl=True, timeout=1.0)
        result = await out.send(OutputJob(
            path=data, job_id="pjl-1", title="t", user="alice", host="h", copies=2,
            format="application/postscript",
            options="sides=two-sided-short-edge; media=a4; color=monochrome"))
        [captured] = printer.jobs()
        received = captured.read_bytes()
        head = received[:received.index(b"%!PS")]
        assert head == (b'\x1b%-12345X@PJL JOB NAME="phaserlink-pjl-1"\r\n@PJL USTATUS JOB=ON\r\n'
                        b"@PJL SET QTY=2\r\n@PJL SET DUPLEX=ON\r\n@PJL SET BINDING=SHORTEDGE\r\n"
                        b"@PJL SET PAPER=A4\r\n@PJL SET RENDERMODE=GRAYSCALE\r\n")
        assert THREE_PAGES in received
        assert result.notes == ()
    finally:
        printer.cleanup()

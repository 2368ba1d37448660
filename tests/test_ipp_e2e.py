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
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from support.e2e import SENDER, job_states, printer_section, wait_until
from support.ippeveprinter import IppEvePrinter
from support.message_samples import mail_with
from support.printer_site import PrinterSite

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
    return mail_with((data, "application", "pdf", "report.pdf"), sender=SENDER, to=f"{printer}@phaserlink.test",
                     subject=subject, message_id=message_id)


class Site(PrinterSite):
    """The appliance, status mail to smtp-sink, and the IPP printers."""

    log_tail = 6000

    def __init__(self, base: Path, printers: dict[str, str], formats: str | None = "pdf, postscript") -> None:
        super().__init__(base)
        self.printers = printers
        self.formats = formats  # None: no formats key, what the IPP printer says

    def start(self) -> "Site":
        self.configure("".join(printer_section(name, uri, formats=self.formats)
                               for name, uri in self.printers.items()))
        self.appliance.start()
        return self


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

    def make(printers: dict[str, str], **kw) -> Site:
        s = Site(tmp_path / f"site-{len(sites)}", printers, **kw).start()
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

    site.wait_held("office", 30)
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
    site.wait_held("office", 90, "the job held while the printer is frozen", reason=None)
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


@pytest.fixture
def cups_queue():
    """A private cupsd with the queue Q, whose backend keeps each job it
    gets as a file job-ID in ``cups.printed``."""
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
        cups.printed = out
        yield cups
    finally:
        cups.stop()


def test_a_cups_queue_over_ipp_completes_and_cups_lists_it(site_for, cups_queue):
    cups = cups_queue
    site = site_for({"cupsq": f"ipp://127.0.0.1:{cups.port}/printers/Q"})
    data = pdf_bytes(1, "e2e-cups")
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("cupsq", data, subject="Via CUPS", message_id=message_id))
    fields = site.report(message_id, "printed", timeout=60)
    assert "X-PhaserLink-Job-State: completed" in fields
    listed = cups.run("lpstat", "-W", "completed", "-o", "Q").stdout
    assert "Q-1" in listed, listed
    [printed] = list(cups.printed.glob("job-*"))
    assert printed.read_bytes() == data


# -- the printer says what it takes (no formats key): PDF through, raster made for it, photos on its media --


def rendered_pdf(directory: Path, pages: int, tag: str) -> bytes:
    """A PDF with text on each page, made by Ghostscript (what a raster printer must render)."""
    import subprocess

    from support.peers import require_program

    gs = require_program("gs", "ghostscript")
    ps = directory / f"{tag}.ps"
    ps.write_text("%!PS-Adobe-3.0\n" + "".join(
        f"/Helvetica findfont 36 scalefont setfont 72 700 moveto ({tag} page {i + 1}) show showpage\n"
        for i in range(pages)))
    pdf = directory / f"{tag}.pdf"
    subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", f"-sOutputFile={pdf}",
                    str(ps)], check=True)
    return pdf.read_bytes()


def attachment_mail(printer: str, data: bytes, maintype: str, subtype: str, filename: str, *,
                    message_id: str, options: str | None = None) -> EmailMessage:
    return mail_with((data, maintype, subtype, filename), sender=SENDER, to=f"{printer}@phaserlink.test",
                     subject=f"{filename} to {printer}", message_id=message_id,
                     headers={"X-PhaserLink-Options": options} if options else None)


@pytest.mark.parametrize("mime, kind, dpi, colour", [
    ("image/pwg-raster", "pwg", (300, 300), "sgray_8"),  # it lists 300dpi,600dpi and black_1,sgray_8
    ("image/urf", "urf", (600, 600), "W8"),  # it says RS600, W8
])
def test_a_raster_only_printer_gets_raster_it_lists_and_completes_the_job(ippeve, site_for, tmp_path, mime, kind,
                                                                          dpi, colour):
    """No formats key: the appliance asks the printer, which takes only
    raster, and Ghostscript makes it at a resolution and in a colour space
    the printer listed; the printer's own completion command decodes every
    page (support/raster.py) and would abort the job otherwise."""
    from support.raster import pwg_pages, urf_pages

    printer = ippeve(kind, formats=mime)
    site = site_for({"raster": printer.uri}, formats=None)
    data = rendered_pdf(tmp_path, 2, f"raster-{kind}")
    message_id = make_msgid(domain="example.com")
    site.send(attachment_mail("raster", data, "application", "pdf", "report.pdf", message_id=message_id))
    fields = site.report(message_id, "printed", timeout=60)
    assert "X-PhaserLink-Job-State: completed" in fields
    assert "X-PhaserLink-Pages: 2" in fields
    [doc] = printer.documents()
    pages = (pwg_pages if kind == "pwg" else urf_pages)(doc)
    assert [(p.dpi, p.kind) for p in pages] == [(dpi, colour)] * 2
    # The A4 pages are fitted to the printer's media-default, US letter (8.5 x 11 in).
    assert [p.size for p in pages] == [(round(8.5 * dpi[0]), round(11 * dpi[1]))] * 2
    if kind == "pwg":
        assert pages[0].page_size == (612, 792)
    made = kind.replace("pwg", "pwg-raster")
    assert f"printer raster: documents are made into {made}" in site.appliance.log()  # said at start
    assert f"the printer takes {made}; pictures on letter" in site.appliance.log()  # and asked for the job


def test_pdf_goes_straight_through_to_a_printer_that_says_it_takes_pdf(ippeve, site_for, tmp_path):
    printer = ippeve("pdfonly", formats="application/pdf")
    site = site_for({"office": printer.uri}, formats=None)
    data = rendered_pdf(tmp_path, 3, "straight")
    message_id = make_msgid(domain="example.com")
    site.send(attachment_mail("office", data, "application", "pdf", "report.pdf", message_id=message_id))
    fields = site.report(message_id, "printed", timeout=60)
    assert "X-PhaserLink-Pages: 3" in fields
    assert [d.read_bytes() for d in printer.documents()] == [data]


def test_a_photo_is_fitted_to_the_printers_media_default_or_the_jobs_media(ippeve, site_for, tmp_path):
    """ippeveprinter's media-default is na_letter_8.5x11in: a photo becomes a
    letter page there, and an A4 page when the job asks for a4 (it lists A4)."""
    import io
    import subprocess

    from PIL import Image
    from support.peers import require_program

    pdfinfo = require_program("pdfinfo", "poppler-utils")
    out = io.BytesIO()
    Image.new("RGB", (1200, 1600), (200, 30, 30)).save(out, "JPEG")
    printer = ippeve("letter", formats="application/pdf")
    site = site_for({"photo": printer.uri}, formats=None)
    sizes = []
    for n, options in enumerate((None, "media=a4")):
        message_id = make_msgid(domain="example.com")
        site.send(attachment_mail("photo", out.getvalue(), "image", "jpeg", "photo.jpg", message_id=message_id,
                                  options=options))
        site.report(message_id, "printed", timeout=60)
        doc = printer.wait_documents(n + 1)[n]
        info = subprocess.run([pdfinfo, str(doc)], capture_output=True, text=True, check=True).stdout
        sizes.append(next(line.split(":", 1)[1].split("pts")[0].strip()
                          for line in info.splitlines() if line.startswith("Page size")))
    assert sizes == ["612 x 792", "595.28 x 841.89"], sizes


def test_formats_that_allow_nothing_the_printer_takes_hold_the_job_and_say_so(ippeve, site_for, tmp_path):
    """formats restricts what the printer says; sharing nothing is a site.ini
    to fix: said at start, and the job waits (held) instead of being lost."""
    printer = ippeve("mismatch", formats="image/pwg-raster")
    site = site_for({"strict": printer.uri}, formats="postscript")
    wait_until(lambda: "allow none of them" in site.appliance.log(), 30, "the error at start", site.log)
    message_id = make_msgid(domain="example.com")
    site.send(attachment_mail("strict", rendered_pdf(tmp_path, 1, "mismatch"), "application", "pdf", "r.pdf",
                              message_id=message_id))

    [state] = site.wait_held("strict", 30, "the job held")
    assert "says it takes pwg-raster, but its formats in site.ini (postscript) allow none" in state["detail"]
    assert printer.documents() == []

"""Acceptance (issue 10, "Tests on real peers"): photos and Office documents
mailed to the real appliance (twistd), printed at real printers, and what
reached each printer read back the way a person would check it.

- ``office``: ippeveprinter taking only PDF (``-f application/pdf``, ``-2``
  for duplex), ``-k`` keeping every document it received;
- ``laser``: p910nd as a raw 9100 PostScript printer.

Checked on the bytes the printer got (not on the appliance's spool): a JPEG
whose EXIF orientation is 6 is one portrait page (rendered by Ghostscript,
at both printers); a HEIC is one page; a 3-page TIFF is 3 pages; a .docx,
.xlsx, .pptx and .odt made here by LibreOffice print, and ``pdftotext`` of
what reached the printer holds each document's text; ``phaserlink send
--sides two-sided-long-edge --copies 2`` (the command a user runs) reaches
ippeveprinter as ``sides`` and ``copies``.  Status mail (at smtp-sink) says
printed with the page count.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from support.e2e import SENDER, phaserlink, printer_section, user_env, wait_until
from support.ippeveprinter import IppEvePrinter
from support.message_samples import mail_with
from support.p910nd import P910ndPrinter
from support.peers import require_program
from support.printer_site import PrinterSite, module_site
from test_convert_e2e import MARKER, jpeg_rotated_6, office_document
from test_ipp_e2e import pdf_bytes

pytestmark = [pytest.mark.peer, pytest.mark.timeout(240)]


class Site(PrinterSite):
    """The appliance, its two printers and the status-mail sink."""

    status_timeout = 90  # LibreOffice and Ghostscript take their time

    def __init__(self, base: Path) -> None:
        self.base = base
        self.ipp = IppEvePrinter(base / "ippeve", formats="application/pdf", duplex=True)
        self.raw = P910ndPrinter()
        super().__init__(base)

    def start(self) -> "Site":
        self.ipp.start()
        self.raw.start()
        self.configure(printer_section("office", self.ipp.uri, formats="pdf")
                       + printer_section("laser", self.raw.uri(), formats="postscript")
                       + printer_section("capped", self.ipp.uri, formats="pdf", max_pages_per_job="2"))
        from support.console_http import console_config

        self.admin_port = console_config(self.appliance)
        self.appliance.start()
        return self

    def peer_stops(self):
        return (self.ipp.close, self.raw.cleanup)

    def mail(self, to: str, *attachments: tuple[bytes, str, str, str], subject: str = "Please print") -> str:
        """A plain mail with *attachments* as a phone or mail program sends
        it; returns its Message-ID."""
        msg = mail_with(*attachments, sender=SENDER, to=f"{to}@phaserlink.test", subject=subject,
                        body="Please print the attached.\n")
        self.send(msg)
        return msg["Message-ID"]

    def new_ipp_document(self, before: int) -> Path:
        docs = self.ipp.wait_documents(before + 1, timeout=90)
        assert len(docs) == before + 1, docs
        return docs[-1]


site = module_site(Site, "accept-formats")


def render(path: Path, tmp: Path) -> list[tuple[int, int]]:
    """Each page's (width, height) as Ghostscript renders *path* at 10 dpi."""
    from PIL import Image

    gs = require_program("gs", "ghostscript")
    out = tmp / f"render-{path.name}"
    out.mkdir()
    subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=png16m", "-r10",
                    f"-sOutputFile={out}/p%03d.png", str(path)], check=True, capture_output=True, timeout=120)
    sizes = []
    for png in sorted(out.iterdir()):
        with Image.open(png) as im:
            sizes.append(im.size)
    return sizes


def pages_said(text: str) -> int:
    found = re.search(r"\((\d+) pages?\)", text)
    assert found, text
    return int(found.group(1))


def test_a_jpeg_with_exif_orientation_6_prints_as_one_portrait_page_at_an_ipp_pdf_printer(site, tmp_path):
    before = len(site.ipp.documents())
    message_id = site.mail("office", (jpeg_rotated_6(1200, 800), "image", "jpeg", "IMG_0001.JPG"))
    text = site.status_text(message_id)
    doc = site.new_ipp_document(before)
    assert doc.read_bytes().startswith(b"%PDF")
    [(w, h)] = render(doc, tmp_path)
    assert h > w, (w, h)  # portrait, as the phone showed it
    assert pages_said(text) == 1


def test_a_jpeg_with_exif_orientation_6_prints_as_one_portrait_page_at_a_postscript_printer(site, tmp_path):
    site.raw.clear_jobs()
    message_id = site.mail("laser", (jpeg_rotated_6(1600, 900), "image", "jpeg", "IMG_0002.JPG"))
    text = site.status_text(message_id)
    [job] = site.raw.wait_for_jobs(1, timeout=60)
    assert job.read_bytes().lstrip(b"\x04").startswith((b"%!", b"\x1b%-12345X"))
    [(w, h)] = render(job, tmp_path)
    assert h > w, (w, h)
    assert pages_said(text) == 1


def test_a_heic_photo_prints_as_one_page(site, tmp_path):
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    heic = io.BytesIO()
    Image.new("RGB", (480, 640), "blue").save(heic, "HEIF")
    assert heic.getvalue()[4:8] == b"ftyp"
    before = len(site.ipp.documents())
    message_id = site.mail("office", (heic.getvalue(), "image", "heic", "IMG_0003.HEIC"))
    text = site.status_text(message_id)
    doc = site.new_ipp_document(before)
    [(w, h)] = render(doc, tmp_path)
    assert h > w, (w, h)
    assert pages_said(text) == 1


def test_a_three_page_tiff_gives_three_pages_at_the_printer(site, tmp_path):
    from PIL import Image

    tiff = io.BytesIO()
    frames = [Image.new("L", (200, 300), v) for v in (0, 128, 255)]
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:])
    before = len(site.ipp.documents())
    message_id = site.mail("office", (tiff.getvalue(), "image", "tiff", "fax.tif"), subject="fax-3")
    text = site.status_text(message_id)
    doc = site.new_ipp_document(before)
    assert len(render(doc, tmp_path)) == 3
    assert pages_said(text) == 3
    # The job record (the console's JSON API) keeps the count too.
    from support.console_http import jobs

    [record] = wait_until(lambda: [j for j in jobs(site.admin_port, printer="office") if j["title"] == "fax-3"
                                   and j["state"] == "completed"], 30, "the job record", site.log)
    assert record["pages"] == 3, record


def test_the_page_cap_counts_the_pages_of_a_converted_picture(site, tmp_path):
    """max_pages_per_job = 2 and a 3-page TIFF: counted before it is sent,
    refused with the count and the cap, nothing at the printer."""
    from PIL import Image

    tiff = io.BytesIO()
    frames = [Image.new("L", (200, 300), v) for v in (0, 128, 255)]
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:])
    before = len(site.ipp.documents())
    message_id = site.mail("capped", (tiff.getvalue(), "image", "tiff", "long-fax.tif"))
    text = site.status_text(message_id, words="the job has 3 pages")
    assert "prints at most 2 pages per job" in text, text
    assert len(site.ipp.documents()) == before


def test_several_photos_in_one_mail_are_one_job_of_several_pages(site, tmp_path):
    before = len(site.ipp.documents())
    message_id = site.mail("office", (jpeg_rotated_6(600, 400), "image", "jpeg", "a.jpg"),
                           (jpeg_rotated_6(640, 480), "image", "jpeg", "b.jpg"))
    text = site.status_text(message_id)
    doc = site.new_ipp_document(before)
    assert len(render(doc, tmp_path)) == 2
    assert pages_said(text) == 2
    assert len(site.ipp.documents()) == before + 1  # one document, not two jobs


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx", "odt"])
def test_an_office_document_prints_and_pdftotext_of_what_reached_the_printer_has_its_text(site, tmp_path, kind):
    soffice = require_program("soffice", "libreoffice-writer-nogui")
    pdftotext = require_program("pdftotext", "poppler-utils")
    marker = f"{MARKER}{kind}"
    data = office_document(soffice, tmp_path, kind, marker)
    before = len(site.ipp.documents())
    # Labelled as many mail programs do; the bytes and the name say what it is.
    message_id = site.mail("office", (data, "application", "octet-stream", f"report.{kind}"))
    text = site.status_text(message_id, timeout=150)
    doc = site.new_ipp_document(before)
    assert doc.read_bytes().startswith(b"%PDF")
    printed = subprocess.run([pdftotext, str(doc), "-"], check=True, capture_output=True, timeout=60).stdout.decode()
    assert marker in printed, printed[:500]
    assert pages_said(text) >= 1


def test_phaserlink_send_sides_and_copies_reach_ippeveprinter_as_sides_and_copies(site, tmp_path):
    document = tmp_path / "minutes.pdf"
    document.write_bytes(pdf_bytes(2, "accept-sides-copies"))
    before = len(site.ipp.documents())
    out = phaserlink(user_env(tmp_path / "home"), "send", str(document), "--to", "office@phaserlink.test",
                     "--from", SENDER, "--server", f"127.0.0.1:{site.appliance.smtp_port}",
                     "--sides", "two-sided-long-edge", "--copies", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    site.status_text("minutes.pdf")
    doc = site.new_ipp_document(before)
    env = site.ipp.environment(doc)
    assert env.get("IPP_SIDES") == "two-sided-long-edge", env
    assert env.get("IPP_COPIES") == "2", env
    assert doc.read_bytes() == document.read_bytes()


def legacy_office_document(soffice: str, tmp: Path, kind: str, text: str) -> bytes:
    """A .doc (Word 97) or .xls made by LibreOffice: an OLE2 file whose head
    alone does not say which kind it is."""
    src_dir = tmp / f"make-{kind}"
    src_dir.mkdir()
    if kind == "xls":
        src, target = src_dir / "doc.csv", "xls:MS Excel 97"
        src.write_text(f"name,value\n{text},42\n")
    else:
        src, target = src_dir / "doc.txt", "doc:MS Word 97"
        src.write_text(f"Dear printer,\n{text}\n")
    subprocess.run([soffice, f"-env:UserInstallation=file://{src_dir}/profile", "--headless",
                    "--convert-to", target, "--outdir", str(src_dir), str(src)],
                   check=True, capture_output=True, timeout=90)
    data = (src_dir / f"doc.{kind}").read_bytes()
    assert data.startswith(b"\xd0\xcf\x11\xe0")
    return data


@pytest.mark.parametrize("kind", ["doc", "xls"])
def test_phaserlink_send_prints_an_old_office_file_and_a_photo(site, tmp_path, kind):
    """What a user runs: ``phaserlink send letter.doc`` (the client tells
    the Office kind by the file's name, as the appliance does) and
    ``phaserlink send --type`` naming any format the appliance prints from."""
    soffice = require_program("soffice", "libreoffice-writer-nogui")
    pdftotext = require_program("pdftotext", "poppler-utils")
    marker = f"{MARKER}{kind}send"
    document = tmp_path / f"letter.{kind}"
    document.write_bytes(legacy_office_document(soffice, tmp_path, kind, marker))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_rotated_6(600, 400))
    env = user_env(tmp_path / "home")
    server = f"127.0.0.1:{site.appliance.smtp_port}"
    before = len(site.ipp.documents())
    out = phaserlink(env, "send", str(document), "--to", "office@phaserlink.test", "--from", SENDER,
                     "--server", server)
    assert out.returncode == 0, out.stdout + out.stderr
    text = site.status_text(document.name, timeout=150)
    doc = site.new_ipp_document(before)
    printed = subprocess.run([pdftotext, str(doc), "-"], check=True, capture_output=True, timeout=60).stdout.decode()
    assert marker in printed, printed[:500]
    assert pages_said(text) >= 1

    with open(photo, "rb") as stdin:  # from a pipe: only --type says what it is
        out = subprocess.run([sys.executable, "-m", "phaserlink.client.cli", "send", "-", "--type", "jpeg",
                              "--title", f"photo-{kind}", "--to", "office@phaserlink.test", "--from", SENDER,
                              "--server", server], env=env, stdin=stdin, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    site.status_text(f"photo-{kind}")
    doc = site.new_ipp_document(before + 1)
    [(w, h)] = render(doc, tmp_path)
    assert h > w, (w, h)


def test_an_html_only_mail_prints_as_the_page_it_shows_without_fetching_remote_content(site, tmp_path):
    """An order confirmation: HTML only, with a remote image and a style
    sheet on a local port that counts every connection: none is made."""
    import socket
    import threading

    require_program("chromium", "chromium")
    pdftotext = require_program("pdftotext", "poppler-utils")
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.settimeout(0.2)
    hits: list[int] = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            try:
                conn, _ = trap.accept()
                hits.append(1)
                conn.close()
            except OSError:
                continue

    watcher = threading.Thread(target=count, daemon=True)
    watcher.start()
    port = trap.getsockname()[1]
    marker = f"{MARKER}order"
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "office@phaserlink.test"
    msg["Subject"] = "Your order"
    msg["Message-ID"] = message_id = make_msgid(domain="example.com")
    msg.set_content(f"<html><head><link rel=stylesheet href='http://127.0.0.1:{port}/s.css'></head><body>"
                    f"<h1>Order {marker}</h1><img src='http://127.0.0.1:{port}/logo.png'>"
                    "<p>Thank you.</p></body></html>", subtype="html")
    before = len(site.ipp.documents())
    try:
        site.send(msg)
        text = site.status_text(message_id, timeout=120)
        doc = site.new_ipp_document(before)
    finally:
        stop.set()
        watcher.join(2)
        trap.close()
    printed = subprocess.run([pdftotext, str(doc), "-"], check=True, capture_output=True, timeout=60).stdout.decode()
    assert f"Order {marker}" in printed and "<h1>" not in printed, printed[:500]
    assert hits == []  # no converter fetched anything
    assert pages_said(text) == 1


@pytest.mark.parametrize("name, data, subtype", [
    ("broken.docx", b"PK\x03\x04" + b"word/document.xml" + bytes(range(256)) * 8, "octet-stream"),
    ("broken.jpg", b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20, "octet-stream"),
])
def test_a_file_the_converter_cannot_read_aborts_the_job_with_document_format_error_and_its_words(
        site, name, data, subtype):
    before = len(site.ipp.documents())
    message_id = site.mail("office", (data, "application", subtype, name))
    text = site.status_text(message_id, words="was not printed", timeout=150)
    assert name in text, text
    raw = b"".join(m.raw for m in site.sink.messages() if message_id.encode() in m.raw)
    assert b"document-format-error" in raw, raw[-2000:]
    assert len(site.ipp.documents()) == before


def path_without(bin_dir: Path, *names: str) -> Path:
    """*bin_dir* made to hold a link to every program on PATH except *names*
    (the first of each name wins, as on PATH): set as PATH, those programs
    are missing and everything else is found."""
    bin_dir.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name in names or (bin_dir / entry.name).exists():
                continue
            (bin_dir / entry.name).symlink_to(entry.path)
    return bin_dir


def test_without_libreoffice_an_office_document_gets_document_format_error_saying_so(tmp_path, monkeypatch):
    """A site without LibreOffice: the appliance runs with a PATH holding
    every program of this machine but soffice/libreoffice; a mailed .docx
    fails with document-format-error and words naming LibreOffice, and a
    PDF still prints."""
    soffice = require_program("soffice", "libreoffice-writer-nogui")
    bin_dir = path_without(tmp_path / "bin-without-libreoffice", "soffice", "libreoffice", "loffice")
    docx = office_document(soffice, tmp_path, "docx", f"{MARKER}nolo")
    monkeypatch.setenv("PATH", str(bin_dir))
    site = Site(tmp_path / "site")
    try:
        site.start()
        message_id = site.mail("office", (docx, "application", "octet-stream", "minutes.docx"))
        text = site.status_text(message_id, words="was not printed")
        assert "LibreOffice is not installed" in text, text
        raw = b"".join(m.raw for m in site.sink.messages() if message_id.encode() in m.raw)
        assert b"document-format-error" in raw
        message_id = site.mail("office", (pdf_bytes(1, "still-prints"), "application", "pdf", "ok.pdf"))
        site.status_text(message_id)
        assert len(site.ipp.documents()) == 1
    finally:
        site.stop()


def test_a_missing_ghostscript_holds_the_job_and_it_prints_once_when_installed(tmp_path, monkeypatch):
    """A PDF for a PostScript printer while Ghostscript (and Poppler's
    pdftops, which goes first) are missing from the appliance's PATH: a
    temporary fault, the job is held (not lost, not aborted); once gs is
    back on the PATH the retry prints it once, through Ghostscript."""
    gs = require_program("gs", "ghostscript")
    bin_dir = path_without(tmp_path / "bin-without-gs", "gs", "pdftops")
    monkeypatch.setenv("PATH", str(bin_dir))
    site = Site(tmp_path / "site")
    try:
        site.start()
        site.raw.clear_jobs()
        message_id = site.mail("laser", (pdf_bytes(2, "no-gs-yet"), "application", "pdf", "later.pdf"))

        [state] = site.wait_held("laser", 60, "the job held while Ghostscript is missing", reason=None)
        assert "Ghostscript" in site.appliance.log() and "not installed" in site.appliance.log()
        assert site.raw.jobs() == []
        (bin_dir / "gs").symlink_to(gs)
        text = site.status_text(message_id, timeout=120)
        [job] = site.raw.wait_for_jobs(1, timeout=30)
        assert job.read_bytes().lstrip(b"\x04").startswith((b"%!", b"\x1b%-12345X"))
        assert pages_said(text) == 2
        time.sleep(1)
        assert len(site.raw.jobs()) == 1
        failed = [m for m in site.sink.messages() if message_id.encode() in m.raw and b"was not printed" in m.raw]
        assert failed == []
    finally:
        site.stop()


OTHER_OFFICE = {  # kind -> (source file, its text, LibreOffice's --convert-to)
    "ods": ("doc.csv", "name,value\n{text},42\n", "ods"),
    "odp": ("doc.fodp", None, "odp"),
    "rtf": ("doc.txt", "Dear printer,\n{text}\n", "rtf"),
    "ppt": ("doc.fodp", None, "ppt:MS PowerPoint 97"),
}


@pytest.mark.parametrize("kind", sorted(OTHER_OFFICE))
def test_the_other_office_formats_print_with_their_text(site, tmp_path, kind):
    """.ods, .odp, .rtf and .ppt (made here by LibreOffice), mailed with
    their names, print at the PDF printer with their text."""
    from test_convert_e2e import FODP

    soffice = require_program("soffice", "libreoffice-writer-nogui")
    pdftotext = require_program("pdftotext", "poppler-utils")
    marker = f"{MARKER}{kind}"
    name, text, target = OTHER_OFFICE[kind]
    src_dir = tmp_path / f"make-{kind}"
    src_dir.mkdir()
    (src_dir / name).write_text(FODP.format(text=marker) if text is None else text.format(text=marker))
    subprocess.run([soffice, f"-env:UserInstallation=file://{src_dir}/profile", "--headless", "--convert-to",
                    target, "--outdir", str(src_dir), str(src_dir / name)], check=True, capture_output=True,
                   timeout=90)
    data = (src_dir / f"doc.{kind}").read_bytes()
    before = len(site.ipp.documents())
    message_id = site.mail("office", (data, "application", "octet-stream", f"report.{kind}"))
    said = site.status_text(message_id, timeout=150)
    doc = site.new_ipp_document(before)
    printed = subprocess.run([pdftotext, str(doc), "-"], check=True, capture_output=True, timeout=60).stdout.decode()
    assert marker in printed, printed[:500]
    assert pages_said(said) >= 1


@pytest.mark.parametrize("fmt, subtype", [("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp")])
def test_png_gif_and_webp_photos_print_as_one_portrait_page(site, tmp_path, fmt, subtype):
    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (300, 500), "green").save(picture, fmt)
    before = len(site.ipp.documents())
    message_id = site.mail("office", (picture.getvalue(), "image", subtype, f"picture.{subtype}"))
    text = site.status_text(message_id)
    doc = site.new_ipp_document(before)
    [(w, h)] = render(doc, tmp_path)
    assert h > w, (w, h)
    assert pages_said(text) == 1


def test_phaserlink_send_media_monochrome_and_pages_reach_ippeveprinter_as_ipp_attributes(site, tmp_path):
    document = tmp_path / "letter.pdf"
    document.write_bytes(pdf_bytes(3, "accept-media-mono"))
    before = len(site.ipp.documents())
    out = phaserlink(user_env(tmp_path / "home"), "send", str(document), "--to", "office@phaserlink.test",
                     "--from", SENDER, "--server", f"127.0.0.1:{site.appliance.smtp_port}",
                     "--media", "letter", "--monochrome", "--pages", "2-3")
    assert out.returncode == 0, out.stdout + out.stderr
    text = site.status_text("letter.pdf")
    doc = site.new_ipp_document(before)
    env = site.ipp.environment(doc)
    assert env.get("IPP_MEDIA") == "na_letter_8.5x11in", env
    assert env.get("IPP_PRINT_COLOR_MODE") == "monochrome", env
    assert env.get("IPP_PAGE_RANGES") == "2-3", env
    assert "not applied" not in text, text


def test_the_appliance_stays_responsive_while_libreoffice_converts(site, tmp_path):
    """A long .docx to one printer, then a small PostScript job to another:
    the PostScript job is at its printer within seconds of its 250, while
    LibreOffice (a separate process) is still converting."""
    soffice = require_program("soffice", "libreoffice-writer-nogui")
    long_text = "\n".join(f"Line {i} of a long report {MARKER}long" for i in range(12000))
    docx = office_document(soffice, tmp_path, "docx", long_text)
    site.raw.clear_jobs()
    before = len(site.ipp.documents())
    office_id = site.mail("office", (docx, "application", "octet-stream", "long-report.docx"))
    wait_until(lambda: "converting long-report.docx" in site.appliance.log(), 30, "LibreOffice started", site.log)
    started = time.monotonic()
    small = b"%!PS-Adobe-3.0\n%%Pages: 1\n/Helvetica findfont 20 scalefont setfont 72 700 moveto (quick) show showpage\n"
    site.mail("laser", (small, "application", "postscript", "quick.ps"))
    [job] = site.raw.wait_for_jobs(1, timeout=30)
    quick = time.monotonic() - started
    # The long document had not reached its printer when the quick job had
    # (otherwise this is no test of responsiveness).
    office_printed_first = len(site.ipp.documents()) > before
    site.status_text(office_id, timeout=180)
    assert b"quick" in job.read_bytes()
    assert quick < 5.0, quick
    assert len(site.ipp.documents()) == before + 1
    assert not office_printed_first, "the long document was printed first: not a test of responsiveness"

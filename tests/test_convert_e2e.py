"""Photos and Office documents mailed to a real printer service (real
Ghostscript, img2pdf/Pillow, LibreOffice) on the real reactor: what reaches
the file: printer is rendered back (Ghostscript, pdftotext) and checked the
way a person would, and the status mail says how many pages.

The test documents are made here: pictures with Pillow (orientation 6 in
EXIF, a HEIC, a 3-frame TIFF), Office files by LibreOffice itself from text
(docs/convert.md)."""

from __future__ import annotations

import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest
import pytest_twisted
from support.peers import require_program
from support.live_printer import FilePrinter
from support.message_samples import mail_with



MARKER = "MARKERPHASERLINK4711"


@pytest.fixture(scope="module")
def gs():
    return require_program("gs", "ghostscript")


@pytest.fixture(scope="module")
def soffice():
    return require_program("soffice", "libreoffice-writer-nogui")


def Live(tmp: Path, formats: tuple[str, ...] = ("postscript",), **printer) -> FilePrinter:
    """The live printer service with a file: printer taking *formats*."""
    return FilePrinter(tmp, printer={"formats": formats, **printer})


def mail(*attachments: tuple[bytes, str, str, str]) -> bytes:
    return mail_with(*attachments, subject="Holiday photos").as_bytes()


def pages_of(gs: str, path: Path, tmp: Path) -> list[tuple[int, int]]:
    """Render *path* (PostScript or PDF) at 10 dpi; each page's (width, height)."""
    from PIL import Image

    out = tmp / "render"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=png16m", "-r10",
                    f"-sOutputFile={out}/p%03d.png", str(path)], check=True, capture_output=True)
    sizes = []
    for png in sorted(out.iterdir()):
        with Image.open(png) as im:
            sizes.append(im.size)
    return sizes


def jpeg_rotated_6(width: int = 1200, height: int = 800) -> bytes:
    """A landscape-stored photo whose EXIF says: turn it 90 degrees (portrait)."""
    import io

    from PIL import Image

    im = Image.new("RGB", (width, height), "red")
    exif = Image.Exif()
    exif[274] = 6
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


@pytest_twisted.ensureDeferred
async def test_a_photo_with_exif_orientation_6_prints_as_one_portrait_page(gs, tmp_path):
    live = Live(tmp_path).start()
    try:
        [printed] = await live.print_mail(mail((jpeg_rotated_6(), "image", "jpeg", "IMG_0001.JPG")))
        assert printed.read_bytes().startswith(b"%!PS")
        [(w, h)] = pages_of(gs, printed, tmp_path)
        assert h > w, (w, h)  # portrait as the phone showed it
        assert "(1 page)" in live.queue.messages[-1].text
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_a_heic_and_a_three_page_tiff_in_one_mail_are_one_job_of_four_pages(gs, tmp_path):
    import io

    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    heic = io.BytesIO()
    Image.new("RGB", (480, 640), "blue").save(heic, "HEIF")
    tiff = io.BytesIO()
    frames = [Image.new("RGB", (300, 400), c) for c in ("red", "green", "blue")]
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:])
    live = Live(tmp_path, formats=("pdf",)).start()
    try:
        printed = await live.print_mail(mail((heic.getvalue(), "image", "heic", "IMG_0002.HEIC"),
                                             (tiff.getvalue(), "image", "tiff", "scan.tif")))
        assert len(printed) == 1  # one job, one document
        assert len(pages_of(gs, printed[0], tmp_path)) == 4
        assert "(4 pages)" in live.queue.messages[-1].text
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_a_three_page_tiff_gives_three_pages(gs, tmp_path):
    import io

    from PIL import Image

    tiff = io.BytesIO()
    frames = [Image.new("L", (200, 300), v) for v in (0, 128, 255)]
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:])
    live = Live(tmp_path).start()
    try:
        [printed] = await live.print_mail(mail((tiff.getvalue(), "application", "octet-stream", "fax.tif")))
        assert len(pages_of(gs, printed, tmp_path)) == 3
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_a_raster_only_printer_gets_pwg_raster(gs, tmp_path):
    live = Live(tmp_path, formats=("pwg-raster",)).start()
    try:
        [printed] = await live.print_mail(mail((jpeg_rotated_6(300, 200), "image", "jpeg", "a.jpg")))
        assert printed.read_bytes()[:4] == b"RaS2"
        assert "(1 page)" in live.queue.messages[-1].text
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_a_broken_picture_is_aborted_with_the_converters_words(tmp_path):
    live = Live(tmp_path).start()
    try:
        live.deliver(mail((b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 10, "image", "jpeg", "broken.jpg")))
        await live.until(lambda: "failed" in live.queue.events(), "the failed mail")
        text = live.queue.messages[-1].text
        assert "broken.jpg" in text and "cannot be read" in text
        assert live.queue.messages[-1].field("reasons") == "['document-format-error']"
        assert live.printed() == []
    finally:
        await live.stop()


def office_document(soffice: str, tmp: Path, kind: str, text: str) -> bytes:
    """A .docx/.xlsx/.pptx/.odt made by LibreOffice itself from text."""
    src_dir = tmp / f"make-{kind}"
    src_dir.mkdir()
    if kind == "xlsx":
        src, target = src_dir / "doc.csv", "xlsx"
        src.write_text(f"name,value\n{text},42\n")
    elif kind == "pptx":
        src, target = src_dir / "doc.fodp", "pptx"
        src.write_text(FODP.format(text=text))
    else:
        src, target = src_dir / "doc.txt", {"docx": "docx:MS Word 2007 XML", "odt": "odt"}[kind]
        src.write_text(f"Dear printer,\n{text}\n")
    subprocess.run([soffice, f"-env:UserInstallation=file://{src_dir}/profile", "--headless",
                    "--convert-to", target, "--outdir", str(src_dir), str(src)],
                   check=True, capture_output=True, timeout=60)
    return (src_dir / f"doc.{kind}").read_bytes()


FODP = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"
 office:version="1.2" office:mimetype="application/vnd.oasis.opendocument.presentation">
 <office:body><office:presentation><draw:page draw:name="page1">
  <draw:frame svg:x="2cm" svg:y="2cm" svg:width="20cm" svg:height="3cm">
   <draw:text-box><text:p>{text}</text:p></draw:text-box></draw:frame>
 </draw:page></office:presentation></office:body></office:document>
"""

OFFICE_TYPES = {
    "docx": ("vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "xlsx": ("vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "pptx": ("vnd.openxmlformats-officedocument.presentationml.presentation"),
    "odt": ("vnd.oasis.opendocument.text"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx", "odt"])
@pytest_twisted.ensureDeferred
async def test_an_office_document_prints_with_its_text(gs, soffice, tmp_path, kind):
    pdftotext = require_program("pdftotext", "poppler-utils")
    data = office_document(soffice, tmp_path, kind, f"{MARKER}{kind}")
    live = Live(tmp_path, formats=("pdf",)).start()
    try:
        # Labelled as mail programs often do: the bytes say what it is.
        [printed] = await live.print_mail(mail((data, "application", "octet-stream", f"report.{kind}")))
        assert printed.read_bytes().startswith(b"%PDF")
        text = subprocess.run([pdftotext, str(printed), "-"], check=True, capture_output=True).stdout.decode()
        assert f"{MARKER}{kind}" in text
        assert "(1 page)" in live.queue.messages[-1].text
    finally:
        await live.stop()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_an_html_only_mail_prints_as_the_page_it_shows(tmp_path):
    require_program("chromium", "chromium")
    pdftotext = require_program("pdftotext", "poppler-utils")
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "lp@phaserlink.test"
    msg["Subject"] = "Your order"
    html = f"<html><body><h1>Order {MARKER}html</h1><p>Vielen Dank, Grüße aus Köln.</p></body></html>"
    msg.set_content(html.encode("iso-8859-1"), maintype="text", subtype="html", cte="quoted-printable",
                    params={"charset": "iso-8859-1"})
    live = Live(tmp_path, formats=("pdf",)).start()
    try:
        [printed] = await live.print_mail(msg.as_bytes())
        text = subprocess.run([pdftotext, str(printed), "-"], check=True, capture_output=True).stdout.decode()
        assert f"Order {MARKER}html" in text and "<h1>" not in text
        assert "Grüße aus Köln" in text  # the mail's charset, not a browser's guess
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_a_printer_that_takes_jpeg_gets_each_photo_as_it_is(tmp_path):
    photos = [jpeg_rotated_6(300 + i, 200) for i in range(2)]
    live = Live(tmp_path, formats=("jpeg", "pdf")).start()
    try:
        printed = await live.print_mail(mail((photos[0], "image", "jpeg", "a.jpg"),
                                             (photos[1], "image", "jpeg", "b.jpg")))
        assert [p.read_bytes() for p in printed] == photos  # both, byte for byte
        assert "(2 pages)" in live.queue.messages[-1].text
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_a_photo_to_a_letter_printer_is_a_letter_page(tmp_path):
    """``media = letter`` (no IPP printer to say its media-default): the
    photo's PDF page is US letter, 612 x 792 points, not A4."""
    pdfinfo = require_program("pdfinfo", "poppler-utils")
    live = Live(tmp_path, formats=("pdf",), media="letter").start()
    try:
        [printed] = await live.print_mail(mail((jpeg_rotated_6(), "image", "jpeg", "IMG_0002.JPG")))
        info = subprocess.run([pdfinfo, str(printed)], capture_output=True, text=True, check=True).stdout
        # img2pdf keeps the pixels as stored and turns the page (/Rotate 90) for EXIF 6.
        page = next(line for line in info.splitlines() if line.startswith("Page size:"))
        assert page.split(":", 1)[1].strip() in ("612 x 792 pts (letter)", "792 x 612 pts (letter)"), info
    finally:
        await live.stop()


def phone_photo(width: int = 4000, height: int = 3000, sigma: float = 10.0) -> bytes:
    """A 12-megapixel JPEG at quality 90, about 4 MB: Gaussian noise over a
    gradient compresses about as badly as a phone photo does."""
    import io

    from PIL import Image, ImageChops

    gradient = Image.linear_gradient("L").resize((width, height))
    channels = [ImageChops.add(ImageChops.multiply(gradient, Image.new("L", (width, height), level)),
                               Image.effect_noise((width, height), sigma), 1.0, -128)
                for level in (200, 150, 100)]
    out = io.BytesIO()
    Image.merge("RGB", channels).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest_twisted.ensureDeferred
async def test_a_phone_photo_to_a_postscript_printer_stays_about_its_size(gs, tmp_path):
    """pdftops keeps the JPEG (docs/convert.md): a 4 MB photo is less than
    12 MB of PostScript, not ps2write's 47 MB, so 20 photos fit under the
    1 GiB output limit; and it still renders as one page."""
    require_program("pdftops", "poppler-utils")
    photo = phone_photo()
    assert 3_000_000 < len(photo) < 6_000_000, len(photo)
    live = Live(tmp_path).start()
    try:
        [printed] = await live.print_mail(mail((photo, "image", "jpeg", "IMG_4032.JPG")))
        size = printed.stat().st_size
        assert printed.read_bytes()[:11] == b"%!PS-Adobe-"
        assert size < 3 * len(photo), (size, len(photo))
        assert len(pages_of(gs, printed, tmp_path)) == 1
        assert "(1 page)" in live.queue.messages[-1].text
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_page_2_of_three_photos_to_a_postscript_printer_keeps_its_jpeg(gs, tmp_path):
    """pages=2 of a photo mail: the page is chosen in the PDF (pdfwrite
    keeps the JPEG), then pdftops makes PostScript of it; choosing it in
    the PostScript (ps2write) would decode the photo to 9 times its size."""
    require_program("pdftops", "poppler-utils")
    photos = [phone_photo(2000, 1500, sigma=8.0 + 3 * i) for i in range(3)]
    live = Live(tmp_path).start()
    try:
        msg = mail_with(*((p, "image", "jpeg", f"IMG_{i}.JPG") for i, p in enumerate(photos)),
                        subject="Holiday photos", headers={"X-PhaserLink-Options": "pages=2"})
        [printed] = await live.print_mail(msg.as_bytes())
        data = printed.read_bytes()
        assert b"poppler pdftops" in data[:300]
        assert len(data) < 3 * len(photos[1]), (len(data), len(photos[1]))
        assert len(pages_of(gs, printed, tmp_path)) == 1
        assert "(1 page)" in live.queue.messages[-1].text
    finally:
        await live.stop()

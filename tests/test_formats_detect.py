"""Photos, Office files and raster streams recognised by their bytes, and
chosen from a mail as documents to print (docs/convert.md)."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from phaserlink.message.extract import ExtractError, extract_documents
from phaserlink.message.formats import detect_document, detect_format


def ooxml(part: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr(f"{part}/document.xml", "<x/>")
    return out.getvalue()


def odf(kind: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), f"application/vnd.oasis.opendocument.{kind}")
        z.writestr("content.xml", "<x/>")
    return out.getvalue()


@pytest.mark.parametrize(
    "head, fmt",
    [
        (b"\xff\xd8\xff\xe1\x00\x10Exif", "jpeg"),
        (b"GIF89a\x01\x00", "gif"),
        (b"II*\x00\x08\x00", "tiff"),
        (b"MM\x00*\x00\x00", "tiff"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "heif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RaS2PwgRaster\x00", "pwg-raster"),
        (b"UNIRAST\x00\x00\x00\x00\x01", "urf"),
        (b"{\\rtf1\\ansi hello}", "rtf"),
        (ooxml("word"), "docx"),
        (ooxml("xl"), "xlsx"),
        (ooxml("ppt"), "pptx"),
        (odf("text"), "odt"),
        (odf("spreadsheet"), "ods"),
        (odf("presentation"), "odp"),
    ],
)
def test_detect(head, fmt):
    assert detect_format(head) == fmt


@pytest.mark.parametrize(
    "head, declared, name, fmt",
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), None, "old.doc", "doc"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "xls", None, "xls"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), None, "slides.PPT", "ppt"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), None, "mail.msg", None),  # Outlook: not ours
        (b"PK\x03\x04" + bytes(100), None, "photos.zip", None),
        (b"PK\x03\x04" + bytes(100), None, "r.docx", "docx"),
    ],
)
def test_a_container_is_the_office_kind_its_name_says(head, declared, name, fmt):
    assert detect_format(head) is None
    assert detect_document(head, declared, name) == fmt


def message(tmp_path: Path, msg: EmailMessage) -> Path:
    path = tmp_path / "msg.eml"
    path.write_bytes(msg.as_bytes())
    return path


def test_photos_and_office_files_in_a_mail_are_documents(tmp_path):
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg.set_content("please print\n")
    msg.add_attachment(b"\xff\xd8\xff\xe0" + bytes(50), maintype="image", subtype="jpeg", filename="IMG_1.JPG")
    # mpack labels everything octet-stream: the bytes decide.
    msg.add_attachment(ooxml("word"), maintype="application", subtype="octet-stream", filename="cv.docx")
    msg.add_attachment(b"\x00\x00\x00\x18ftypheic" + bytes(50), maintype="image", subtype="heic",
                       filename="IMG_2.HEIC")
    out = tmp_path / "out"
    out.mkdir()
    docs = extract_documents(message(tmp_path, msg), out)
    assert [(d.format, d.path.name) for d in docs] == [("jpeg", "01.jpg"), ("docx", "02.docx"),
                                                       ("heif", "03.heic")]


def test_a_logo_inside_an_html_body_is_not_a_photo_to_print(tmp_path):
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg.set_content("Your order.\n")
    msg.add_alternative("<html><body><img src='cid:logo'>Your order.</body></html>", subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG\r\n\x1a\n" + bytes(40), maintype="image", subtype="png",
                                     cid="<logo>")
    out = tmp_path / "out"
    out.mkdir()
    [doc] = extract_documents(message(tmp_path, msg), out)
    assert doc.format == "text"  # the text body, not the logo


def test_an_html_only_body_is_printed_as_html(tmp_path):
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg.set_content("<html><body>Order 42</body></html>", subtype="html")
    out = tmp_path / "out"
    out.mkdir()
    [doc] = extract_documents(message(tmp_path, msg), out)
    assert doc.format == "html"
    # The mail's charset goes with the file (a browser would guess otherwise).
    assert doc.path.read_bytes().startswith(b'<meta charset="utf-8">\n<html>')


def test_a_file_labelled_a_picture_that_is_none_is_not_printed(tmp_path):
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg.set_content("hi\n")
    msg.add_attachment(b"this is no picture at all" * 4, maintype="image", subtype="jpeg", filename="x.jpg")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExtractError, match="nothing printable"):
        extract_documents(message(tmp_path, msg), out)

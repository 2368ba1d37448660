"""Format sniffing: what a printer would recognise from the first bytes."""

from __future__ import annotations

import pytest

from phaserlink.message.formats import CONTENT_TYPES, FORMAT_OF_TYPE, detect_format
from support.message_samples import PCL, pdf_bytes, ps_bytes

UEL = b"\x1b%-12345X"


@pytest.mark.parametrize(
    "head, expected",
    [
        (ps_bytes(), "postscript"),
        (b"%!\n/x 1 def\n", "postscript"),
        (b"\x04%!PS-Adobe-3.0\n", "postscript"),  # Windows drivers' leading ctrl-D
        (UEL + b"@PJL JOB NAME=\"x\"\r\n@PJL ENTER LANGUAGE = POSTSCRIPT\r\n%!PS-Adobe-3.0\n", "postscript"),
        (UEL + b"@PJL ENTER LANGUAGE=POSTSCRIPT\n\x04%!PS\n", "postscript"),
        (pdf_bytes(2000), "pdf"),
        (b"\r\n" * 100 + b"%PDF-1.7\n", "pdf"),  # junk before the magic, within 1024
        (UEL + b"@PJL ENTER LANGUAGE=PDF\n%PDF-1.5\n", "pdf"),
        (PCL, "pcl"),
        (UEL + b"@PJL SET RESOLUTION=600\r\n@PJL ENTER LANGUAGE=PCL\r\n\x1bE\x1b&l0O", "pcl"),
        (UEL + b"@PJL ENTER LANGUAGE=PCLXL\r\n) HP-PCL XL;2;0\r\n", "pcl"),
        (b"Dear printer,\nplease print this.\n\fPage two\n", "text"),
        ("Grüße aus Köln\n".encode("utf-8"), "text"),
        ("Grüße".encode("utf-8")[:-1], "text"),  # a UTF-8 character cut at the head's end
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "png"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(200), None),  # a .docx/.zip
        (b"", None),
    ],
)
def test_detect_format(head: bytes, expected: str | None) -> None:
    assert detect_format(head) == expected


def test_pdf_magic_after_1024_bytes_is_not_pdf() -> None:
    assert detect_format(b"\x00" * 1100 + b"%PDF-1.4") is None


def test_content_types_both_ways() -> None:
    assert {f: CONTENT_TYPES[f] for f in ("postscript", "pdf", "pcl", "text")} == {
        "postscript": "application/postscript",
        "pdf": "application/pdf",
        "pcl": "application/vnd.hp-pcl",
        "text": "text/plain",
    }
    for fmt, ctype in CONTENT_TYPES.items():
        assert FORMAT_OF_TYPE[ctype] == fmt

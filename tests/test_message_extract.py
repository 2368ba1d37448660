"""Choosing and decoding what to print, and reading the sender's wishes."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from pathlib import Path

import pytest

from phaserlink.message.build import write_job_message
from phaserlink.message.extract import ExtractError, extract_document, extract_documents, job_request, job_request_of
from phaserlink.message.mime import read_headers
from support.message_samples import PCL, email_bytes, pdf_bytes, ps_bytes, python_email_with_attachments, thunderbird_style


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def msg_file(tmp_path: Path, data: bytes, name: str = "m.eml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_thunderbird_prints_the_attachment_not_the_body(tmp_path: Path, out: Path) -> None:
    pdf = pdf_bytes(40000)
    [doc] = extract_documents(msg_file(tmp_path, thunderbird_style(pdf, "Q3 report.pdf")), out)
    assert (doc.format, doc.content_type, doc.filename, doc.size) == ("pdf", "application/pdf", "Q3 report.pdf", len(pdf))
    assert doc.path == out / "01.pdf" and doc.path.read_bytes() == pdf
    assert sorted(p.name for p in out.iterdir()) == ["01.pdf"]


def test_several_attachments_print_in_order_as_separate_documents(tmp_path: Path, out: Path) -> None:
    pdf, ps = pdf_bytes(9000), ps_bytes()
    msg = python_email_with_attachments(
        (ps, "application", "postscript", "a.ps"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "image", "png", "logo.png"),  # a picture prints too
        (pdf, "application", "octet-stream", "b.bin"),  # sniffed as PDF
        (PCL, "application", "vnd.hp-pcl", "c.pcl"),
        (b"plain notes\n", "text", "plain", "notes.txt"),
    )
    docs = extract_documents(msg_file(tmp_path, email_bytes(msg)), out)
    assert [(d.format, d.filename, d.path.name) for d in docs] == [
        ("postscript", "a.ps", "01.ps"),
        ("png", "logo.png", "02.png"),
        ("pdf", "b.bin", "03.pdf"),
        ("pcl", "c.pcl", "04.pcl"),
        ("text", "notes.txt", "05.txt"),
    ]
    assert [d.path.read_bytes() for d in docs] == [ps, b"\x89PNG\r\n\x1a\n" + bytes(100), pdf, PCL,
                                                  b"plain notes\n"]


def test_only_a_text_body_prints_the_text(tmp_path: Path, out: Path) -> None:
    msg = EmailMessage()
    msg["Subject"] = "note"
    msg.set_content("Grüße, bitte drucken.\n" * 3, cte="quoted-printable")
    [doc] = extract_documents(msg_file(tmp_path, email_bytes(msg)), out)
    assert doc.format == "text" and doc.charset == "utf-8"
    assert doc.path.read_bytes() == ("Grüße, bitte drucken.\n" * 3).encode()


def test_text_html_alternative_prints_the_plain_text(tmp_path: Path, out: Path) -> None:
    msg = EmailMessage()
    msg.set_content("the plain text\n")
    msg.add_alternative("<p>the html</p>", subtype="html")
    [doc] = extract_documents(msg_file(tmp_path, email_bytes(msg)), out)
    assert doc.path.read_bytes() == b"the plain text\n"


@pytest.mark.parametrize("cte", ["7bit", "8bit"])
def test_top_level_postscript_body(tmp_path: Path, out: Path, cte: str) -> None:
    ps = ps_bytes()
    data = f"From: a@b\nContent-Type: application/postscript\nContent-Transfer-Encoding: {cte}\n\n".encode() + ps
    doc = extract_document(msg_file(tmp_path, data), out / "job.ps")
    assert doc.format == "postscript" and doc.path.read_bytes() == ps and doc.size == len(ps)


def test_mislabelled_pdf_sent_as_postscript_goes_as_pdf(tmp_path: Path, out: Path) -> None:
    pdf = pdf_bytes(3000)
    msg = python_email_with_attachments((pdf, "application", "postscript", "x.ps"))
    [doc] = extract_documents(msg_file(tmp_path, email_bytes(msg)), out)
    assert doc.format == "pdf" and doc.content_type == "application/postscript"


def test_mpack_style_octet_stream_single_part(tmp_path: Path, out: Path) -> None:
    ps = ps_bytes()
    body = base64.encodebytes(ps)
    data = (
        b'Content-Type: multipart/mixed; boundary="-"\n\nThis is a MIME encoded message.\n---\n'
        b'Content-Type: application/octet-stream; name="job.ps"\nContent-Transfer-Encoding: base64\n'
        b'Content-Disposition: inline; filename="job.ps"\n\n' + body + b"\n-----\n"
    )
    [doc] = extract_documents(msg_file(tmp_path, data), out)
    assert (doc.format, doc.filename) == ("postscript", "job.ps") and doc.path.read_bytes() == ps


def test_broken_base64_attachment_is_a_clear_extract_error(tmp_path: Path, out: Path) -> None:
    good = base64.encodebytes(pdf_bytes(2000))
    broken = good[:200] + b"#" + good[200:]
    data = (
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nplease print\n--b\n'
        b'Content-Type: application/pdf\nContent-Disposition: attachment; filename="r.pdf"\n'
        b"Content-Transfer-Encoding: base64\n\n" + broken + b"--b--\n"
    )
    with pytest.raises(ExtractError) as e:
        extract_documents(msg_file(tmp_path, data), out)
    assert e.value.ipp_reason == "document-format-error"
    assert e.value.reason.startswith("attachment 'r.pdf' cannot be decoded: invalid character b'#' in base64")
    assert list(out.iterdir()) == []  # nothing half-written left behind


def test_unprintable_attachment_does_not_print_the_note(tmp_path: Path, out: Path) -> None:
    msg = python_email_with_attachments(
        (b"PK\x03\x04" + bytes(300), "application", "zip", "r.zip")  # an archive, no Office file
    )
    with pytest.raises(ExtractError) as e:
        extract_documents(msg_file(tmp_path, email_bytes(msg)), out)
    assert e.value.ipp_reason == "unsupported-document-format"
    assert "nothing printable in the message" in e.value.reason
    assert "(r.zip)" in e.value.reason and "PostScript" in e.value.reason


def test_blank_body_only_is_nothing_printable(tmp_path: Path, out: Path) -> None:
    with pytest.raises(ExtractError, match="nothing printable"):
        extract_documents(msg_file(tmp_path, b"Subject: x\n\n \n\n"), out)


def test_a_fragment_must_be_reassembled_first(tmp_path: Path, out: Path) -> None:
    data = b'Content-Type: message/partial; id="x@y"; number=1; total=2\n\nSubject: s\n\n'
    with pytest.raises(ExtractError, match="reassembled before printing"):
        extract_documents(msg_file(tmp_path, data), out)


def test_our_job_message_round_trip(tmp_path: Path, out: Path) -> None:
    pdf = pdf_bytes(100_000)
    src = msg_file(tmp_path, pdf, "data.pdf")
    path = tmp_path / "job.eml"
    with open(path, "wb") as f:
        write_job_message(
            f, src, sender="Ann <ann@example.org>", recipient="lp@print.example", title="Grüße & more",
            format="pdf", filename="Bericht ä.pdf", copies=3, notify=("printed", "failed"), job_id="J-42",
        )
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.isascii()
    body = raw.split(b"\n\n", 1)[1]
    assert {len(line) for line in body.split(b"\n")[:-2]} == {76}
    [doc] = extract_documents(path, out)
    assert (doc.format, doc.filename, doc.path.read_bytes()) == ("pdf", "Bericht ä.pdf", pdf)
    req = job_request_of(path)
    assert (req.title, req.copies, req.notify, req.sender, req.job_id) == (
        "Grüße & more", 3, ("printed", "failed"), "ann@example.org", "J-42",
    )
    assert req.message_id is not None and req.message_id.endswith("@example.org>")


def headers(text: str):
    import io

    return read_headers(io.BytesIO(text.encode()))


def test_job_request_ignores_garbage_and_falls_back_to_subject() -> None:
    req = job_request(headers(
        "From: not an address\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\x01 report\n"
        "X-PhaserLink-Copies: 1e9\nX-PhaserLink-Notify: bogus, ,;\n"
        "X-PhaserLink-Job-Id: ../../etc/passwd\nMessage-ID: junk\n\n"
    ))
    assert (req.title, req.copies, req.notify, req.sender, req.message_id, req.job_id) == (
        "Grüße report", 1, None, None, None, None,
    )
    assert job_request(headers("X-PhaserLink-Copies: 0\n\n")).copies == 1
    assert job_request(headers("X-PhaserLink-Copies: 1000\n\n")).copies == 1
    assert job_request(headers("X-PhaserLink-Copies:  7 \n\n")).copies == 7
    assert job_request(headers("X-PhaserLink-Notify: none\n\n")).notify == ()
    assert job_request(headers("X-PhaserLink-Notify: Failed, bogus failed\n\n")).notify == ("failed",)
    assert job_request(headers("\n")).title is None
    long = job_request(headers("X-PhaserLink-Title: " + "x" * 400 + "\nSubject: s\n\n"))
    assert long.title == "x" * 255

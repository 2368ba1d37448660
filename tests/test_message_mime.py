"""The streaming MIME reader: headers, parameters, part offsets, decoding."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import pytest

from phaserlink.message import mime
from phaserlink.message.mime import DecodeError, Part, decode_body_to, iter_parts, parse_params, read_headers
from support.message_samples import email_bytes, pdf_bytes, python_email_with_attachments, thunderbird_style


def body_of(path: Path, part: Part) -> bytes:
    out = io.BytesIO()
    decode_body_to(path, part, out)
    return out.getvalue()


def test_read_headers_unfolds_decodes_and_leaves_file_at_body() -> None:
    raw = (
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n =?utf-8?q?_aus_K=C3=B6ln?=\r\n"
        b"content-type: text/plain;\n\tcharset=\"utf-8\"\n"
        b"X-Empty:\n"
        b"\n"
        b"body line\n"
    )
    f = io.BytesIO(raw)
    h = read_headers(f)
    assert f.read() == b"body line\n"
    assert h.get("SUBJECT") == "=?utf-8?q?Gr=C3=BC=C3=9Fe?= =?utf-8?q?_aus_K=C3=B6ln?="
    assert h.display("subject") == "Grüße aus Köln"
    assert h.content_type() == ("text/plain", {"charset": "utf-8"})
    assert h.get("x-empty") == ""
    assert "X-Missing" not in h and h.get("X-Missing", "d") == "d"
    # raw bytes kept exactly, for copying into a reassembled header
    assert h.raw() == raw[: raw.index(b"\n\n") + 1]


def test_headerless_file_is_all_body() -> None:
    f = io.BytesIO(b"%!PS-Adobe-3.0\nshowpage\n")
    h = read_headers(f)
    assert h.fields == () and f.tell() == 0


def test_header_section_size_is_limited() -> None:
    f = io.BytesIO(b"X-A: " + b"a" * 100 + b"\n" + b" b\n" * (mime.MAX_HEADER_BYTES // 3))
    with pytest.raises(mime.MimeError, match="header section is longer"):
        read_headers(f)


def test_params_quoted_comments_and_rfc2231() -> None:
    assert parse_params('attachment; filename="a \\"b\\"; c.pdf" (comment); size=3') == (
        "attachment",
        {"filename": 'a "b"; c.pdf', "size": "3"},
    )
    # RFC 2231 charset + continuations, and it wins over the plain name
    value = "attachment; filename=fallback.pdf; filename*0*=utf-8''Gr%C3%BC; filename*1*=%C3%9Fe.pdf"
    assert parse_params(value) == ("attachment", {"filename": "Grüße.pdf"})
    assert parse_params("Application/PDF; NAME*=iso-8859-1'de'K%F6ln.pdf") == (
        "application/pdf",
        {"name": "Köln.pdf"},
    )


def test_missing_content_type_defaults_to_text_plain() -> None:
    h = read_headers(io.BytesIO(b"Content-Type: garbage\n\n"))
    assert h.content_type() == ("text/plain", {"charset": "us-ascii"})


def test_parts_of_python_email_message(tmp_path: Path) -> None:
    pdf = pdf_bytes(5000)
    msg = python_email_with_attachments((pdf, "application", "pdf", "q.pdf"), (b"%!PS\n", "application", "octet-stream", "x.ps"))
    path = tmp_path / "m.eml"
    path.write_bytes(email_bytes(msg))
    parts = list(iter_parts(path))
    assert [(p.content_type, p.filename, p.depth, p.ancestors) for p in parts] == [
        ("text/plain", None, 1, ("multipart/mixed",)),
        ("application/pdf", "q.pdf", 1, ("multipart/mixed",)),
        ("application/octet-stream", "x.ps", 1, ("multipart/mixed",)),
    ]
    assert body_of(path, parts[0]) == b"Please print.\n"
    assert body_of(path, parts[1]) == pdf
    assert body_of(path, parts[2]) == b"%!PS\n"
    # the line break before a boundary is not part of the body (RFC 2046 5.1.1)
    raw = path.read_bytes()
    assert raw[parts[2].body_end : parts[2].body_end + 3] == b"\n--"


def test_nested_alternative_crlf_thunderbird(tmp_path: Path) -> None:
    pdf = pdf_bytes(20000)
    path = tmp_path / "tb.eml"
    path.write_bytes(thunderbird_style(pdf))
    parts = list(iter_parts(path))
    assert [(p.content_type, p.depth) for p in parts] == [
        ("text/plain", 2),
        ("text/html", 2),
        ("application/pdf", 1),
    ]
    assert parts[0].ancestors == ("multipart/mixed", "multipart/alternative")
    assert body_of(path, parts[0]) == b"Please print the attached report.\r\n"
    assert body_of(path, parts[2]) == pdf


def test_boundary_split_across_scan_chunks(tmp_path: Path, monkeypatch) -> None:
    """Boundaries are found wherever the read chunks happen to cut them."""
    payloads = [bytes([65 + i]) * (37 * i + 5) for i in range(12)]
    body = b"".join(b"--b\nContent-Type: text/plain\n\n" + p + b"\n" for p in payloads) + b"--b--\n"
    path = tmp_path / "m.eml"
    path.write_bytes(b'Content-Type: multipart/mixed; boundary="b"\n\n' + body)
    for chunk in (1, 2, 3, 7, 64, 1 << 20):
        monkeypatch.setattr(mime, "SCAN_CHUNK", chunk)
        parts = list(iter_parts(path))
        assert [body_of(path, p) for p in parts] == payloads, chunk


def test_missing_close_delimiter_and_padding_after_boundary(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(
        b'Content-Type: multipart/mixed; boundary="xyz"\n\npreamble\n--xyz  \n\nfirst\n--xyz\t\n'
        b"Content-Type: application/postscript\n\n%!PS\nshowpage\n"
    )
    parts = list(iter_parts(path))
    assert [body_of(path, p) for p in parts] == [b"first", b"%!PS\nshowpage\n"]


def test_boundary_prefix_inside_body_is_not_a_boundary(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\n--bx\n-- b\n--b--x\n--b--\n'
    )
    [part] = list(iter_parts(path))
    assert body_of(path, part) == b"--bx\n-- b\n--b--x"


def test_forwarded_message_rfc822_is_entered(tmp_path: Path) -> None:
    path = tmp_path / "fwd.eml"
    path.write_bytes(
        b'Content-Type: multipart/mixed; boundary="o"\n\n--o\n\nsee below\n--o\n'
        b"Content-Type: message/rfc822\n\n"
        b'Subject: inner\nContent-Type: multipart/mixed; boundary="i"\n\n'
        b"--i\nContent-Type: application/postscript\n\n%!PS inner\n--i--\n"
        b"--o--\n"
    )
    parts = list(iter_parts(path))
    assert [(p.content_type, p.depth) for p in parts] == [("text/plain", 1), ("application/postscript", 3)]
    assert body_of(path, parts[1]) == b"%!PS inner"


def qp_part(tmp_path: Path, cte: str, body: bytes) -> tuple[Path, Part]:
    path = tmp_path / f"{cte}.eml"
    path.write_bytes(f"Content-Type: text/plain\nContent-Transfer-Encoding: {cte}\n\n".encode() + body)
    [part] = list(iter_parts(path))
    return path, part


def test_quoted_printable(tmp_path: Path) -> None:
    text = ("Grüße = Köln\t\n" + "x" * 300 + "\n").encode("utf-8") * 3
    path, part = qp_part(tmp_path, "quoted-printable", binascii.b2a_qp(text, istext=True))
    assert body_of(path, part) == text


def test_quoted_printable_long_line_across_chunks(tmp_path: Path, monkeypatch) -> None:
    text = bytes(range(256)) * 50  # no line breaks in the encoded form but soft ones
    enc = binascii.b2a_qp(text).replace(b"=\n", b"")  # one huge line, escapes only
    monkeypatch.setattr(mime, "SCAN_CHUNK", 97)
    path, part = qp_part(tmp_path, "quoted-printable", enc)
    assert body_of(path, part) == text


@pytest.mark.parametrize("cte", ["7bit", "8bit", "binary", "8BIT"])
def test_identity_encodings(tmp_path: Path, cte: str) -> None:
    body = "Ünïcode line\nsecond\n".encode("utf-8")
    path, part = qp_part(tmp_path, cte, body)
    assert body_of(path, part) == body


def test_base64_tolerates_whitespace_and_line_lengths(tmp_path: Path, monkeypatch) -> None:
    data = pdf_bytes(3000)
    enc = base64.b64encode(data)
    messy = b"\r\n".join(enc[i : i + 60] for i in range(0, len(enc), 60)).replace(b"A", b"A \t")
    monkeypatch.setattr(mime, "SCAN_CHUNK", 101)
    path, part = qp_part(tmp_path, "base64", messy + b"\r\n\r\n")
    assert body_of(path, part) == data


@pytest.mark.parametrize(
    "body, message",
    [
        (b"JVBERi0x*LjQK\n", r"invalid character b'\*' in base64 data at encoded character 8"),
        (b"JVBERi0xLjQ\n", "base64 data is truncated: 3 character"),
        (b"JVBE=i0xLjQK\n", r"continues after the '=' padding \(encoded character 5\)"),
        (b"JVBERi0===\n", "too much '=' padding"),
        (b"JVBERi0xLg==\nJVBE\n", "continues after the '=' padding"),
    ],
)
def test_broken_base64_is_a_clear_error(tmp_path: Path, body: bytes, message: str) -> None:
    path, part = qp_part(tmp_path, "base64", body)
    with pytest.raises(DecodeError, match=message):
        body_of(path, part)


def test_unknown_transfer_encoding(tmp_path: Path) -> None:
    path, part = qp_part(tmp_path, "x-uuencode", b"begin 644 x\n")
    with pytest.raises(DecodeError, match="unsupported Content-Transfer-Encoding 'x-uuencode'"):
        body_of(path, part)


def test_too_deep_nesting_is_refused(tmp_path: Path) -> None:
    depth = mime.MAX_DEPTH + 2
    head = b"".join(b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i, i + 1) for i in range(depth))
    path = tmp_path / "deep.eml"
    path.write_bytes(b'Content-Type: multipart/mixed; boundary="b0"\n\n' + head + b"x\n")
    with pytest.raises(mime.MimeError, match="nested more than"):
        list(iter_parts(path))


def test_quoted_printable_escapes_cut_across_decode_chunks():
    """Found by tests/test_fuzz_mime.py: a long QP line read in small
    pieces had an "=XX" escape cut in two when the "=" sat four bytes
    before a piece's end (b"=00" came out as b"=00" literally)."""
    from phaserlink.message.mime import iter_decoded, iter_parts_file

    data = bytes(range(256)) * 3
    qp = binascii.b2a_qp(data, istext=False, header=False)
    message = b"Content-Transfer-Encoding: quoted-printable\n\n" + qp.replace(b"=\n", b"")
    f = io.BytesIO(message)
    [part] = iter_parts_file(f)
    for chunk in (1, 2, 3, 4, 5, 7, 64, 1 << 18):
        assert b"".join(iter_decoded(f, part, chunk=chunk)) == data, chunk

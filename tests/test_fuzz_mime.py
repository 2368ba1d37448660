"""Property-based fuzzing of the MIME walker and the extractor (docs/fuzzing.md).

Any bytes give either parts/documents or the module's own error (MimeError
from the walker and decoder, ExtractError from extraction), never another
exception; a message built here with known attachments, in any of the
transfer encodings, line ends and nesting we meet, gives those attachments
back byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st

from phaserlink.message.extract import ExtractError, extract_documents
from phaserlink.message.mime import MimeError, iter_decoded, iter_parts_file

# Fragments of MIME syntax, so random messages reach deep into the walker.
SYNTAX = st.sampled_from(
    [b"Content-Type: multipart/mixed; boundary=b\n", b"Content-Type: multipart/mixed; boundary=\"b\"\r\n",
     b"Content-Type: message/rfc822\n", b"Content-Type: application/postscript\n",
     b"Content-Type: text/plain; charset=utf-8\n", b"Content-Type: message/partial; id=x; number=1\n",
     b"Content-Transfer-Encoding: base64\n", b"Content-Transfer-Encoding: quoted-printable\n",
     b"Content-Transfer-Encoding: x-uuencode\n", b"Content-Disposition: attachment; filename*=utf-8''%E9\n",
     b"\n", b"\r\n", b"--b\n", b"--b--\n", b"--b \r\n", b"\n--", b" folded\n", b"=\n", b"=4", b"==",
     b"%!PS-Adobe-3.0\n", b"%PDF-1.4\n", b"JVBERi0xLjQK", b"QUJD\n", b"X: y\n", b"\x1bE", b"\x00"]
)
ANY_MESSAGE = st.one_of(
    st.lists(st.one_of(SYNTAX, st.binary(max_size=12)), max_size=50).map(b"".join),
    st.binary(max_size=500),
)


def walk_and_decode(data: bytes) -> None:
    f = io.BytesIO(data)
    for part in iter_parts_file(f):
        assert 0 <= part.body_start <= part.body_end <= len(data)
        for _ in iter_decoded(f, part, chunk=7):
            pass


@given(ANY_MESSAGE)
def test_any_bytes_walk_to_parts_or_a_mime_error(data: bytes) -> None:
    try:
        walk_and_decode(data)
    except MimeError:
        pass


@given(ANY_MESSAGE)
def test_any_bytes_extract_to_documents_or_an_extract_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        message = Path(tmp) / "m.eml"
        message.write_bytes(data)
        out = Path(tmp) / "out"
        out.mkdir()
        try:
            docs = extract_documents(message, out)
        except ExtractError as e:
            assert e.reason and e.ipp_reason
            assert list(out.iterdir()) == []  # nothing left behind
        else:
            assert docs and all(d.path.stat().st_size == d.size > 0 for d in docs)


# ---------------------------------------------------------------------------
# Known attachments back, byte-exact

ENCODINGS = st.sampled_from(["base64", "quoted-printable", "8bit", "binary"])
BOUNDARY = st.text("abcXYZ0189'()+_,-./:=?", min_size=1, max_size=40).map(lambda s: "=_" + s)


def encode(data: bytes, cte: str, nl: bytes) -> bytes:
    if cte == "base64":
        return base64.encodebytes(data).replace(b"\n", nl)
    if cte == "quoted-printable":
        # binary-safe QP: line ends in the data are encoded too
        return binascii.b2a_qp(data, istext=False, header=False).replace(b"\n", nl)
    return data


@st.composite
def messages(draw):
    """(message bytes, [attachment data in order])."""
    nl = draw(st.sampled_from([b"\n", b"\r\n"]))
    count = draw(st.integers(min_value=1, max_value=4))
    boundary = draw(BOUNDARY).encode()
    datas, parts = [], []
    for n in range(count):
        data = draw(st.binary(min_size=1, max_size=300))
        cte = draw(ENCODINGS)
        if cte in ("8bit", "binary"):
            # the one thing a raw body may not hold is its boundary line
            assume(b"\n--" + boundary not in data and not data.startswith(b"--" + boundary))
            # a CR before the line end that precedes the boundary belongs to
            # that line end (RFC 2046 5.1.1): such data cannot be sent raw
            assume(not data.endswith(b"\r"))
        head = (
            b"Content-Type: application/octet-stream; name=\"f%d.bin\"" % n + nl
            + b"Content-Disposition: attachment; filename=\"f%d.bin\"" % n + nl
            + b"Content-Transfer-Encoding: " + cte.encode() + nl + nl
        )
        body = encode(data, cte, nl)
        if draw(st.booleans()):
            # forwarded: the attachment sits inside a message/rfc822 part
            inner_b = boundary + b"-in"
            head, body = (
                b"Content-Type: message/rfc822" + nl + nl,
                b"Subject: fwd" + nl + b"Content-Type: multipart/mixed; boundary=\"" + inner_b + b"\"" + nl + nl
                + b"--" + inner_b + nl + head + body + nl + b"--" + inner_b + b"--" + nl,
            )
        datas.append(data)
        parts.append(b"--" + boundary + draw(st.sampled_from([b"", b" ", b"\t"])) + nl + head + body + nl)
    preamble = draw(st.sampled_from([b"", b"This is MIME." + nl]))
    # (without a close delimiter the last line end would belong to the body)
    close = draw(st.sampled_from([b"--" + boundary + b"--" + nl, b"--" + boundary + b"--",
                                  b"--" + boundary + b"-- \t" + nl + b"epilogue" + nl]))
    message = (
        b"From: a@example.org" + nl + b"Subject: t" + nl + b"MIME-Version: 1.0" + nl
        + b"Content-Type: multipart/mixed;" + nl + b"\tboundary=\"" + boundary + b"\"" + nl + nl
        + preamble + b"".join(parts) + close
    )
    return message, datas


@given(messages())
def test_constructed_attachments_come_back_byte_exact(case) -> None:
    message, datas = case
    f = io.BytesIO(message)
    got = []
    for part in iter_parts_file(f):
        if part.disposition == "attachment":
            got.append(b"".join(iter_decoded(f, part, chunk=5)))
    assert got == datas


@given(st.lists(st.tuples(st.sampled_from([b"%!PS-Adobe-3.0\n", b"%PDF-1.4\n"]), st.binary(max_size=200)),
                min_size=1, max_size=3), st.sampled_from([b"\n", b"\r\n"]))
def test_extracted_documents_are_the_attachments(docs, nl: bytes) -> None:
    """Through extract_documents: every printable attachment, in order, exact."""
    # "%PDF-" in the first KiB means PDF, even after other bytes (formats.py)
    assume(all(b"%PDF-" not in m + r[:1100] for m, r in docs if m.startswith(b"%!")))
    boundary = b"=_fuzz"
    parts = []
    for n, (magic, rest) in enumerate(docs):
        parts.append(
            b"--" + boundary + nl + b"Content-Type: application/octet-stream" + nl
            + b"Content-Disposition: attachment; filename=\"d%d\"" % n + nl
            + b"Content-Transfer-Encoding: base64" + nl + nl + base64.encodebytes(magic + rest) + nl
        )
    message = (b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"" + nl + nl
               + b"".join(parts) + b"--" + boundary + b"--" + nl)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.eml"
        path.write_bytes(message)
        out = Path(tmp) / "out"
        out.mkdir()
        got = extract_documents(path, out)
        assert [d.path.read_bytes() for d in got] == [m + r for m, r in docs]
        assert [d.format for d in got] == ["postscript" if m.startswith(b"%!") else "pdf" for m, _ in docs]


def test_walking_and_decoding_memory_stays_bounded(tmp_path: Path) -> None:
    """Pathological bodies (8 MiB of dashes with no line end, 8 MiB of
    base64 with no line break, 384 KiB of boundary-like lines every 3
    bytes, each examined in Python): the walker and the decoder hold a few
    scan chunks, not the body."""
    import tracemalloc

    from phaserlink.message.mime import MAX_HEADER_BYTES, SCAN_CHUNK, iter_parts

    size = 8 << 20
    bodies = {
        "dashes": b"-" * size,
        "candidates": b"\n--" * (1 << 17),
        "base64": base64.b64encode(b"\0" * (size * 3 // 4)),
    }
    for name, body in bodies.items():
        path = tmp_path / f"{name}.eml"
        path.write_bytes(b"Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                         b"Content-Transfer-Encoding: base64\n\n" + body + b"\n--b--\n")
        tracemalloc.start()
        try:
            for part in iter_parts(path):
                with open(path, "rb") as f:
                    try:
                        for _ in iter_decoded(f, part):
                            pass
                    except MimeError:
                        pass
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * SCAN_CHUNK, (name, peak)
    # a header section larger than the limit is refused, not read whole
    huge = tmp_path / "header.eml"
    huge.write_bytes(b"X: " + b"y" * 100 + b"\n" + b" folded\n" * (MAX_HEADER_BYTES // 8 + 10) + b"\nbody\n")
    try:
        list(iter_parts(huge))
    except MimeError as e:
        assert "header section is longer" in str(e)
    else:
        raise AssertionError("a header over MAX_HEADER_BYTES was accepted")

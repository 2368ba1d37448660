"""Property-based fuzzing of the message/partial reassembler (docs/fuzzing.md).

A message cut at any points (inside the enclosed header, inside a line,
between CR and LF, empty fragments), its fragments given in any order and
some twice, with total on every fragment or only on the last, reassembles to
the original bytes (its header in RFC 2046 5.2.2.1 order: outer fields, then
Content-*/Subject/Message-ID/Encrypted/MIME-Version).  Any bytes as
fragments give a message or a MimeError (PartialError is one), never another
exception.  Memory stays bounded by the copy chunk, not the message size.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from phaserlink.message.mime import MimeError
from phaserlink.message.partial import COPY_CHUNK, reassemble

INNER = ["Subject", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
         "Content-Disposition", "Encrypted"]
OUTER = ["From", "To", "Date", "X-PhaserLink-Copies", "Received", "X-Weird"]
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=0, max_size=30)


@st.composite
def originals(draw):
    """(message bytes, its header fields as (name, raw) in order, newline)."""
    nl = draw(st.sampled_from([b"\n", b"\r\n"]))
    fields = []
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        name = draw(st.sampled_from(INNER + OUTER))
        raw = f"{name}: {draw(VALUE)}".encode()
        if draw(st.booleans()):
            raw += nl + b"\t" + draw(VALUE).encode()  # a folded field
        fields.append((name, raw + nl))
    body = draw(st.one_of(st.binary(max_size=400),
                          st.lists(st.sampled_from([b"%!PS\n", b"\r\n", b"\r", b"\n", b"x" * 50]),
                                   max_size=20).map(b"".join)))
    return b"".join(r for _, r in fields) + nl + body, fields, nl


def is_inner(name: str) -> bool:
    return name.lower().startswith("content-") or name in ("Subject", "Message-ID", "Encrypted", "MIME-Version")


def write_fragments(tmp: Path, message: bytes, fields, nl: bytes, cuts, order, dups, total_everywhere):
    bounds = [0] + sorted(c % (len(message) + 1) for c in cuts) + [len(message)]
    bodies = [message[a:b] for a, b in zip(bounds, bounds[1:])]
    total = len(bodies)
    outer = b"".join(r for name, r in fields if not is_inner(name))
    paths = []
    for n, body in enumerate(bodies, 1):
        t = f"; total={total}" if total_everywhere or n == total else ""
        head = (outer if n == 1 else b"From: someone" + nl) + (
            f"Subject: part {n}".encode() + nl + f"Message-ID: <p{n}@x>".encode() + nl
            + b"MIME-Version: 1.0" + nl
            + f'Content-Type: message/partial; id="fuzz@x";'.encode() + nl + f" number={n}{t}".encode() + nl + nl
        )
        path = tmp / f"frag.{n}"
        path.write_bytes(head + body)
        paths.append(path)
    shuffled = [paths[i % total] for i in order] if order else []
    shuffled = list(dict.fromkeys(shuffled)) + [p for p in paths if p not in shuffled]
    shuffled += [paths[i % total] for i in dups]
    return shuffled


@given(originals(), st.lists(st.integers(min_value=0, max_value=10**6), max_size=6),
       st.lists(st.integers(min_value=0, max_value=50), max_size=8),
       st.lists(st.integers(min_value=0, max_value=50), max_size=3), st.booleans())
def test_any_cuts_any_order_duplicates_give_back_the_original(case, cuts, order, dups, total_everywhere) -> None:
    message, fields, nl = case
    expected = (
        b"".join(r for name, r in fields if not is_inner(name))
        + b"".join(r for name, r in fields if is_inner(name))
        + message[sum(len(r) for _, r in fields):]
    )
    with tempfile.TemporaryDirectory() as tmp:
        frags = write_fragments(Path(tmp), message, fields, nl, cuts, order, dups, total_everywhere)
        out = Path(tmp) / "whole.eml"
        reassemble(frags, out)
        assert out.read_bytes() == expected


@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from([b'Content-Type: message/partial; id=a; number=1\n\n',
                               b'Content-Type: message/partial; id=a; number=2; total=2\n\n',
                               b'Content-Type: message/partial; id=a; number=1; total=1\r\n\r\n',
                               b'Content-Type: message/partial; id=b; number=0\n\n',
                               b'Content-Type: message/partial; id="a"; number=999999999; total=1\n\n']),
              st.binary(max_size=100)).map(b"".join)), min_size=0, max_size=5))
def test_any_bytes_as_fragments_give_a_message_or_a_mime_error(files) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n, data in enumerate(files):
            path = Path(tmp) / f"f{n}"
            path.write_bytes(data)
            paths.append(path)
        try:
            reassemble(paths, Path(tmp) / "whole.eml")
        except MimeError as e:
            assert str(e)


def test_memory_stays_bounded_for_a_big_message_in_many_fragments(tmp_path: Path) -> None:
    """64 MiB through 257 fragments, the enclosed header cut across two of
    them: the reassembler's peak Python allocation stays a few copy chunks."""
    header = b"Subject: big\nContent-Type: application/postscript\n\n"
    piece = b"%!PS " + b"x" * ((1 << 18) - 6) + b"\n"
    bodies = [header[:20], header[20:] + piece] + [piece] * 255
    paths = []
    for n, body in enumerate(bodies, 1):
        path = tmp_path / f"frag.{n}"
        path.write_bytes(f'Content-Type: message/partial; id="big"; number={n}; total={len(bodies)}\n\n'.encode() + body)
        paths.append(path)
    tracemalloc.start()
    try:
        reassemble(paths[::-1], tmp_path / "whole.eml")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "whole.eml").stat().st_size == sum(len(b) for b in bodies)
    assert peak < 4 * COPY_CHUNK, peak

"""Property-based fuzzing of the SMTP DATA reader (docs/fuzzing.md).

The reader's outcome must not depend on how the client's bytes were cut
into packets, and must match a line-by-line model of RFC 5321 written here
the slow, obvious way: the stored message is the input up to the first
``CRLF . CRLF`` (or a first line of ``.``), dot-unstuffed, CRLF -> LF;
a bare CR or LF, a line over ``max_line`` or a size over ``max_size``
refuses it; the bytes after the end are handed back; nothing raises; and
the reader never holds more than one line of ``max_line`` bytes between
chunks.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phaserlink.smtp_relay.data import BARE_LINE_END, LINE_TOO_LONG, TOO_BIG, DataReader

# Pieces that make the awkward cases likely: line ends, stuffed dots, a
# "." line, bare CR and LF, NUL, 8-bit bytes, the end mark itself.
PIECES = st.sampled_from(
    [b"a", b"xyz", b".", b"..", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b" ", b"\r\n.", b"\r\n..",
     b".\r\n", b"\r\n.\r\n", b"\n.\n", b"\r\n.\n", b"Received: x\r\n"]
)
WIRE = st.one_of(
    st.lists(st.one_of(PIECES, st.binary(max_size=8)), max_size=60).map(b"".join),
    st.binary(max_size=300),
)
MAX_LINE = 40


def model(wire: bytes, max_size: int, max_line: int):
    """(refusal codes that apply, stored bytes, rest) -- rest None: no end yet."""
    if wire.startswith(b".\r\n"):
        message, rest = b"", wire[3:]
    else:
        end = wire.find(b"\r\n.\r\n")
        if end < 0:
            return None, None, None
        message, rest = wire[: end + 2], wire[end + 5 :]
    reasons = set()
    lines = message.split(b"\r\n")[:-1] if message else []
    if any(b"\r" in line or b"\n" in line for line in lines):
        reasons.add(BARE_LINE_END.status)
    if any(len(line) + 2 > max_line for line in lines):
        reasons.add(LINE_TOO_LONG.status)
    unstuffed = [line[1:] if line.startswith(b".") else line for line in lines]
    if sum(len(line) + 2 for line in unstuffed) > max_size:
        reasons.add(TOO_BIG.status)
    return reasons, b"".join(line + b"\n" for line in unstuffed), rest


def run(wire: bytes, cuts: list[int], max_size: int, max_line: int):
    out: list[bytes] = []
    reader = DataReader(out.append, max_size=max_size, max_line=max_line)
    rest = None
    bounds = [0] + sorted(c % (len(wire) + 1) for c in cuts) + [len(wire)]
    for a, b in zip(bounds, bounds[1:]):
        chunk = wire[a:b]
        if rest is None:
            rest = reader.feed(chunk)
            # memory bound: between chunks at most one partial line is held
            assert len(reader._pending) <= max_line
        else:
            rest += chunk
    return reader, b"".join(out), rest


@given(WIRE, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
       st.integers(min_value=0, max_value=400))
def test_any_chunking_any_bytes_matches_the_model(wire: bytes, cuts: list[int], max_size: int) -> None:
    reasons, stored, rest = model(wire, max_size, MAX_LINE)
    reader, out, got_rest = run(wire, cuts, max_size, MAX_LINE)
    assert got_rest == rest
    if rest is None:
        return  # still in DATA: nothing decided yet
    verdict = reader.verdict()
    if reasons:
        # of several faults, the first in this order is the one replied
        first = next(r.status for r in (LINE_TOO_LONG, BARE_LINE_END, TOO_BIG) if r.status in reasons)
        assert verdict is not None and verdict.status == first
    else:
        assert verdict is None
        assert out == stored
        assert reader.size == len(stored) + stored.count(b"\n")


@given(WIRE, st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_terminated_message_is_chunking_independent(wire: bytes, cuts: list[int]) -> None:
    """The same input with a final end mark: every cut gives the one-chunk result."""
    wire = wire + b"\r\n.\r\nQUIT\r\n"
    whole_reader, whole_out, whole_rest = run(wire, [], 10**6, MAX_LINE)
    reader, out, rest = run(wire, cuts, 10**6, MAX_LINE)
    assert rest == whole_rest and rest is not None
    assert reader.verdict() == whole_reader.verdict()
    if reader.verdict() is None:
        assert out == whole_out


@given(st.integers(min_value=1, max_value=200), st.sampled_from([1, 7, 999, 1000, 1001, 65536]),
       st.booleans())
def test_an_endless_line_is_not_buffered(count: int, chunk: int, cr_at_cut: bool) -> None:
    """Up to 13 MB without a line end: the reader holds at most max_line
    bytes, refuses the line, and still finds the end mark after it."""
    max_line = 1000
    reader = DataReader(lambda b: None, max_size=10**9, max_line=max_line)
    piece = b"x" * (chunk - 1) + (b"\r" if cr_at_cut else b"x")
    for _ in range(count):
        assert reader.feed(piece) is None
        assert len(reader._pending) <= max_line
    assert reader.feed(b"\r\n.\r\nNOOP\r\n") == b"NOOP\r\n"
    reasons = set()
    if count * chunk + 2 > max_line:
        reasons.add(LINE_TOO_LONG.status)
    if cr_at_cut:
        reasons.add(BARE_LINE_END.status)  # that CR is followed by x or by CRLF
    verdict = reader.verdict()
    first = next((r.status for r in (LINE_TOO_LONG, BARE_LINE_END) if r.status in reasons), None)
    assert (verdict.status if verdict else None) == first

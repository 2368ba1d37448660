"""TOP's header/body cut gives the same bytes however the file is chunked."""

from __future__ import annotations

import random

import pytest

from phaserlink.pop3_store.streaming import TopFilter


def reference_top(data: bytes, n: int) -> bytes:
    """Headers, the blank line, n body lines: line by line, no streaming."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]  # the last piece had no LF
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if line in (b"\n", b"\r\n"):
            return b"".join(out + lines[i + 1 : i + 1 + n])
    return data


def run(data: bytes, n: int, cuts: list[int]) -> bytes:
    f = TopFilter(n)
    out, pos = [], 0
    for cut in cuts + [len(data)]:
        out.append(f.feed(data[pos:cut]))
        pos = cut
    return b"".join(out)


SAMPLES = [
    b"",
    b"\n",
    b"\r\nbody\n",
    b"A: 1\nB: 2\n\nl1\nl2\nl3\n",
    b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3",
    b"A: 1\nno blank line at all\n",
    b"A: \r\n\r\r\n\r\nx\n",  # a line holding "\r" before "\r\n" is not blank
    b"A: 1\n\n\n\nafter blanks\n",
]


@pytest.mark.parametrize("data", SAMPLES)
@pytest.mark.parametrize("n", [0, 1, 2, 10])
def test_whole_buffer(data, n):
    assert run(data, n, []) == reference_top(data, n)


def test_any_chunking_gives_same_bytes():
    rng = random.Random(7)
    pieces = [b"H: v", b"\r", b"\n", b"x", b".", b"\r\n", b""]
    for _ in range(2000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        n = rng.randint(0, 4)
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data), rng.randint(0, 6))))
        assert run(data, n, cuts) == reference_top(data, n), (data, n, cuts)


def test_stops_reading_when_done():
    f = TopFilter(1)
    assert f.feed(b"A: 1\n\nbody 1\nbody 2\n") == b"A: 1\n\nbody 1\n"
    assert f.done
    assert f.feed(b"more\n") == b""

"""The dot-stuffer gives the same bytes however the input is cut."""

import random

import pytest

from phaserlink.message.wire import DotStuffer, stuff


def reference(data: bytes) -> bytes:
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [(b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines]
    return b"".join(out) + b".\r\n"


SAMPLES = [
    b"",
    b".",
    b".\n",
    b"a\n.\nb\n",
    b"a\r\n.\r\n..\r\nb",
    b"x" * 16383 + b"\n.\n" + b"y" * 100,
    b"\r\n\r\n.\r\n",
]


@pytest.mark.parametrize("data", SAMPLES)
def test_matches_reference(data):
    assert stuff(data) == reference(data)


def test_any_chunking_gives_same_bytes():
    rng = random.Random(1)
    for _ in range(300):
        lines = [rng.choice([b".", b"..", b"a", b".x", b"", b"\r"]) * rng.randint(0, 3) for _ in range(20)]
        data = rng.choice([b"\n", b"\r\n"]).join(lines)
        want = stuff(data)
        s = DotStuffer()
        out, i = [], 0
        while i < len(data):
            n = rng.randint(1, 5)
            out.append(s.feed(data[i : i + n]))
            i += n
        out.append(s.finish())
        assert b"".join(out) == want, data


def test_dot_at_chunk_boundary_16384():
    data = b"a" * 16383 + b"\n" + b".\n" + b"tail\n"
    s = DotStuffer()
    wire = s.feed(data[:16384]) + s.feed(data[16384:]) + s.finish()
    assert b"\r\n..\r\n" in wire
    assert wire.endswith(b"tail\r\n.\r\n")

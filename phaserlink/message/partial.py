"""message/partial (RFC 2046 5.2.2) in both directions, streaming.

Relays limit message size (Postfix's default is 10 MB); a print job can be
far larger.  The client splits a job message into fragments that each fit a
limit, and the printer side joins them again, whether they came from us, from
mpack or from another mail program.

Splitting (``split_message``): the whole original message, header included,
is cut at line boundaries into consecutive byte ranges; range N is the body of
fragment N.  Every fragment carries ``id``, ``number`` *and* ``total`` (RFC
2046 only requires total on the last, but a receiver that sees total early
can report progress), is ``7bit``, and is at most *limit* bytes on disk
including its own header (with LF line ends: leave room for CRLF on the wire,
one byte per line, ~1.3 % for base64).  Fragment 1's outer header is the
original header minus Content-*, Subject, Message-ID, Encrypted and
MIME-Version (5.2.2.1), so our X-PhaserLink-* fields survive reassembly; the
original header itself opens fragment 1's body.  Every fragment's header has
From, To, Date, Subject "... (part N of T)", its own Message-ID (derived from
the original, so a re-split of the same job gives the same ids), MIME-Version
and X-PhaserLink-Job-Id.

Reassembly (``reassemble``): bodies are concatenated in number order; the
result's header is fragment 1's outer header except Content-*, Subject,
Message-ID, Encrypted, MIME-Version, followed by exactly those fields from the
enclosed header (RFC 2046 5.2.2.1).  The enclosed header is read from the
concatenated bodies, so a cut anywhere (inside that header, inside a line,
between CR and LF) gives back the original bytes.  Nothing is held in memory
but headers.  See docs/fuzzing.md for the properties the fuzz suite checks.
"""

from __future__ import annotations

import bisect
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

from . import fields
from .build import header_line
from .mime import Headers, MimeError, read_headers

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    PARTIAL_COPY_CHUNK as COPY_CHUNK,
    NEWLINE_WINDOW,
    MAX_FRAGMENTS,
    MAX_ID,
)

"""Bytes copied per step while splitting and reassembling."""

"""Bytes read backwards at a time when looking for a line end to cut at."""

"""A job needing more fragments than this is refused (limit far too small)."""

"""Longest fragment id accepted from mail."""

_INNER_FIELDS = ("subject", "message-id", "encrypted", "mime-version")
_ID_CHARS = re.compile(r"[^\x21-\x7e]")


class PartialError(MimeError):
    """Fragments do not make one message (missing, duplicate, mixed ids)."""


@dataclass(frozen=True)
class PartialInfo:
    """The message/partial parameters of one fragment."""

    id: str
    number: int
    total: int | None

    @classmethod
    def from_headers(cls, headers: Headers) -> PartialInfo | None:
        """The fragment parameters, or None if this is not a usable fragment
        (not message/partial, or id/number missing or garbage)."""
        ctype, params = headers.content_type()
        if ctype != "message/partial":
            return None
        pid = params.get("id", "")
        if not pid or len(pid) > MAX_ID:
            return None
        number = _positive(params.get("number"))
        if number is None:
            return None
        total = _positive(params.get("total"))
        if total is not None and number > total:
            return None
        return cls(pid, number, total)


def _positive(value: str | None) -> int | None:
    if value is None or not re.fullmatch(r"\s*\d{1,9}\s*", value):
        return None
    n = int(value)
    return n if n >= 1 else None


def _is_inner_field(name: str) -> bool:
    name = name.lower()
    return name.startswith("content-") or name in _INNER_FIELDS


# ---------------------------------------------------------------------------
# Splitting


def split_message(
    message_path: str | os.PathLike[str],
    limit: int,
    out_dir: str | os.PathLike[str],
    *,
    id: str | None = None,
) -> list[Path]:
    """Split the message at *message_path* into fragment files of <= *limit* bytes.

    Returns ``[message_path]`` if it already fits; otherwise the fragment
    paths ``out_dir/fragment-NNNN.eml`` in order.  The message must be 7bit
    (our job messages are base64); ValueError otherwise, or if *limit* is too
    small for the headers or for a line.
    """
    message_path = Path(message_path)
    size = message_path.stat().st_size
    if size <= limit:
        return [message_path]
    out_dir = Path(out_dir)
    with open(message_path, "rb") as f:
        original = read_headers(f)
        header_end = f.tell()
        maker = _FragmentHeaders(original, id)
        total = 1
        for _ in range(20):
            plan = _plan(f, size, header_end, limit, maker, total)
            if len(plan) == total:
                break
            total = len(plan)
        else:  # pragma: no cover - digit growth settles in a step or two
            raise ValueError("could not settle the number of fragments")
        paths: list[Path] = []
        try:
            for n, (start, end) in enumerate(plan, 1):
                path = out_dir / f"fragment-{n:04d}.eml"
                paths.append(path)
                with open(path, "wb") as out:
                    out.write(maker.header(n, total))
                    _copy_7bit(f, start, end, out)
        except BaseException:
            for p in paths:
                p.unlink(missing_ok=True)
            raise
    return paths


class _FragmentHeaders:
    """The outer header of fragment N of T, as bytes (LF line ends)."""

    def __init__(self, original: Headers, pid: str | None) -> None:
        self.original = original
        mid = original.get("Message-ID") or ""
        m = re.search(r"<([^<>@\s]+)@([^<>\s]+)>", mid)
        if m:
            self.local, self.domain = m.group(1), m.group(2)
        else:
            self.local, self.domain = secrets.token_hex(12), "phaserlink.invalid"
        if pid is None:
            pid = f"{self.local}@{self.domain}"
        if not pid or _ID_CHARS.search(pid) or '"' in pid or "\\" in pid:
            raise ValueError(f"fragment id {pid!r} must be printable ASCII without quotes")
        self.id = pid
        subject = original.get("Subject")
        self.subject = subject if subject is not None else ""
        self.first = b"".join(f.raw for f in original if not _is_inner_field(f.name))
        self.common = b"".join(
            f.raw for f in original if f.name.lower() in ("from", "to", "date", fields.JOB_ID.lower())
        )

    def header(self, n: int, total: int) -> bytes:
        subject = f"{self.subject} (part {n} of {total})".strip()
        tail = b"".join(
            [
                header_line("Subject", subject),
                header_line("Message-ID", f"<{self.local}.part{n}of{total}@{self.domain}>"),
                b"MIME-Version: 1.0\n",
                f'Content-Type: message/partial; id="{self.id}";\n'
                f" number={n}; total={total}\n".encode("ascii"),
                b"Content-Transfer-Encoding: 7bit\n",
                b"\n",
            ]
        )
        return (self.first if n == 1 else self.common) + tail


def _plan(
    f: BinaryIO, size: int, header_end: int, limit: int, maker: _FragmentHeaders, total: int
) -> list[tuple[int, int]]:
    """Byte ranges of the fragment bodies, assuming *total* fragments."""
    plan: list[tuple[int, int]] = []
    start = 0
    while start < size:
        n = len(plan) + 1
        if n > MAX_FRAGMENTS:
            raise ValueError(f"more than {MAX_FRAGMENTS} fragments needed: limit {limit} is too small")
        room = limit - len(maker.header(n, max(total, n)))
        if room <= 0:
            raise ValueError(f"limit {limit} leaves no room after the fragment's own header")
        if size - start <= room:
            plan.append((start, size))
            break
        end = _last_line_end(f, start, start + room)
        if end is None:
            raise ValueError(f"a line at byte {start} is longer than a fragment of {limit} bytes")
        if n == 1 and end < header_end:
            raise ValueError(f"limit {limit} is too small for the message header ({header_end} bytes)")
        plan.append((start, end))
        start = end
    return plan


def _last_line_end(f: BinaryIO, start: int, end: int) -> int | None:
    """The largest offset in (start, end] that follows a LF, or None."""
    hi = end
    while hi > start:
        lo = max(start, hi - NEWLINE_WINDOW)
        f.seek(lo)
        window = f.read(hi - lo)
        i = window.rfind(b"\n")
        if i != -1:
            return lo + i + 1
        hi = lo
    return None


def _copy_7bit(f: BinaryIO, start: int, end: int, out: BinaryIO) -> None:
    f.seek(start)
    pos = start
    while pos < end:
        chunk = f.read(min(COPY_CHUNK, end - pos))
        if not chunk:
            raise ValueError("message file shrank while it was being split")
        if not chunk.isascii():
            raise ValueError(
                "message/partial needs a 7bit message (RFC 2046 5.2.2); "
                f"found 8-bit data near byte {pos}: encode the data as base64"
            )
        out.write(chunk)
        pos += len(chunk)


# ---------------------------------------------------------------------------
# Reassembly


@dataclass(frozen=True)
class _Fragment:
    path: Path
    info: PartialInfo
    headers: Headers
    body_start: int


def read_fragment(path: str | os.PathLike[str]) -> tuple[Headers, PartialInfo | None]:
    """The top-level header of *path* and its fragment info (None if not one)."""
    with open(path, "rb") as f:
        headers = read_headers(f)
    return headers, PartialInfo.from_headers(headers)


def check_complete(infos: Sequence[PartialInfo]) -> list[int]:
    """Numbers still missing (empty: complete).  PartialError if inconsistent."""
    if not infos:
        raise PartialError("no fragments")
    ids = {i.id for i in infos}
    if len(ids) > 1:
        raise PartialError(f"fragments of different messages: ids {sorted(ids)!r}")
    totals = {i.total for i in infos if i.total is not None}
    if len(totals) > 1:
        raise PartialError(f"fragments disagree on the total: {sorted(totals)}")
    numbers = [i.number for i in infos]
    if len(set(numbers)) != len(numbers):
        dup = sorted({n for n in numbers if numbers.count(n) > 1})
        raise PartialError(f"fragment number(s) {dup} given more than once")
    if not totals:
        # total is only required on the last fragment: we do not know it yet
        return [n for n in range(1, max(numbers) + 2) if n not in numbers]
    total = totals.pop()
    if max(numbers) > total:
        raise PartialError(f"fragment number {max(numbers)} is beyond the total {total}")
    return [n for n in range(1, total + 1) if n not in numbers]


def reassemble(fragment_paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str]) -> None:
    """Join a complete fragment set into the message file *out_path*.

    The paths may come in any order (they are sorted by number).  A fragment
    given twice with the same body (a redelivery) counts once.  Raises
    PartialError if they are not exactly fragments 1..total of one id.

    The enclosed message is the concatenation of the bodies, so its header
    is read from that concatenation (``_Joined``), not from fragment 1 alone:
    a sender may cut anywhere, inside the enclosed header, inside one of its
    lines, even between the CR and the LF of a line end (docs/fuzzing.md).
    """
    frags: list[_Fragment] = []
    for p in fragment_paths:
        with open(p, "rb") as f:
            headers = read_headers(f)
            info = PartialInfo.from_headers(headers)
            if info is None:
                raise PartialError(f"{Path(p).name} is not a message/partial fragment with id and number")
            frags.append(_Fragment(Path(p), info, headers, f.tell()))
    frags = _without_redeliveries(frags)
    missing = check_complete([fr.info for fr in frags])
    if missing:
        raise PartialError(f"fragment(s) {missing[:20]} missing")
    frags.sort(key=lambda fr: fr.info.number)
    first = frags[0]
    with _Joined([(fr.path, fr.body_start) for fr in frags]) as body, open(out_path, "wb") as out:
        inner = read_headers(body)
        rest = body.tell()
        merged = [fl.raw for fl in first.headers if not _is_inner_field(fl.name)]
        enclosed = [fl.raw for fl in inner if _is_inner_field(fl.name)]
        crlf = any(r.endswith(b"\r\n") for r in merged + enclosed)
        out.write(b"".join(_ends_with_newline(r) for r in merged))
        inner_size = sum(len(fl.raw) for fl in inner)
        body.seek(inner_size)
        separator = body.read(rest - inner_size)
        if separator in (b"\n", b"\r\n"):
            # the enclosed header's own empty line, kept as it was
            out.write(b"".join(_ends_with_newline(r) for r in enclosed) + separator)
        elif body.at_end():
            # a header-only message: nothing follows, nothing to add
            out.write(b"".join(enclosed))
        else:
            # ended by a line that is not a field: a blank line keeps that
            # line from being read as a continuation of the outer fields
            out.write(b"".join(_ends_with_newline(r) for r in enclosed))
            out.write(b"\r\n" if crlf else b"\n")
        body.seek(rest)
        body.copy_to(out)


def _without_redeliveries(frags: list[_Fragment]) -> list[_Fragment]:
    """Drop a fragment that repeats an earlier one with the same number and
    the same body; differing bodies under one number stay (check_complete
    refuses them: which one is right cannot be told)."""
    kept: dict[int, list[_Fragment]] = {}
    for fr in frags:
        same = kept.setdefault(fr.info.number, [])
        if not any(_same_body(fr, other) for other in same):
            same.append(fr)
    return [fr for group in kept.values() for fr in group]


def _same_body(a: _Fragment, b: _Fragment) -> bool:
    if a.info != b.info:
        return False
    with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
        fa.seek(0, 2)
        fb.seek(0, 2)
        if fa.tell() - a.body_start != fb.tell() - b.body_start:
            return False
        fa.seek(a.body_start)
        fb.seek(b.body_start)
        while True:
            x, y = fa.read(COPY_CHUNK), fb.read(COPY_CHUNK)
            if x != y:
                return False
            if not x:
                return True


class _Joined:
    """The bodies of the fragments, in order, as one seekable byte stream.

    Offsets are positions in the enclosed message.  Only one fragment file
    is open at a time, and nothing is buffered beyond what one call returns,
    so memory does not grow with the number or size of fragments.
    """

    def __init__(self, segments: Sequence[tuple[Path, int]]) -> None:
        self._paths = [p for p, _ in segments]
        self._starts = [s for _, s in segments]
        self._offsets: list[int] = []  # position of each segment in the stream
        pos = 0
        for path, start in segments:
            self._offsets.append(pos)
            pos += max(0, path.stat().st_size - start)
        self._size = pos
        self._index = -1
        self._file: BinaryIO | None = None
        self._pos = 0
        self.seek(0)

    def __enter__(self) -> _Joined:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def tell(self) -> int:
        return self._pos

    def at_end(self) -> bool:
        return self._pos >= self._size

    def seek(self, pos: int) -> None:
        pos = max(0, min(pos, self._size))
        index = max(0, bisect.bisect_right(self._offsets, pos) - 1)
        self._open(index)
        assert self._file is not None
        self._file.seek(self._starts[index] + pos - self._offsets[index])
        self._pos = pos

    def _open(self, index: int) -> None:
        if index != self._index:
            if self._file is not None:
                self._file.close()
            self._file = open(self._paths[index], "rb")
            self._index = index

    def _next(self) -> bool:
        """Move to the start of the next segment; False at the last one."""
        if self._index + 1 >= len(self._paths):
            return False
        self._open(self._index + 1)
        assert self._file is not None
        self._file.seek(self._starts[self._index])
        return True

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        want = self._size - self._pos if n < 0 else n
        while want > 0:
            assert self._file is not None
            piece = self._file.read(min(want, COPY_CHUNK))
            if not piece:
                if not self._next():
                    break
                continue
            out.append(piece)
            want -= len(piece)
            self._pos += len(piece)
        return b"".join(out)

    def readline(self, limit: int = -1) -> bytes:
        out: list[bytes] = []
        got = 0
        while limit < 0 or got < limit:
            assert self._file is not None
            piece = self._file.readline(-1 if limit < 0 else limit - got)
            if not piece:
                if not self._next():
                    break
                continue
            out.append(piece)
            got += len(piece)
            self._pos += len(piece)
            if piece.endswith(b"\n"):
                break
        return b"".join(out)

    def copy_to(self, out: BinaryIO) -> None:
        while True:
            chunk = self.read(COPY_CHUNK)
            if not chunk:
                return
            out.write(chunk)


def _ends_with_newline(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\n"

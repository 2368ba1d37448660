"""A streaming MIME reader: headers in memory, bodies as offsets into a file.

Python's ``email`` parser holds a message several times over in memory
(about 7x for a large base64 job, see docs/README.md), so a
500 MB print job would need gigabytes.  Here only header sections are read
into memory (they are small and bounded by ``MAX_HEADER_BYTES``); a body is
described by its byte offsets in the file on disk, found by scanning for
boundary lines in ``SCAN_CHUNK`` pieces, and decoded chunk by chunk straight
into an output file.

The reader is tolerant where mail in the wild is sloppy (LF or CRLF line
ends, a missing close delimiter, whitespace after a boundary, bare text
before the first header) and strict where a silent error would print the
wrong thing (invalid base64 characters, truncated base64, unknown transfer
encodings): those raise ``DecodeError`` with a sentence a user can act on.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from os import PathLike
from typing import BinaryIO, Iterator, Mapping
from urllib.parse import unquote_to_bytes

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MIME_MAX_HEADER_BYTES as MAX_HEADER_BYTES,
    MAX_LINE,
    SCAN_CHUNK,
    MAX_BOUNDARY_LINE,
    MAX_DEPTH,
    MIME_MAX_PARTS as MAX_PARTS,
)

"""A header section larger than this is refused (no print job needs it)."""

"""Longest header line read at once; longer lines are an error in headers."""

"""Bytes read at a time while looking for boundaries and while decoding."""

"""A boundary line is at most 70 + 4 characters plus transport padding."""

"""Nesting limit for multiparts and message/rfc822 (a defence, not a need)."""

"""Most leaf parts walked in one message."""

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WHITESPACE = b" \t\r\n\x0b\x0c"


class MimeError(Exception):
    """The message is malformed beyond what we tolerate; str() says how."""


class DecodeError(MimeError):
    """A body cannot be decoded (bad base64, unknown encoding, ...)."""


# ---------------------------------------------------------------------------
# Header fields


@dataclass(frozen=True)
class Field:
    """One header field: name as written, unfolded value, and the raw bytes.

    ``raw`` keeps folding and line ends exactly, so fields can be copied into
    another message (reassembly) without rewriting them.
    """

    name: str
    value: str
    raw: bytes


@dataclass(frozen=True)
class Headers:
    """A header section.  Lookups are case-insensitive; order is kept."""

    fields: tuple[Field, ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field's unfolded value, stripped, or *default*."""
        key = name.lower()
        for f in self.fields:
            if f.name.lower() == key:
                return f.value.strip()
        return default

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [f.value.strip() for f in self.fields if f.name.lower() == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def display(self, name: str, default: str | None = None) -> str | None:
        """The value with RFC 2047 encoded-words decoded, for people to read."""
        value = self.get(name)
        return default if value is None else decode_words(value)

    def content_type(self) -> tuple[str, dict[str, str]]:
        """(type/subtype lower-cased, params); RFC 2045 5.2 default if absent
        or unparseable: text/plain; charset=us-ascii."""
        value = self.get("Content-Type")
        if value is not None:
            ctype, params = parse_params(value)
            if re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+", ctype):
                return ctype, params
        return "text/plain", {"charset": "us-ascii"}

    def disposition(self) -> tuple[str | None, dict[str, str]]:
        """(inline/attachment/... or None, params) of Content-Disposition."""
        value = self.get("Content-Disposition")
        if value is None:
            return None, {}
        return parse_params(value)

    def transfer_encoding(self) -> str:
        value = self.get("Content-Transfer-Encoding")
        return (value or "7bit").strip().lower() or "7bit"

    def raw(self) -> bytes:
        return b"".join(f.raw for f in self.fields)


def decode_words(value: str) -> str:
    """RFC 2047 decoding for display; undecodable words are left as they are."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeError, binascii.Error):
        return value


def read_headers(f: BinaryIO) -> Headers:
    """Read a header section from *f*'s position; leave *f* at the body.

    Ends at the empty line (which is consumed) or at EOF.  A line that is
    neither a field nor a continuation ends the headers too, and is left to
    be the first body line (as Python's email parser does); this makes a
    file with no header at all read as an empty header plus the file.
    """
    fields: list[Field] = []
    total = 0
    cur_name: str | None = None
    cur_raw: list[bytes] = []

    def flush() -> None:
        if cur_name is not None:
            raw = b"".join(cur_raw)
            value = _text(raw.split(b":", 1)[1])
            value = re.sub(r"\r?\n(?=[ \t])", "", value).rstrip("\r\n")
            fields.append(Field(cur_name, value, raw))

    while True:
        pos = f.tell()
        line = f.readline(MAX_LINE)
        if not line:
            break
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise MimeError(f"header section is longer than {MAX_HEADER_BYTES} bytes")
        if not line.endswith(b"\n") and len(line) == MAX_LINE:
            raise MimeError(f"a header line is longer than {MAX_LINE} bytes")
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t") and cur_name is not None:
            cur_raw.append(line)
            continue
        m = _FIELD_NAME.match(line)
        if m is None:
            f.seek(pos)  # not a header: the body starts here
            break
        flush()
        cur_name = m.group(1).decode("ascii")
        cur_raw = [line]
    flush()
    return Headers(tuple(fields))


def _text(raw: bytes) -> str:
    """Header bytes -> str: UTF-8 (RFC 6532) where valid, else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# ---------------------------------------------------------------------------
# Parameters (RFC 2045 5.1, RFC 2231)


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """``"type/sub; a=b; c*=utf-8''x%20y"`` -> ``("type/sub", {"a": "b", "c": "x y"})``.

    Names are lower-cased.  RFC 2231 continuations (``name*0``, ``name*1*``)
    are joined and charset-decoded; an RFC 2231 value wins over a plain one
    of the same name.  Unparseable pieces are skipped.
    """
    items = _split_params(value)
    main = items[0].strip().lower() if items else ""
    plain: dict[str, str] = {}
    extended: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[bool, str]]] = {}
    for item in items[1:]:
        name, sep, val = item.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        val = _unquote(val.strip())
        if not name:
            continue
        m = re.fullmatch(r"([^*]+)\*(\d+)(\*?)", name)
        if m:
            pieces.setdefault(m.group(1), {})[int(m.group(2))] = (bool(m.group(3)), val)
        elif name.endswith("*"):
            extended[name[:-1]] = _decode_2231(val, first=True)
        else:
            plain[name] = val
    for name, parts in pieces.items():
        charset = None
        out: list[bytes] = []
        for n in sorted(parts):
            encoded, val = parts[n]
            if encoded:
                if n == 0 and val.count("'") >= 2:
                    charset, _lang, val = val.split("'", 2)
                out.append(unquote_to_bytes(val))
            else:
                out.append(val.encode("utf-8"))
        extended[name] = _bytes_to_str(b"".join(out), charset)
    plain.update(extended)
    return main, plain


def _split_params(value: str) -> list[str]:
    """Split on ';' outside quoted strings and comments."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    escaped = False
    depth = 0
    for ch in value:
        if escaped:
            cur.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == '"' and depth == 0:
            quoted = not quoted
            cur.append(ch)
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _unquote(val: str) -> str:
    if len(val) >= 2 and val[0] == val[-1] == '"':
        return re.sub(r"\\(.)", r"\1", val[1:-1])
    return val


def _decode_2231(val: str, first: bool) -> str:
    charset = None
    if first and val.count("'") >= 2:
        charset, _lang, val = val.split("'", 2)
    return _bytes_to_str(unquote_to_bytes(val), charset)


def _bytes_to_str(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return data.decode("latin-1")


# ---------------------------------------------------------------------------
# Walking the parts


@dataclass(frozen=True)
class Part:
    """A leaf entity of a message: its headers and where its body lies.

    The body is ``[body_start, body_end)`` in the file, still in its transfer
    encoding; the line break before a boundary belongs to the boundary (RFC
    2046 5.1.1) and is not included.  ``ancestors`` lists the content types
    of the enclosing multiparts/messages, outermost first.
    """

    headers: Headers
    body_start: int
    body_end: int
    depth: int
    content_type: str
    params: Mapping[str, str]
    transfer_encoding: str = "7bit"
    disposition: str | None = None
    filename: str | None = None
    ancestors: tuple[str, ...] = ()
    index: int = 0

    @property
    def size(self) -> int:
        """Encoded size of the body in bytes."""
        return self.body_end - self.body_start


@dataclass(frozen=True)
class _Delimiter:
    line_start: int
    line_end: int
    boundary: bytes
    close: bool


def iter_parts(path: str | PathLike[str]) -> Iterator[Part]:
    """Yield the leaf parts of the message in file *path*, in order.

    A non-multipart message yields itself (depth 0).  Multiparts are entered
    (depth grows by one per level) and so are message/rfc822 parts in an
    identity encoding (a forwarded mail's attachments are found too).
    """
    with open(path, "rb") as f:
        yield from iter_parts_file(f)


def iter_parts_file(f: BinaryIO) -> Iterator[Part]:
    """``iter_parts`` over an open, seekable binary file (or BytesIO)."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    walker = _Walker(f, size)
    yield from walker.entity(0, (), 0, ())


class _Walker:
    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.count = 0

    def entity(
        self, start: int, bounds: tuple[bytes, ...], depth: int, ancestors: tuple[str, ...]
    ) -> Iterator[Part]:
        """Walk one entity at *start*; returns (via StopIteration) where the
        caller should resume looking for its own boundaries."""
        if depth > MAX_DEPTH:
            raise MimeError(f"message is nested more than {MAX_DEPTH} levels deep")
        self.f.seek(start)
        headers = read_headers(self.f)
        body_start = self.f.tell()
        ctype, params = headers.content_type()
        cte = headers.transfer_encoding()
        boundary = params.get("boundary", "")
        if ctype.startswith("multipart/") and _valid_boundary(boundary):
            resume = yield from self.multipart(
                body_start, boundary.encode("latin-1", "replace"), bounds, depth + 1,
                ancestors + (ctype,),
            )
            return resume
        if ctype == "message/rfc822" and cte in ("7bit", "8bit", "binary"):
            resume = yield from self.entity(body_start, bounds, depth + 1, ancestors + (ctype,))
            return resume
        delim = self.find(body_start, bounds)
        if delim is None:
            body_end, resume = self.size, self.size
        else:
            body_end, resume = self.break_before(delim.line_start, body_start), delim.line_start
        self.count += 1
        if self.count > MAX_PARTS:
            raise MimeError(f"message has more than {MAX_PARTS} parts")
        disp, dparams = headers.disposition()
        filename = dparams.get("filename") or params.get("name")
        yield Part(
            headers=headers,
            body_start=body_start,
            body_end=body_end,
            depth=depth,
            content_type=ctype,
            params=params,
            transfer_encoding=cte,
            disposition=disp,
            filename=decode_words(filename) if filename else None,
            ancestors=ancestors,
            index=self.count - 1,
        )
        return resume

    def multipart(
        self, start: int, boundary: bytes, outer: tuple[bytes, ...], depth: int,
        ancestors: tuple[str, ...],
    ) -> Iterator[Part]:
        bounds = (boundary,) + outer
        delim = self.find(start, bounds)
        while True:
            if delim is None:
                return self.size  # no (more) delimiters: tolerate a cut-off end
            if delim.boundary != boundary:
                return delim.line_start  # an outer boundary ends us early
            if delim.close:
                return delim.line_end  # epilogue follows: the caller skips it
            resume = yield from self.entity(delim.line_end, bounds, depth, ancestors)
            delim = self.find(resume, bounds)

    def break_before(self, line_start: int, body_start: int) -> int:
        """Offset of the line break that precedes a boundary line."""
        end = line_start - 1
        if end <= body_start:
            return body_start
        self.f.seek(end - 1)
        if self.f.read(1) == b"\r":
            end -= 1
        return max(end, body_start)

    def find(self, pos: int, bounds: tuple[bytes, ...]) -> _Delimiter | None:
        """The first boundary line of *bounds* at or after line start *pos*.

        Reads ``SCAN_CHUNK`` at a time and looks for ``\\n--`` with
        ``bytes.find``; only candidate lines are examined in Python, so a
        base64 body (which has no ``-``) is skipped at C speed.
        """
        if not bounds or pos >= self.size:
            return None
        lines = {}
        for b in bounds:
            lines.setdefault(b"--" + b, (b, False))
            lines.setdefault(b"--" + b + b"--", (b, True))
        f = self.f
        f.seek(pos)
        base = pos - 1  # file offset of buf[0]; a virtual LF precedes pos
        buf = b"\n" + f.read(SCAN_CHUNK)
        eof = base + len(buf) >= self.size
        k = 0
        while True:
            j = buf.find(b"\n--", k)
            if j == -1:
                if eof:
                    return None
                # keep a trailing "\n" or "\n-" so a split "\n--" is seen
                if buf.endswith(b"\n"):
                    tail = b"\n"
                elif buf.endswith(b"\n-"):
                    tail = b"\n-"
                else:
                    tail = b""
                base += len(buf) - len(tail)
                buf = tail + f.read(SCAN_CHUNK)
                eof = base + len(buf) >= self.size
                k = 0
                continue
            e = buf.find(b"\n", j + 1, j + 1 + MAX_BOUNDARY_LINE + 1)
            if e == -1:
                if not eof and len(buf) - (j + 1) <= MAX_BOUNDARY_LINE:
                    base += j
                    buf = buf[j:] + f.read(SCAN_CHUNK)
                    eof = base + len(buf) >= self.size
                    k = 0
                    continue
                if eof and len(buf) - (j + 1) <= MAX_BOUNDARY_LINE:
                    line, line_end = buf[j + 1:], base + len(buf)
                else:
                    k = j + 1
                    continue
            else:
                line, line_end = buf[j + 1:e], base + e + 1
            hit = lines.get(line.rstrip(b" \t\r"))
            if hit is not None:
                return _Delimiter(base + j + 1, line_end, hit[0], hit[1])
            k = j + 1


def _valid_boundary(boundary: str) -> bool:
    return 0 < len(boundary) <= 200


# ---------------------------------------------------------------------------
# Decoding bodies


def iter_decoded(f: BinaryIO, part: Part, chunk: int = SCAN_CHUNK) -> Iterator[bytes]:
    """Yield the decoded body of *part* from open file *f* in pieces."""
    cte = part.transfer_encoding
    if cte in ("7bit", "8bit", "binary"):
        raw = _iter_range(f, part.body_start, part.body_end, chunk)
        yield from raw
    elif cte == "base64":
        yield from _decode_base64(_iter_range(f, part.body_start, part.body_end, chunk))
    elif cte == "quoted-printable":
        yield from _decode_qp(_iter_range(f, part.body_start, part.body_end, chunk))
    else:
        raise DecodeError(
            f"unsupported Content-Transfer-Encoding {cte!r} "
            "(expected base64, quoted-printable, 7bit, 8bit or binary)"
        )


def decode_body_to(path: str | PathLike[str], part: Part, out_file: BinaryIO) -> int:
    """Decode *part*'s body from the message at *path* into *out_file*.

    Returns the number of bytes written.  Raises DecodeError (a MimeError)
    with a human-readable reason when the body cannot be decoded.
    """
    written = 0
    with open(path, "rb") as f:
        for piece in iter_decoded(f, part):
            out_file.write(piece)
            written += len(piece)
    return written


def _iter_range(f: BinaryIO, start: int, end: int, chunk: int) -> Iterator[bytes]:
    pos = start
    while pos < end:
        f.seek(pos)
        data = f.read(min(chunk, end - pos))
        if not data:
            break
        pos += len(data)
        yield data


def _decode_base64(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Base64 ignoring line breaks and whitespace; anything else is an error.

    Decodes whole quartets as they arrive; padding may only come at the end.
    Offsets in errors count encoded characters, so a user can find the spot.
    """
    carry = b""
    seen = 0
    pads = 0
    for raw in chunks:
        data = raw.translate(None, _WHITESPACE)
        if not data:
            continue
        bad = data.translate(None, _B64_ALPHABET + b"=")
        if bad:
            at = seen + data.index(bad[:1])
            raise DecodeError(
                f"invalid character {bad[:1]!r} in base64 data at encoded character {at}"
            )
        eq = data.find(b"=")
        if pads and eq != 0:
            raise DecodeError(f"base64 data continues after the '=' padding (character {seen})")
        if eq != -1:
            after = data[eq:]
            rest = after.lstrip(b"=")
            if rest:
                at = seen + len(data) - len(rest)
                raise DecodeError(f"base64 data continues after the '=' padding (encoded character {at})")
            pads += len(after)
            if pads > 2:
                raise DecodeError(f"too much '=' padding in base64 data (encoded character {seen + eq})")
        seen += len(data)
        data = carry + data
        usable = len(data) - len(data) % 4
        carry = data[usable:]
        if usable:
            try:
                yield binascii.a2b_base64(data[:usable], strict_mode=True)
            except binascii.Error as e:
                raise DecodeError(f"invalid base64 data near encoded character {seen}: {e}") from None
    if carry:
        raise DecodeError(
            f"base64 data is truncated: {len(carry)} character(s) left over at the end"
        )


def _decode_qp(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Quoted-printable, decoded on line boundaries so no escape is split."""
    carry = b""
    for raw in chunks:
        data = carry + raw
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            # one very long line: decode all but an "=" or "=X" at the very
            # end, whose escape the next chunk completes (an "=" further
            # back already has its two digits; found by tests/test_fuzz_mime.py)
            cut = len(data)
            eq = data.find(b"=", max(0, len(data) - 2))
            if eq != -1:
                cut = eq
        carry = data[cut:]
        if cut:
            yield binascii.a2b_qp(data[:cut])
    if carry:
        yield binascii.a2b_qp(carry)

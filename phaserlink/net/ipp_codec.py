"""The IPP message encoding (RFC 8010 section 3): bytes <-> :class:`Message`.

Why our own: the maintained Python IPP libraries (pyipp, aioipp) are tied to
asyncio and aiohttp; the appliance runs on one Twisted reactor and streams
documents through ``twisted.web.client``.  The encoding itself is small and
fully specified, so this module is the whole of it and nothing else: no
I/O, no HTTP, no policy (what an operation means lives in
:mod:`phaserlink.net.ipp_client`).  See docs/ipp.md.

The model keeps everything a message can say, so that decode(encode(m)) ==
m for every message and encode(decode(b)) == b for every well-formed one:

- a :class:`Message` has a version, an operation-id or status-code, a
  request-id and a sequence of :class:`Group` (delimiter tag + attributes,
  groups of the same tag may repeat);
- an :class:`Attribute` has a name and one or more :class:`Value` (a
  1setOf is an attribute with several values, each with its own tag: RFC
  8011 allows e.g. ``keyword | name`` in one set);
- a :class:`Value` is a tag and a Python value: ``int`` (integer, enum),
  ``bool``, ``str`` (text, name, keyword, uri, charset, ...), ``bytes``
  (octetString and any tag this module does not know), :class:`DateTime`,
  :class:`Resolution`, :class:`IntRange`, :class:`StringWithLanguage`,
  :class:`Collection`, or ``None`` for the out-of-band tags (unsupported,
  unknown, no-value, ...).

Strings are UTF-8 (the client always says ``attributes-charset utf-8``);
bytes that are not UTF-8 survive a round trip (``surrogateescape``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Iterator, Union

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_COLLECTION_DEPTH,
)

#: Largest value the 2-octet length fields can carry.
MAX_FIELD = 0xFFFF


class IPPEncodingError(ValueError):
    """Bytes that are not an IPP message, or a value that cannot be encoded."""


class Delimiter(IntEnum):
    """begin-attribute-group tags and the end tag (RFC 8010 3.5.1)."""

    OPERATION = 0x01
    JOB = 0x02
    END = 0x03
    PRINTER = 0x04
    UNSUPPORTED = 0x05
    SUBSCRIPTION = 0x06
    EVENT_NOTIFICATION = 0x07
    RESOURCE = 0x08
    DOCUMENT = 0x09
    SYSTEM = 0x0A


class Tag(IntEnum):
    """Value tags (RFC 8010 3.5.2, with the out-of-band values of RFC 3380
    and RFC 8011)."""

    # out-of-band: the value field is empty
    UNSUPPORTED = 0x10
    DEFAULT = 0x11
    UNKNOWN = 0x12
    NO_VALUE = 0x13
    NOT_SETTABLE = 0x15
    DELETE_ATTRIBUTE = 0x16
    ADMIN_DEFINE = 0x17
    # integer types
    INTEGER = 0x21
    BOOLEAN = 0x22
    ENUM = 0x23
    # octetString types
    OCTET_STRING = 0x30
    DATE_TIME = 0x31
    RESOLUTION = 0x32
    RANGE_OF_INTEGER = 0x33
    BEGIN_COLLECTION = 0x34
    TEXT_WITH_LANGUAGE = 0x35
    NAME_WITH_LANGUAGE = 0x36
    END_COLLECTION = 0x37
    # character-string types
    TEXT = 0x41
    NAME = 0x42
    KEYWORD = 0x44
    URI = 0x45
    URI_SCHEME = 0x46
    CHARSET = 0x47
    NATURAL_LANGUAGE = 0x48
    MIME_MEDIA_TYPE = 0x49
    MEMBER_ATTR_NAME = 0x4A
    # the next four octets of the value are the real tag
    EXTENSION = 0x7F


_STRING_TAGS = frozenset({Tag.TEXT, Tag.NAME, Tag.KEYWORD, Tag.URI, Tag.URI_SCHEME, Tag.CHARSET,
                          Tag.NATURAL_LANGUAGE, Tag.MIME_MEDIA_TYPE, Tag.MEMBER_ATTR_NAME})
_INT32 = struct.Struct(">i")
_RESOLUTION = struct.Struct(">iib")
_RANGE = struct.Struct(">ii")
_DATE = struct.Struct(">HBBBBBBcBB")
_HEADER = struct.Struct(">BBhi")


def is_out_of_band(tag: int) -> bool:
    """0x10-0x1F carry no value (RFC 8010 3.5.2)."""
    return 0x10 <= tag <= 0x1F


@dataclass(frozen=True)
class DateTime:
    """RFC 2579 DateAndTime, field for field (IPP's dateTime is always the
    11-octet form with the offset from UTC)."""

    year: int
    month: int
    day: int
    hour: int
    minutes: int
    seconds: int
    deciseconds: int = 0
    utc_direction: str = "+"
    utc_hours: int = 0
    utc_minutes: int = 0


@dataclass(frozen=True)
class Resolution:
    """*units*: 3 = dots per inch, 4 = dots per centimetre."""

    cross_feed: int
    feed: int
    units: int = 3


@dataclass(frozen=True)
class IntRange:
    """rangeOfInteger: *lower* <= *upper*, both included."""

    lower: int
    upper: int


@dataclass(frozen=True)
class StringWithLanguage:
    """textWithLanguage / nameWithLanguage."""

    language: str
    text: str


PyValue = Union[None, bool, int, str, bytes, DateTime, Resolution, IntRange, StringWithLanguage,
                "Collection"]


@dataclass(frozen=True)
class Value:
    """One value and the tag it is encoded with."""

    tag: int
    value: PyValue = None


@dataclass(frozen=True)
class Attribute:
    """A named attribute with one value, or several (1setOf)."""

    name: str
    values: tuple[Value, ...]

    @property
    def value(self) -> PyValue:
        """The first value's Python value (most attributes have one)."""
        return self.values[0].value

    @property
    def all(self) -> list[PyValue]:
        """Every value's Python value, in order."""
        return [v.value for v in self.values]

    @property
    def tag(self) -> int:
        return self.values[0].tag


@dataclass(frozen=True)
class Collection:
    """A collection value (RFC 8010 3.1.6): member attributes, in order."""

    members: tuple[Attribute, ...] = ()

    def get(self, name: str) -> Attribute | None:
        for member in self.members:
            if member.name == name:
                return member
        return None

    def __getitem__(self, name: str) -> PyValue:
        member = self.get(name)
        if member is None:
            raise KeyError(name)
        return member.value


@dataclass(frozen=True)
class Group:
    """An attribute group: its delimiter tag and its attributes."""

    tag: int
    attributes: tuple[Attribute, ...] = ()

    def get(self, name: str) -> Attribute | None:
        for a in self.attributes:
            if a.name == name:
                return a
        return None

    def __getitem__(self, name: str) -> PyValue:
        a = self.get(name)
        if a is None:
            raise KeyError(name)
        return a.value

    def __contains__(self, name: object) -> bool:
        return any(a.name == name for a in self.attributes)


@dataclass(frozen=True)
class Message:
    """A request (*code* = operation-id) or a response (*code* = status-code)."""

    code: int
    request_id: int
    groups: tuple[Group, ...] = ()
    version: tuple[int, int] = (2, 0)

    def group(self, tag: int) -> Group | None:
        """The first group with *tag*, or None."""
        for g in self.groups:
            if g.tag == tag:
                return g
        return None

    def groups_of(self, tag: int) -> list[Group]:
        return [g for g in self.groups if g.tag == tag]


# -- building values --------------------------------------------------------------------

def attr(name: str, tag: int, *values: PyValue) -> Attribute:
    """An attribute whose values all have *tag*; ``attr(n, Tag.NO_VALUE)``
    gives one out-of-band value."""
    if not values:
        if not is_out_of_band(tag):
            raise IPPEncodingError(f"{name}: no value")
        values = (None,)
    return Attribute(name, tuple(Value(tag, v) for v in values))


def collection(**members: Attribute | Iterable[Attribute]) -> Collection:
    """Sugar for tests and requests: ``collection(a=attr("a", ...))``."""
    out: list[Attribute] = []
    for m in members.values():
        out.extend([m] if isinstance(m, Attribute) else m)
    return Collection(tuple(out))


# -- encoding ---------------------------------------------------------------------------

def _s(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _field(data: bytes, what: str) -> bytes:
    if len(data) > MAX_FIELD:
        raise IPPEncodingError(f"{what}: {len(data)} octets, more than {MAX_FIELD}")
    return len(data).to_bytes(2, "big") + data


def _encode_plain(value: Value) -> bytes:
    """The value field (without its length) of a non-collection value."""
    tag, v = value.tag, value.value
    if is_out_of_band(tag):
        return b"" if v is None else bytes(v)  # type: ignore[arg-type]
    if tag == Tag.BOOLEAN:
        if not isinstance(v, bool):
            raise IPPEncodingError(f"boolean value {v!r}")
        return b"\x01" if v else b"\x00"
    if tag in (Tag.INTEGER, Tag.ENUM):
        if isinstance(v, bool) or not isinstance(v, int) or not -2**31 <= v < 2**31:
            raise IPPEncodingError(f"integer value {v!r}")
        return _INT32.pack(v)
    if tag == Tag.DATE_TIME:
        if not isinstance(v, DateTime):
            raise IPPEncodingError(f"dateTime value {v!r}")
        return _DATE.pack(v.year, v.month, v.day, v.hour, v.minutes, v.seconds, v.deciseconds,
                          v.utc_direction.encode("ascii"), v.utc_hours, v.utc_minutes)
    if tag == Tag.RESOLUTION:
        if not isinstance(v, Resolution):
            raise IPPEncodingError(f"resolution value {v!r}")
        return _RESOLUTION.pack(v.cross_feed, v.feed, v.units)
    if tag == Tag.RANGE_OF_INTEGER:
        if not isinstance(v, IntRange):
            raise IPPEncodingError(f"rangeOfInteger value {v!r}")
        return _RANGE.pack(v.lower, v.upper)
    if tag in (Tag.TEXT_WITH_LANGUAGE, Tag.NAME_WITH_LANGUAGE):
        if not isinstance(v, StringWithLanguage):
            raise IPPEncodingError(f"withLanguage value {v!r}")
        return _field(_s(v.language), "language") + _field(_s(v.text), "text")
    if tag in _STRING_TAGS:
        if not isinstance(v, str):
            raise IPPEncodingError(f"string value {v!r} for tag {tag:#x}")
        return _s(v)
    if not isinstance(v, (bytes, bytearray)):
        raise IPPEncodingError(f"octetString value {v!r} for tag {tag:#x}")
    return bytes(v)


def _encode_value(out: list[bytes], name: str, value: Value, depth: int) -> None:
    if value.tag == Tag.BEGIN_COLLECTION:
        if not isinstance(value.value, Collection):
            raise IPPEncodingError(f"{name}: collection value {value.value!r}")
        if depth >= MAX_COLLECTION_DEPTH:
            raise IPPEncodingError(f"{name}: collections nested deeper than {MAX_COLLECTION_DEPTH}")
        out += [bytes([Tag.BEGIN_COLLECTION]), _field(_s(name), "name"), b"\x00\x00"]
        for member in value.value.members:
            out += [bytes([Tag.MEMBER_ATTR_NAME]), b"\x00\x00", _field(_s(member.name), "member name")]
            for v in member.values:
                _encode_value(out, "", v, depth + 1)
        out += [bytes([Tag.END_COLLECTION]), b"\x00\x00\x00\x00"]
        return
    if not 0x10 <= value.tag <= 0xFF or value.tag in (Tag.END_COLLECTION, Tag.MEMBER_ATTR_NAME):
        raise IPPEncodingError(f"{name}: bad value tag {value.tag!r}")
    out += [bytes([value.tag]), _field(_s(name), "name"), _field(_encode_plain(value), name or "value")]


def encode_attribute(attribute: Attribute) -> bytes:
    if not attribute.values:
        raise IPPEncodingError(f"{attribute.name}: no values")
    out: list[bytes] = []
    for i, value in enumerate(attribute.values):
        _encode_value(out, attribute.name if i == 0 else "", value, 0)
    return b"".join(out)


def encode(message: Message) -> bytes:
    """The message's bytes, up to and including end-of-attributes-tag (the
    document data, if any, follows)."""
    major, minor = message.version
    out = [_HEADER.pack(major, minor, message.code, message.request_id)]
    for group in message.groups:
        if not 0x00 < group.tag < 0x10 or group.tag == Delimiter.END:
            raise IPPEncodingError(f"bad group tag {group.tag!r}")
        out.append(bytes([group.tag]))
        for attribute in group.attributes:
            if not attribute.name:
                raise IPPEncodingError("an attribute needs a name")
            out.append(encode_attribute(attribute))
    out.append(bytes([Delimiter.END]))
    return b"".join(out)


# -- decoding ---------------------------------------------------------------------------

class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise IPPEncodingError(f"truncated message: {what} at octet {self.pos}")
        chunk = bytes(self.data[self.pos:end])
        self.pos = end
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def field(self, what: str) -> bytes:
        return self.take(int.from_bytes(self.take(2, what), "big"), what)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None


def _decode_plain(tag: int, raw: bytes) -> PyValue:
    def need(n: int) -> None:
        if len(raw) != n:
            raise IPPEncodingError(f"value tag {tag:#x}: {len(raw)} octets, expected {n}")

    if is_out_of_band(tag):
        return None if not raw else raw  # RFC 8010: ignore a value that should not be there
    if tag == Tag.BOOLEAN:
        need(1)
        if raw[0] > 1:
            raise IPPEncodingError(f"boolean value {raw[0]}")
        return raw[0] == 1
    if tag in (Tag.INTEGER, Tag.ENUM):
        need(4)
        return _INT32.unpack(raw)[0]
    if tag == Tag.DATE_TIME:
        need(11)
        f = _DATE.unpack(raw)
        return DateTime(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7].decode("latin-1"), f[8], f[9])
    if tag == Tag.RESOLUTION:
        need(9)
        return Resolution(*_RESOLUTION.unpack(raw))
    if tag == Tag.RANGE_OF_INTEGER:
        need(8)
        return IntRange(*_RANGE.unpack(raw))
    if tag in (Tag.TEXT_WITH_LANGUAGE, Tag.NAME_WITH_LANGUAGE):
        r = _Reader(raw)
        lang = r.field("language").decode("utf-8", "surrogateescape")
        text = r.field("text").decode("utf-8", "surrogateescape")
        if r.pos != len(raw):
            raise IPPEncodingError(f"value tag {tag:#x}: trailing octets")
        return StringWithLanguage(lang, text)
    if tag in _STRING_TAGS:
        return raw.decode("utf-8", "surrogateescape")
    return raw


def _decode_collection(r: _Reader, depth: int) -> Collection:
    """Read members up to and including endCollection (the begCollection
    header was already read)."""
    if depth > MAX_COLLECTION_DEPTH:
        raise IPPEncodingError(f"collections nested deeper than {MAX_COLLECTION_DEPTH}")
    members: list[Attribute] = []
    name: str | None = None
    values: list[Value] = []
    while True:
        tag = r.byte("value tag")
        if tag < 0x10:
            raise IPPEncodingError(f"collection not ended before group tag {tag:#x}")
        if r.field("name"):
            raise IPPEncodingError("a collection member value must have an empty name")
        if tag == Tag.END_COLLECTION:
            r.field("value")
            if name is not None:
                if not values:
                    raise IPPEncodingError(f"member {name!r} has no value")
                members.append(Attribute(name, tuple(values)))
            return Collection(tuple(members))
        if tag == Tag.MEMBER_ATTR_NAME:
            if name is not None:
                if not values:
                    raise IPPEncodingError(f"member {name!r} has no value")
                members.append(Attribute(name, tuple(values)))
            name = r.field("member name").decode("utf-8", "surrogateescape")
            if not name:
                raise IPPEncodingError("empty member name")
            values = []
            continue
        if name is None:
            raise IPPEncodingError("collection value before memberAttrName")
        if tag == Tag.BEGIN_COLLECTION:
            r.field("value")
            values.append(Value(tag, _decode_collection(r, depth + 1)))
        else:
            values.append(_plain_value(tag, r))


def _plain_value(tag: int, r: _Reader) -> Value:
    raw = r.field("value")
    if tag == Tag.EXTENSION:
        return Value(tag, raw)
    return Value(tag, _decode_plain(tag, raw))


def decode_with_offset(data: bytes) -> tuple[Message, int]:
    """Decode a message; also return where its document data starts."""
    r = _Reader(data)
    major, minor, code, request_id = _HEADER.unpack(r.take(_HEADER.size, "header"))
    groups: list[Group] = []
    current_tag: int | None = None
    attributes: list[Attribute] = []
    name: str | None = None
    values: list[Value] = []

    def close_attribute() -> None:
        nonlocal name, values
        if name is not None:
            attributes.append(Attribute(name, tuple(values)))
        name, values = None, []

    def close_group() -> None:
        nonlocal attributes
        close_attribute()
        if current_tag is not None:
            groups.append(Group(current_tag, tuple(attributes)))
        attributes = []

    while True:
        tag = r.byte("tag")
        if tag == Delimiter.END:
            close_group()
            break
        if tag < 0x10:
            if tag == 0:
                raise IPPEncodingError("reserved delimiter tag 0x00")
            close_group()
            current_tag = tag
            continue
        if current_tag is None:
            raise IPPEncodingError("attribute before any group tag")
        attr_name = r.field("name").decode("utf-8", "surrogateescape")
        if attr_name:
            close_attribute()
            name = attr_name
        elif name is None:
            raise IPPEncodingError("additional value without an attribute")
        if tag == Tag.BEGIN_COLLECTION:
            r.field("value")
            values.append(Value(tag, _decode_collection(r, 1)))
        elif tag in (Tag.END_COLLECTION, Tag.MEMBER_ATTR_NAME):
            raise IPPEncodingError(f"tag {tag:#x} outside a collection")
        else:
            values.append(_plain_value(tag, r))
    return Message(code, request_id, tuple(groups), (major, minor)), r.pos


def decode(data: bytes) -> Message:
    """Decode a message; octets after end-of-attributes (document data) are ignored."""
    return decode_with_offset(data)[0]


def iter_values(message: Message, tag: int, name: str) -> Iterator[PyValue]:
    """Every value of *name* in every group with *tag*."""
    for group in message.groups_of(tag):
        a = group.get(name)
        if a is not None:
            yield from a.all


__all__ = [
    "Attribute", "Collection", "DateTime", "Delimiter", "Group", "IPPEncodingError", "IntRange",
    "Message", "Resolution", "StringWithLanguage", "Tag", "Value", "attr", "collection", "decode",
    "decode_with_offset", "encode", "encode_attribute", "is_out_of_band", "iter_values",
]

"""The IPP encoding (phaserlink/net/ipp_codec.py): the RFC 8010 examples
byte for byte, every value tag, collections, out-of-band values, 1setOf,
and round trips over generated messages (hypothesis)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phaserlink.net.ipp_codec import (
    Attribute,
    Collection,
    DateTime,
    Delimiter,
    Group,
    IntRange,
    IPPEncodingError,
    Message,
    Resolution,
    StringWithLanguage,
    Tag,
    Value,
    attr,
    decode,
    decode_with_offset,
    encode,
)


def a(tag: int, name: str, value: bytes) -> bytes:
    """One attribute the way the RFC's tables spell it."""
    return bytes([tag]) + struct.pack(">H", len(name)) + name.encode() + struct.pack(">H", len(value)) + value


# RFC 8010 section 4.1: Print-Job request (the document data follows).
PRINT_JOB_REQUEST = (
    b"\x01\x01" b"\x00\x02" b"\x00\x00\x00\x01"
    b"\x01"
    + a(0x47, "attributes-charset", b"utf-8")
    + a(0x48, "attributes-natural-language", b"en-us")
    + a(0x45, "printer-uri", b"ipp://printer.example.com/ipp/print/pinetree")
    + a(0x42, "job-name", b"foobar")
    + a(0x22, "ipp-attribute-fidelity", b"\x01")
    + b"\x02"
    + a(0x21, "copies", b"\x00\x00\x00\x14")
    + a(0x44, "sides", b"two-sided-long-edge")
    + b"\x03"
)

# RFC 8010 section 4.3: the successful Print-Job response.
PRINT_JOB_RESPONSE = (
    b"\x01\x01" b"\x00\x00" b"\x00\x00\x00\x01"
    b"\x01"
    + a(0x47, "attributes-charset", b"utf-8")
    + a(0x48, "attributes-natural-language", b"en-us")
    + a(0x41, "status-message", b"successful-ok")
    + b"\x02"
    + a(0x21, "job-id", b"\x00\x00\x00\x93")
    + a(0x45, "job-uri", b"ipp://printer.example.com/ipp/print/pinetree/147")
    + a(0x23, "job-state", b"\x00\x00\x00\x03")
    + b"\x03"
)


def test_rfc8010_print_job_request_decodes_and_encodes_back():
    data = PRINT_JOB_REQUEST + b"%!PS..."
    message, offset = decode_with_offset(data)
    assert data[offset:] == b"%!PS..."
    assert message.version == (1, 1) and message.code == 0x0002 and message.request_id == 1
    op = message.group(Delimiter.OPERATION)
    job = message.group(Delimiter.JOB)
    assert op["printer-uri"] == "ipp://printer.example.com/ipp/print/pinetree"
    assert op["ipp-attribute-fidelity"] is True
    assert op.get("job-name").tag == Tag.NAME
    assert job["copies"] == 20 and job["sides"] == "two-sided-long-edge"
    assert encode(message) == PRINT_JOB_REQUEST


def test_rfc8010_print_job_request_built_from_attributes():
    message = Message(0x0002, 1, (
        Group(Delimiter.OPERATION, (
            attr("attributes-charset", Tag.CHARSET, "utf-8"),
            attr("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en-us"),
            attr("printer-uri", Tag.URI, "ipp://printer.example.com/ipp/print/pinetree"),
            attr("job-name", Tag.NAME, "foobar"),
            attr("ipp-attribute-fidelity", Tag.BOOLEAN, True),
        )),
        Group(Delimiter.JOB, (attr("copies", Tag.INTEGER, 20), attr("sides", Tag.KEYWORD, "two-sided-long-edge"))),
    ), version=(1, 1))
    assert encode(message) == PRINT_JOB_REQUEST


def test_rfc8010_print_job_response():
    message = decode(PRINT_JOB_RESPONSE)
    assert message.code == 0
    job = message.group(Delimiter.JOB)
    assert job["job-id"] == 147 and job["job-state"] == 3
    assert job.get("job-state").tag == Tag.ENUM
    assert encode(message) == PRINT_JOB_RESPONSE


# RFC 8010 appendix A.2 style: media-col = {media-size = {x-dimension,
# y-dimension}, media-color = blue}, as the encoding rules of 3.1.6 lay it out.
MEDIA_COL = (
    a(0x34, "media-col", b"")
    + a(0x4A, "", b"media-size")
    + a(0x34, "", b"")
    + a(0x4A, "", b"x-dimension") + a(0x21, "", struct.pack(">i", 21000))
    + a(0x4A, "", b"y-dimension") + a(0x21, "", struct.pack(">i", 29700))
    + a(0x37, "", b"")
    + a(0x4A, "", b"media-color") + a(0x44, "", b"blue")
    + a(0x37, "", b"")
)


def test_collection_encoding_matches_rfc_layout():
    size = Collection((attr("x-dimension", Tag.INTEGER, 21000), attr("y-dimension", Tag.INTEGER, 29700)))
    media_col = Collection((Attribute("media-size", (Value(Tag.BEGIN_COLLECTION, size),)),
                            attr("media-color", Tag.KEYWORD, "blue")))
    message = Message(0x0002, 7, (Group(Delimiter.JOB, (attr("media-col", Tag.BEGIN_COLLECTION, media_col),)),))
    data = encode(message)
    assert data == b"\x02\x00\x00\x02\x00\x00\x00\x07\x02" + MEDIA_COL + b"\x03"
    back = decode(data).group(Delimiter.JOB)["media-col"]
    assert back["media-size"]["y-dimension"] == 29700
    assert back["media-color"] == "blue"


def test_one_set_of_with_mixed_tags_and_out_of_band():
    data = (b"\x02\x00\x00\x00\x00\x00\x00\x09\x04"
            + a(0x49, "document-format-supported", b"application/pdf")
            + a(0x49, "", b"image/pwg-raster")
            + a(0x44, "job-sheets-default", b"none") + a(0x42, "", b"site banner")
            + a(0x13, "printer-info", b"")
            + a(0x10, "printer-geo-location", b"")
            + a(0x12, "printer-location", b"")
            + b"\x03")
    g = decode(data).group(Delimiter.PRINTER)
    assert g.get("document-format-supported").all == ["application/pdf", "image/pwg-raster"]
    sheets = g.get("job-sheets-default")
    assert [v.tag for v in sheets.values] == [Tag.KEYWORD, Tag.NAME]
    assert g.get("printer-info").values == (Value(Tag.NO_VALUE, None),)
    assert g.get("printer-geo-location").tag == Tag.UNSUPPORTED
    assert g.get("printer-location").tag == Tag.UNKNOWN
    assert encode(decode(data)) == data


def test_every_fixed_size_value_tag():
    values = [
        attr("b", Tag.BOOLEAN, False),
        attr("i", Tag.INTEGER, -2**31, 2**31 - 1),
        attr("e", Tag.ENUM, 9),
        attr("d", Tag.DATE_TIME, DateTime(2026, 12, 1, 23, 59, 58, 7, "-", 5, 30)),
        attr("r", Tag.RESOLUTION, Resolution(600, 1200, 3)),
        attr("g", Tag.RANGE_OF_INTEGER, IntRange(1, 999)),
        attr("t", Tag.TEXT_WITH_LANGUAGE, StringWithLanguage("fr-ca", "prête")),
        attr("n", Tag.NAME_WITH_LANGUAGE, StringWithLanguage("de", "Drucker")),
        attr("o", Tag.OCTET_STRING, b"\x00\xff"),
        attr("s", Tag.URI_SCHEME, "ipps"),
        attr("x", 0x4B, b"reserved tag kept as bytes"),
        attr("z", Tag.EXTENSION, b"\x00\x00\x01\x00payload"),
        attr("u", Tag.NOT_SETTABLE), attr("v", Tag.DELETE_ATTRIBUTE), attr("w", Tag.ADMIN_DEFINE),
        attr("dflt", Tag.DEFAULT),
    ]
    message = Message(0x000B, 3, (Group(Delimiter.PRINTER, tuple(values)),))
    data = encode(message)
    assert decode(data) == message
    assert a(0x31, "d", bytes([0x07, 0xEA, 12, 1, 23, 59, 58, 7]) + b"-" + bytes([5, 30])) in data
    assert a(0x32, "r", struct.pack(">iib", 600, 1200, 3)) in data
    assert a(0x35, "t", b"\x00\x05fr-ca\x00\x06pr\xc3\xaate") in data


def test_repeated_groups_and_empty_group_survive():
    message = Message(0x000A, 1, (
        Group(Delimiter.OPERATION, (attr("attributes-charset", Tag.CHARSET, "utf-8"),)),
        Group(Delimiter.JOB, (attr("job-id", Tag.INTEGER, 1),)),
        Group(Delimiter.JOB, ()),
        Group(Delimiter.JOB, (attr("job-id", Tag.INTEGER, 2),)),
    ))
    back = decode(encode(message))
    assert back == message
    assert [g["job-id"] for g in back.groups_of(Delimiter.JOB) if "job-id" in g] == [1, 2]


@pytest.mark.parametrize("data, words", [
    (b"\x02\x00\x00", "truncated"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01", "truncated"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01" + a(0x21, "x", b"\x00\x00\x00\x01") + b"\x03", "before any group"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + a(0x21, "x", b"\x00\x01") + b"\x03", "expected 4"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + a(0x21, "", b"\x00\x00\x00\x01") + b"\x03", "additional value"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + a(0x34, "c", b"") + a(0x21, "", b"\x00\x00\x00\x01"), "before memberAttrName"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + a(0x34, "c", b"") + b"\x03", "not ended"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + a(0x37, "c", b"") + b"\x03", "outside a collection"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + a(0x22, "b", b"\x02") + b"\x03", "boolean"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + a(0x21, "x", b"\x00\x00\x00\x01"), "truncated"),
])
def test_malformed_messages_are_refused_with_a_reason(data, words):
    with pytest.raises(IPPEncodingError, match=words):
        decode(data)


def test_hostile_collection_depth_is_bounded():
    deep = b"".join(a(0x34, "c" if i == 0 else "", b"") + a(0x4A, "", b"m") for i in range(40))
    with pytest.raises(IPPEncodingError, match="nested deeper"):
        decode(b"\x02\x00\x00\x00\x00\x00\x00\x01\x01" + deep + b"\x03")


def test_values_that_cannot_be_encoded():
    for bad in (attr("i", Tag.INTEGER, 2**31), attr("b", Tag.BOOLEAN, 1), attr("t", Tag.TEXT, b"x"),
                attr("n", Tag.NAME, "x" * 70000)):
        with pytest.raises(IPPEncodingError):
            encode(Message(2, 1, (Group(Delimiter.JOB, (bad,)),)))


# -- round trips over generated messages ----------------------------------------------

texts = st.text(max_size=40)
int32 = st.integers(-2**31, 2**31 - 1)
plain_values = st.one_of(
    st.builds(Value, st.just(Tag.INTEGER), int32),
    st.builds(Value, st.just(Tag.ENUM), int32),
    st.builds(Value, st.just(Tag.BOOLEAN), st.booleans()),
    st.builds(Value, st.sampled_from([Tag.TEXT, Tag.NAME, Tag.KEYWORD, Tag.URI, Tag.URI_SCHEME, Tag.CHARSET,
                                      Tag.NATURAL_LANGUAGE, Tag.MIME_MEDIA_TYPE]), texts),
    st.builds(Value, st.sampled_from([Tag.TEXT_WITH_LANGUAGE, Tag.NAME_WITH_LANGUAGE]),
              st.builds(StringWithLanguage, texts, texts)),
    st.builds(Value, st.just(Tag.OCTET_STRING), st.binary(max_size=40)),
    st.builds(Value, st.just(Tag.DATE_TIME), st.builds(
        DateTime, st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
        st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.sampled_from("+-"),
        st.integers(0, 255), st.integers(0, 255))),
    st.builds(Value, st.just(Tag.RESOLUTION), st.builds(Resolution, int32, int32, st.integers(-128, 127))),
    st.builds(Value, st.just(Tag.RANGE_OF_INTEGER), st.builds(IntRange, int32, int32)),
    st.builds(Value, st.sampled_from([Tag.UNSUPPORTED, Tag.DEFAULT, Tag.UNKNOWN, Tag.NO_VALUE,
                                      Tag.NOT_SETTABLE, Tag.DELETE_ATTRIBUTE, Tag.ADMIN_DEFINE]), st.none()),
)
names = st.text(min_size=1, max_size=20)


def attributes(values):
    return st.builds(Attribute, names, st.lists(values, min_size=1, max_size=4).map(tuple))


values = st.recursive(
    plain_values,
    lambda inner: st.builds(Value, st.just(Tag.BEGIN_COLLECTION),
                            st.builds(Collection, st.lists(attributes(inner), max_size=4).map(tuple))),
    max_leaves=6,
)
groups = st.builds(Group, st.sampled_from([t for t in Delimiter if t != Delimiter.END]),
                   st.lists(attributes(values), max_size=4).map(tuple))
messages = st.builds(Message, st.integers(-2**15, 2**15 - 1), int32, st.lists(groups, max_size=3).map(tuple),
                     st.tuples(st.integers(0, 255), st.integers(0, 255)))


@settings(max_examples=60, deadline=None)
@given(messages, st.binary(max_size=16))
def test_round_trip(message, document):
    data = encode(message)
    back, offset = decode_with_offset(data + document)
    assert back == message
    assert offset == len(data)
    assert encode(back) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_either_decodes_or_is_refused(data):
    try:
        message = decode(b"\x02\x00\x00\x0b\x00\x00\x00\x01" + data)
    except IPPEncodingError:
        return
    encode(message)  # whatever decoded can be said again

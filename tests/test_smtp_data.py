"""The DATA phase: chunk-independence, unstuffing, limits, disk errors, loops."""

from __future__ import annotations

import pytest

from phaserlink.smtp_relay.data import MAX_RECEIVED, DataReader
from support.smtp import FailingStore, Session, make_site, mailbox_files, strip_received, strip_results

# A message with every awkward spot: stuffed dots at line starts (also a
# "..\r\n" line that unstuffs to "."), a line of only "..", dots mid-line,
# 8-bit bytes, a NUL, and an empty line between headers and body.
WIRE = (
    b"Subject: dots\r\n"
    b"Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"..\r\n"
    b"mid.dle . dots .\r\n"
    b"...three\r\n"
    b"\xe9t\xe9 8bit \x00 nul\r\n"
    b".single dot stuffed once\r\n"
    b"last line\r\n"
)
EXPECTED = (
    b"Subject: dots\n"
    b"Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\n"
    b"\n"
    b".leading dot\n"
    b".\n"
    b"mid.dle . dots .\n"
    b"..three\n"
    b"\xe9t\xe9 8bit \x00 nul\n"
    b"single dot stuffed once\n"
    b"last line\n"
)


def read(chunks, max_size=10**6, max_line=1000):
    out = []
    reader = DataReader(out.append, max_size=max_size, max_line=max_line)
    rest = None
    for chunk in chunks:
        if rest is None:
            rest = reader.feed(chunk)
        else:  # after the end: the protocol's command buffer
            rest += chunk
    return b"".join(out), rest, reader


def test_whole_message_unstuffed_with_lf():
    body, rest, reader = read([WIRE + b".\r\nQUIT\r\n"])
    assert body == EXPECTED
    assert rest == b"QUIT\r\n"
    assert reader.verdict() is None
    assert reader.size == len(EXPECTED) + EXPECTED.count(b"\n")  # CRLF measure, unstuffed
    assert reader.received_headers == 1


@pytest.mark.parametrize("cut", range(0, len(WIRE) + 3))
def test_every_single_split_gives_same_bytes(cut):
    wire = WIRE + b".\r\nNOOP\r\n"
    body, rest, reader = read([wire[:cut], wire[cut:]])
    assert (body, rest, reader.verdict()) == (EXPECTED, b"NOOP\r\n", None)


def test_byte_by_byte_gives_same_bytes():
    wire = WIRE + b".\r\n"
    out = []
    reader = DataReader(out.append, 10**6, 1000)
    results = [reader.feed(wire[i : i + 1]) for i in range(len(wire))]
    assert results[:-1] == [None] * (len(wire) - 1)
    assert results[-1] == b""
    assert b"".join(out) == EXPECTED


@pytest.mark.parametrize("cut", range(1, 8))
def test_empty_message_and_end_split(cut):
    wire = b".\r\nRSET\r\n"
    body, rest, reader = read([wire[:cut], wire[cut:]])
    assert body == b"" and rest == b"RSET\r\n" and reader.verdict() is None


def test_size_counted_not_trusted():
    # 10 lines of 100 bytes = 1000 bytes; the limit is 999: refused, drained.
    line = b"x" * 98 + b"\r\n"
    body, rest, reader = read([line * 5, line * 5 + b".\r\nQUIT\r\n"], max_size=999)
    assert rest == b"QUIT\r\n"
    assert (reader.verdict().code, reader.verdict().status) == (552, "5.3.4")
    # exactly at the limit passes
    body, rest, reader = read([line * 10 + b".\r\n"], max_size=1000)
    assert reader.verdict() is None and len(body) == 990


@pytest.mark.parametrize("length, ok", [(999, True), (1000, True), (1001, False), (5000, False)])
def test_line_length_limit_includes_crlf(length, ok):
    long_line = b"y" * (length - 2) + b"\r\n"
    wire = b"a: b\r\n\r\n" + b"short\r\n" * 300 + long_line + b"short\r\n" * 300 + b".\r\n"
    for chunks in ([wire], [wire[i : i + 700] for i in range(0, len(wire), 700)]):
        body, rest, reader = read(chunks)
        assert rest == b""
        if ok:
            assert reader.verdict() is None
            assert long_line.replace(b"\r\n", b"\n") in body
        else:
            assert (reader.verdict().code, reader.verdict().status) == (552, "5.5.2")


def test_endless_line_is_not_buffered():
    reader = DataReader(lambda b: None, 10**9, 1000)
    for _ in range(1000):
        assert reader.feed(b"z" * 65536) is None
        assert len(reader._pending) <= 1000
    assert reader.feed(b"\r") is None
    assert reader.feed(b"\n.\r\nQUIT\r\n") == b"QUIT\r\n"
    assert reader.verdict().code == 552


def test_mail_loop_counted_in_headers_only():
    hops = b"".join(b"Received: from h%d by h; x\r\n" % i for i in range(MAX_RECEIVED))
    body, rest, reader = read([hops + b"\r\nbody\r\n.\r\n"])
    assert reader.verdict() is None
    body, rest, reader = read([hops + b"received: from one more\r\n\r\nbody\r\n.\r\n"])
    v = reader.verdict()
    assert (v.code, v.status) == (554, "5.4.6")
    # Received lines in the body are not hops
    body, rest, reader = read([b"Subject: x\r\n\r\n" + hops * 2 + b".\r\n"])
    assert reader.verdict() is None


def test_write_error_refuses_451_and_drains():
    calls = []

    def write(data):
        calls.append(data)
        raise OSError(28, "No space left on device")

    reader = DataReader(write, 10**6, 1000)
    assert reader.feed(b"a\r\n") is None
    assert reader.feed(b"b\r\nc\r\n.\r\nQUIT\r\n") == b"QUIT\r\n"
    assert len(calls) == 1
    # ENOSPC is "mail system full" (RFC 3463), still temporary.
    assert (reader.verdict().code, reader.verdict().status) == (451, "4.3.1")


# -- through the protocol into the Maildir ----------------------------------


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


def test_data_split_at_every_chunk_boundary_stores_same_bytes(site):
    """Two TCP reads cut anywhere in MAIL..QUIT give one identical mailbox file."""
    wire = (b"MAIL FROM:<a@good.example>\r\nRCPT TO:<demo@phaserlink.test>\r\nDATA\r\n"
            + WIRE + b".\r\nQUIT\r\n")
    expected_replies = None
    for cut in range(len(wire) + 1):
        s = Session(site)
        s.ehlo()
        replies = s.send(wire[:cut]) + s.send(wire[cut:])
        replies = replies.replace(replies.split(b"queued as ")[1].split(b"\r\n")[0], b"ID")
        if expected_replies is None:
            expected_replies = replies
        assert replies == expected_replies, cut
    assert expected_replies == (
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok, prints on demo\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 Ok: queued as ID\r\n221 2.0.0 Bye\r\n"
    )
    stored = mailbox_files(site, "demo")
    assert len(stored) == len(wire) + 1
    assert {strip_received(m) for m in stored} == {EXPECTED}


def test_received_header_prepended(site):
    s = Session(site)
    s.envelope("a@good.example", "demo@phaserlink.test")
    s.cmd("DATA")
    reply = s.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    mid = reply.split(b"queued as ")[1].strip().decode()
    (stored,) = mailbox_files(site, "demo")
    head, _, rest = stored.partition(b"Subject: hi\n")
    assert rest == b"\nbody\n"
    text = head.decode()
    assert text.startswith("Return-Path: <a@good.example>\nAuthentication-Results: phaserlink.test;\n\tnone\n"
                           "Received: from client.example ([127.0.0.1])\n\tby phaserlink.test (PhaserLink)"
                           f" with ESMTP id {mid}\n\tfor <demo@phaserlink.test>;\n\t")
    assert text.endswith(" +0000\n")


def test_size_lie_refused_after_drain(tmp_path):
    site = make_site(tmp_path, "max_message_size = 2000\n")
    s = Session(site)
    s.ehlo()
    reply = s.send("MAIL FROM:<a@x.example> SIZE=100\r\nRCPT TO:<demo@phaserlink.test>\r\nDATA\r\n")
    assert reply.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    body = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100
    assert s.send(body[:3000]) == b""
    assert s.send(body[3000:] + b"MAIL FROM:<evil@x>\r\n") == b""  # still data: no reply
    assert s.send(b".\r\nNOOP\r\n") == b"552 5.3.4 Error: message too big for system\r\n250 2.0.0 Ok\r\n"
    assert mailbox_files(site, "demo") == []


def test_declared_size_too_big(tmp_path):
    site = make_site(tmp_path, "max_message_size = 2000\n")
    s = Session(site)
    s.ehlo()
    assert s.cmd("MAIL FROM:<a@x.example> SIZE=2001") == b"552 5.3.4 Error: message size exceeds fixed limit\r\n"
    assert s.cmd("MAIL FROM:<a@x.example> SIZE=2000") == b"250 2.1.0 Ok\r\n"


@pytest.mark.parametrize("fail_at", ["write", "commit", "open"])
def test_disk_error_is_451_never_250_or_550(tmp_path, fail_at):
    site = make_site(tmp_path)
    store = FailingStore(site.appliance.spool / "mail", list(site.printers))
    store.fail_at = fail_at
    s = Session(site, store=store)
    s.envelope("a@good.example", "demo@phaserlink.test")
    reply = s.cmd("DATA")
    if fail_at == "open":
        assert reply == b"451 4.3.0 Error: cannot store the message now, try again later\r\n"
        return
    assert reply.startswith(b"354")
    body = b"Subject: x\r\n\r\n" + b"line\r\n" * 20000  # > the 64 KiB file buffer
    reply = s.send(body + b".\r\nNOOP\r\n")
    if fail_at == "write":  # ENOSPC: mail system full
        assert reply == b"451 4.3.1 Error: insufficient system storage, try again later\r\n250 2.0.0 Ok\r\n"
    else:  # EIO at the fsync
        assert reply == b"451 4.3.0 Error: cannot store the message now, try again later\r\n250 2.0.0 Ok\r\n"
    assert mailbox_files(site, "demo") == []
    assert list((site.appliance.spool / "mail" / "demo" / "tmp").iterdir()) == []


def test_loop_refused_554(site):
    s = Session(site)
    s.envelope("a@good.example", "demo@phaserlink.test")
    s.cmd("DATA")
    hops = b"".join(b"Received: from h%d by h; x\r\n" % i for i in range(101))
    assert s.send(hops + b"\r\nbody\r\n.\r\n").startswith(b"554 5.4.6 ")
    assert mailbox_files(site, "demo") == []


@pytest.mark.parametrize(
    "wire",
    [
        b"a" * 30 + b"\n" + b"b" * 20 + b"\r\n.\r\n",  # one long line holding a bare LF
        b"bare\rCR\r\n" + b"c" * 60 + b"\r\n.\r\n",  # a bare CR, then a long line
        b"c" * 60 + b"\r\nbare\nLF\r\n.\r\n",  # a long line, then a bare LF
    ],
)
def test_several_faults_get_one_reply_whatever_the_chunking(wire):
    """Found by tests/test_fuzz_data.py: the reply used to be whichever
    fault the reader met first, so it depended on where packets were cut."""
    replies = set()
    for cut in range(len(wire) + 1):
        _body, rest, reader = read([wire[:cut], wire[cut:]], max_line=40)
        assert rest == b""
        replies.add(reader.verdict().line())
    assert replies == {b"552 5.5.2 Error: message has a line longer than 40 bytes (RFC 5321 4.5.3.1.6)\r\n"}

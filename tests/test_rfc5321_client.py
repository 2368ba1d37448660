"""The SMTP client's MAIL FROM parameters: SIZE= is the wire size (RFC
1870) and 8-bit mail is declared BODY=8BITMIME (RFC 6152), or refused by
a server that does not take it.  Fake transport, exact bytes."""

from __future__ import annotations

import io

import pytest

from phaserlink.message.wire import stuff
from phaserlink.net.smtp_client import SMTPError, wire_size

from test_smtp_client import EHLO_REPLY, Session, _hang_up_unfinished_sessions  # noqa: F401  (fixture)

EHLO_NO_8BIT = b"250-mx.test hello\r\n250-SIZE 1000000\r\n250 PIPELINING\r\n"


@pytest.mark.parametrize("body", [
    b"Subject: hi\n\n.hidden\nbye",
    b"Subject: hi\r\n\r\nCRLF already\r\n",
    b"a\nb\r\nc\n",
    b"ends with CR\r",
    b"",
    b".\n..\n...\n",
])
def test_wire_size_is_what_the_client_sends(body):
    """The size counted as RFC 1870 says: the bytes sent before the final
    ".", less the stuffing dots."""
    sent = stuff(body)[:-3]  # without the ".\r\n" end line
    stuffing = sent.count(b"\r\n.") + sent.startswith(b".")
    source = io.BytesIO(b"junk" + body)
    source.seek(4)
    assert wire_size(source) == (len(sent) - stuffing if body else 0)
    assert source.tell() == 4  # the position is kept for the send


def test_size_parameter_counts_crlf_line_ends():
    body = b"Subject: x\n\n" + b"line\n" * 1000
    s = Session(body=body)
    s.reply(b"220 mx.test ESMTP\r\n")
    mail = s.reply(EHLO_REPLY)
    wire = len(body) + 1002  # one CR more per line: 1002 LFs
    assert mail == f"MAIL FROM:<s@y.test> SIZE={wire}\r\n".encode()


class BodySession(Session):
    """A Session whose converse() gets ``body=`` (the MAIL FROM BODY type)."""

    def __init__(self, data: bytes, body_type: str | None):
        import test_smtp_client as base
        from twisted.internet import defer, task

        from phaserlink.net.smtp_client import SMTPClientProtocol, converse

        self.clock = task.Clock()
        self.proto = SMTPClientProtocol(self.clock, timeout=base.TIMEOUT)
        self.transport = base.FakeTransport()
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        self.source = io.BytesIO(data)
        base._sessions.append(self)
        self.result = defer.Deferred.fromCoroutine(converse(
            self.proto, "s@y.test", ["a@x.test"], self.source, host="mx.test", helo="client.test", body=body_type))


EIGHT_BIT = "Subject: x\n\n\u00e9t\u00e9\n".encode()


def test_8bitmime_is_declared_when_offered():
    s = BodySession(EIGHT_BIT, "8BITMIME")
    s.reply(b"220 mx.test ESMTP\r\n")
    assert s.reply(EHLO_REPLY) == f"MAIL FROM:<s@y.test> SIZE={len(EIGHT_BIT) + 3} BODY=8BITMIME\r\n".encode()


def test_8bit_mail_to_a_server_without_8bitmime_fails_permanently_before_mail():
    s = BodySession(EIGHT_BIT, "8BITMIME")
    s.reply(b"220 mx.test ESMTP\r\n")
    assert s.reply(EHLO_NO_8BIT) == b"QUIT\r\n"  # no MAIL: nothing 8-bit goes out undeclared
    s.reply(b"221 bye\r\n")
    error = s.error()
    assert isinstance(error, SMTPError)
    assert error.permanent and error.stage == "mail" and error.enhanced == "5.6.3"
    assert "8BITMIME" in error.text


def test_7bit_mail_is_not_declared():
    s = BodySession(b"Subject: x\n\nplain\n", None)
    s.reply(b"220 mx.test ESMTP\r\n")
    assert s.reply(EHLO_NO_8BIT) == b"MAIL FROM:<s@y.test> SIZE=21\r\n"  # 18 bytes, 3 LFs

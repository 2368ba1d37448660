"""The ESMTP client's conversation, driven byte by byte on a fake transport.

Each test plays the server: it feeds reply bytes into the protocol and
checks the exact command bytes the client wrote back, and what the
caller's Deferred finally says.
"""

from __future__ import annotations

import base64
import io

import pytest
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from phaserlink.message.wire import stuff
from phaserlink.net import smtp_client
from phaserlink.net.smtp_client import (
    CHUNK_SIZE,
    RecipientsRefused,
    SMTPClientProtocol,
    SMTPError,
    SendResult,
    converse,
)

TIMEOUT = 30.0


class FakeTransport(StringTransport):
    """A StringTransport that closes for real and records STARTTLS."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_options = None
        self.closed = False

    def _close(self, reason) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(reason))

    def loseConnection(self) -> None:
        super().loseConnection()
        self._close(ConnectionDone())

    def abortConnection(self) -> None:
        super().abortConnection()
        self._close(ConnectionLost())

    def startTLS(self, options) -> None:
        self.tls_options = options


_sessions: list["Session"] = []


@pytest.fixture(autouse=True)
def _hang_up_unfinished_sessions():
    """A test may stop mid-conversation; end it so nothing is left pending."""
    yield
    while _sessions:
        s = _sessions.pop()
        if not s.result.called:
            s.transport.abortConnection()
        s.result.addErrback(lambda f: None)


class Session:
    def __init__(self, body: bytes = b"Subject: hi\n\nhello\n", recipients=("a@x.test",), **kw):
        self.clock = task.Clock()
        self.proto = SMTPClientProtocol(self.clock, timeout=TIMEOUT)
        self.transport = FakeTransport()
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)
        self.source = body if hasattr(body, "read") else io.BytesIO(body)
        kw.setdefault("helo", "client.test")
        kw.setdefault("host", "mx.test")
        _sessions.append(self)
        self.result: defer.Deferred = defer.Deferred.fromCoroutine(
            converse(self.proto, kw.pop("mail_from", "s@y.test"), list(recipients), self.source, **kw)
        )

    def reply(self, data: bytes) -> bytes:
        """Feed server bytes; return what the client wrote in response."""
        self.transport.clear()
        self.proto.dataReceived(data)
        return self.transport.value()

    def pump_body(self) -> bytes:
        """Let the transport pull the whole body, as a real socket would."""
        self.transport.clear()
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()
        return self.transport.value()

    def outcome(self):
        assert self.result.called, "conversation still waiting"
        out = []
        self.result.addBoth(out.append)
        return out[0]

    def error(self) -> SMTPError:
        out = self.outcome()
        assert isinstance(out, Failure), out
        out.trap(SMTPError)
        return out.value


EHLO_REPLY = b"250-mx.test hello\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 PIPELINING\r\n"


def test_happy_path_writes_exact_commands_and_body():
    s = Session(body=b"Subject: hi\n\n.hidden\nbye")
    assert s.reply(b"220 mx.test ESMTP\r\n") == b"EHLO client.test\r\n"
    # RFC 1870: the size on the wire, CRLF line ends (24 bytes, 3 LFs, and
    # the final line end the client adds), without the stuffing dot.
    assert s.reply(EHLO_REPLY) == b"MAIL FROM:<s@y.test> SIZE=29\r\n"
    assert s.reply(b"250 2.1.0 ok\r\n") == b"RCPT TO:<a@x.test>\r\n"
    assert s.reply(b"250 2.1.5 ok\r\n") == b"DATA\r\n"
    assert s.reply(b"354 go ahead\r\n") == b""
    assert s.pump_body() == b"Subject: hi\r\n\r\n..hidden\r\nbye\r\n.\r\n"
    assert s.reply(b"250 2.0.0 queued as 1234\r\n") == b"QUIT\r\n"
    assert not s.result.called  # waits for the QUIT reply before closing
    s.reply(b"221 bye\r\n")
    result = s.outcome()
    assert isinstance(result, SendResult)
    assert result.reply.code == 250 and result.reply.text == "2.0.0 queued as 1234"
    assert result.reply.enhanced == "2.0.0"
    assert [r.address for r in result.accepted] == ["a@x.test"] and result.refused == ()
    assert result.server.size_limit == 1000000 and result.server.esmtp
    assert s.transport.closed


def test_helo_fallback_and_no_size_parameter():
    s = Session()
    s.reply(b"220 old.test\r\n")
    assert s.reply(b"502 5.5.2 what?\r\n") == b"HELO client.test\r\n"
    assert s.reply(b"250 old.test\r\n") == b"MAIL FROM:<s@y.test>\r\n"
    s.reply(b"250 ok\r\n")
    s.reply(b"250 ok\r\n")
    s.reply(b"354 go\r\n")
    s.pump_body()
    s.reply(b"250 ok\r\n")
    s.reply(b"221 bye\r\n")
    result = s.outcome()
    assert not result.server.esmtp and result.server.size_limit is None


def test_null_sender():
    s = Session(mail_from="")
    s.reply(b"220 mx\r\n")
    assert s.reply(b"250 mx\r\n") == b"MAIL FROM:<>\r\n"


def test_tls_required_but_not_offered_sends_nothing_else():
    s = Session(tls="required")
    s.reply(b"220 mx\r\n")
    assert s.reply(EHLO_REPLY) == b"QUIT\r\n"
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert err.stage == smtp_client.STAGE_STARTTLS and not err.permanent and err.code is None
    assert "does not offer STARTTLS" in err.text
    assert b"MAIL" not in s.transport.value()


def test_starttls_discards_plaintext_and_greets_again(test_ca):
    cert = test_ca.issue("mx.test")
    s = Session(tls="opportunistic", ca_file=str(cert.ca), username="u", password="p\u00e9")
    s.reply(b"220 mx\r\n")
    assert s.reply(b"250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n") == b"STARTTLS\r\n"
    # A reply injected in clear right after 220 must be thrown away.
    assert s.reply(b"220 ready\r\n250 injected\r\n") == b"EHLO client.test\r\n"
    assert s.transport.tls_options is not None
    token = base64.b64encode(b"\0u\0p\xc3\xa9").decode()
    assert s.reply(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n") == f"AUTH PLAIN {token}\r\n".encode()
    assert s.reply(b"235 2.7.0 ok\r\n") == b"MAIL FROM:<s@y.test>\r\n"


def test_auth_login_when_plain_not_offered():
    s = Session(username="user", password="pw")
    s.proto.tls = True  # as after implicit TLS
    s.reply(b"220 mx\r\n")
    assert s.reply(b"250-mx\r\n250 AUTH LOGIN CRAM-MD5\r\n") == b"AUTH LOGIN\r\n"
    assert s.reply(b"334 VXNlcm5hbWU6\r\n") == base64.b64encode(b"user") + b"\r\n"
    assert s.reply(b"334 UGFzc3dvcmQ6\r\n") == base64.b64encode(b"pw") + b"\r\n"
    assert s.reply(b"235 ok\r\n") == b"MAIL FROM:<s@y.test>\r\n"


def test_no_credentials_in_clear():
    s = Session(tls="opportunistic", username="user", password="secret")
    s.reply(b"220 mx\r\n")
    out = s.reply(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n")
    assert out == b"QUIT\r\n"
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert err.stage == smtp_client.STAGE_AUTH and not err.permanent
    assert b"AUTH" not in s.transport.value()


def test_no_credentials_in_clear_says_why_and_what_allows_it():
    s = Session(tls="opportunistic", username="user", password="secret", port=587,
                tls_setting="smarthost_tls")
    s.reply(b"220 mx\r\n")
    assert s.reply(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n") == b"QUIT\r\n"
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert err.text == ("smtp://mx.test:587 does not offer STARTTLS; not sending the password in clear "
                        "(set smarthost_tls = none to allow it)")


def test_tls_none_is_the_explicit_permission_to_log_in_in_clear():
    """Issue 7 item 4: only the configuration's 'none' lets a password go
    without TLS (even past an offered STARTTLS: 'none' means no TLS)."""
    s = Session(tls="none", username="user", password="pw")
    s.reply(b"220 mx\r\n")
    token = base64.b64encode(b"\0user\0pw").decode()
    assert s.reply(b"250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n") == f"AUTH PLAIN {token}\r\n".encode()
    assert s.reply(b"235 2.7.0 ok\r\n") == b"MAIL FROM:<s@y.test>\r\n"


def test_tls_required_without_starttls_sends_no_auth():
    s = Session(tls="required", username="user", password="pw")
    s.reply(b"220 mx\r\n")
    assert s.reply(b"250-mx\r\n250 AUTH PLAIN\r\n") == b"QUIT\r\n"
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert err.stage == smtp_client.STAGE_STARTTLS and "STARTTLS" in err.text
    assert b"AUTH" not in s.transport.value()


def test_auth_failure_is_reported_with_server_text():
    s = Session(username="user", password="bad")
    s.proto.tls = True
    s.reply(b"220 mx\r\n")
    s.reply(b"250-mx\r\n250 AUTH PLAIN\r\n")
    assert s.reply(b"535 5.7.8 Authentication credentials invalid\r\n") == b"QUIT\r\n"
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert (err.code, err.enhanced, err.permanent, err.stage) == (535, "5.7.8", True, "auth")
    assert err.text == "5.7.8 Authentication credentials invalid"


def test_per_recipient_outcomes():
    s = Session(recipients=["ok@x.test", "later@x.test", "never@x.test"])
    s.reply(b"220 mx\r\n")
    s.reply(EHLO_REPLY)
    s.reply(b"250 ok\r\n")
    assert s.reply(b"250 ok\r\n") == b"RCPT TO:<later@x.test>\r\n"
    assert s.reply(b"450 4.2.1 mailbox busy\r\n") == b"RCPT TO:<never@x.test>\r\n"
    assert s.reply(b"550 5.1.1 no such user\r\n") == b"DATA\r\n"
    s.reply(b"354 go\r\n")
    s.pump_body()
    s.reply(b"250 ok\r\n")
    s.reply(b"221 bye\r\n")
    result = s.outcome()
    assert [r.address for r in result.accepted] == ["ok@x.test"]
    refused = {r.address: (r.reply.code, r.reply.enhanced, r.permanent) for r in result.refused}
    assert refused == {"later@x.test": (450, "4.2.1", False), "never@x.test": (550, "5.1.1", True)}


@pytest.mark.parametrize(
    "codes, permanent",
    [((b"550 5.1.1 no", b"551 5.1.6 moved"), True), ((b"550 5.1.1 no", b"451 4.3.0 later"), False)],
)
def test_all_recipients_refused(codes, permanent):
    s = Session(recipients=["a@x.test", "b@x.test"])
    s.reply(b"220 mx\r\n")
    s.reply(EHLO_REPLY)
    s.reply(b"250 ok\r\n")
    s.reply(codes[0] + b"\r\n")
    assert s.reply(codes[1] + b"\r\n") == b"QUIT\r\n"  # no DATA
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert isinstance(err, RecipientsRefused) and err.permanent is permanent
    assert [r.reply.code for r in err.recipients] == [int(c[:3]) for c in codes]


def test_mail_from_refused_is_permanent_with_enhanced_code():
    s = Session()
    s.reply(b"220 mx\r\n")
    s.reply(EHLO_REPLY)
    assert s.reply(b"552-5.3.4 message too big\r\n552 5.3.4 really\r\n") == b"QUIT\r\n"
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert (err.code, err.enhanced, err.permanent, err.stage) == (552, "5.3.4", True, "mail")
    assert err.text == "5.3.4 message too big\n5.3.4 really"


def test_final_reply_4xx_is_temporary():
    s = Session()
    s.reply(b"220 mx\r\n")
    s.reply(EHLO_REPLY)
    s.reply(b"250 ok\r\n")
    s.reply(b"250 ok\r\n")
    s.reply(b"354 go\r\n")
    s.pump_body()
    assert s.reply(b"451 4.3.0 disk full\r\n") == b"QUIT\r\n"
    s.reply(b"221 bye\r\n")
    err = s.error()
    assert (err.code, err.permanent, err.stage) == (451, False, "message")


def test_421_greeting_hangs_up_without_quit():
    s = Session()
    assert s.reply(b"421 4.3.2 busy, go away\r\n") == b""
    err = s.error()
    assert err.code == 421 and not err.permanent and s.transport.closed


def test_connection_lost_mid_transaction_is_temporary():
    s = Session()
    s.reply(b"220 mx\r\n")
    s.reply(EHLO_REPLY)
    s.transport.abortConnection()
    err = s.error()
    assert err.code is None and not err.permanent and err.stage == "mail"
    assert "connection lost" in err.text


def test_timeout_aborts_and_fails_temporarily():
    s = Session()
    s.reply(b"220 mx\r\n")
    s.clock.advance(TIMEOUT - 1)
    assert not s.result.called
    s.clock.advance(1)
    err = s.error()
    assert "timed out" in err.text and err.stage == "ehlo" and not err.permanent
    assert s.transport.closed


def test_stalled_body_times_out():
    s = Session(body=b"x" * (CHUNK_SIZE * 3))
    s.reply(b"220 mx\r\n")
    s.reply(EHLO_REPLY)
    s.reply(b"250 ok\r\n")
    s.reply(b"250 ok\r\n")
    s.reply(b"354 go\r\n")
    s.transport.producer.resumeProducing()  # one chunk, then the socket is full
    s.clock.advance(TIMEOUT - 1)
    s.transport.producer.resumeProducing()  # progress restarts the timer
    s.clock.advance(TIMEOUT - 1)
    assert not s.result.called
    s.clock.advance(1)
    err = s.error()
    assert err.stage == "message" and "timed out" in err.text


def test_malformed_reply_aborts():
    s = Session()
    s.reply(b"hello there\r\n")
    err = s.error()
    assert err.code is None and s.transport.closed


@pytest.mark.parametrize("offset", [CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_dot_line_at_chunk_boundary_streamed_from_file(tmp_path, offset, eol):
    """A "." line starting exactly at a 16 KiB read boundary is stuffed."""
    head = b"Subject: boundary" + eol + eol
    data = head + b"a" * (offset - len(head) - len(eol)) + eol
    assert len(data) == offset
    data += b"." + eol + b".." + eol + b"tail" + eol + b"." + eol
    path = tmp_path / "msg"
    path.write_bytes(data)
    with open(path, "rb") as f:
        s = Session(body=f)
        s.reply(b"220 mx\r\n")
        s.reply(EHLO_REPLY)
        s.reply(b"250 ok\r\n")
        s.reply(b"250 ok\r\n")
        s.reply(b"354 go\r\n")
        wire = s.pump_body()
    assert wire == stuff(data)
    assert wire.endswith(b"\r\n..\r\n...\r\ntail\r\n..\r\n.\r\n")
    assert wire.count(b"\r\n.\r\n") == 1


def test_send_rejects_injection_in_addresses():
    with pytest.raises(ValueError):
        smtp_client.send(task.Clock(), "h", 25, "a@b\r\nRSET", ["x@y"], io.BytesIO(b""), helo="h")
    with pytest.raises(ValueError):
        smtp_client.send(task.Clock(), "h", 25, "a@b", ["x@y>"], io.BytesIO(b""), helo="h")


def test_cancel_aborts_without_quit():
    s = Session()
    s.reply(b"220 mx\r\n")
    s.transport.clear()
    s.result.cancel()
    out = s.outcome()
    assert isinstance(out, Failure) and out.check(defer.CancelledError)
    assert s.transport.closed and s.transport.value() == b""

"""POP3 client, unit level: a scripted server on a StringTransport.

Each test plays the server's side of the conversation byte for byte and
checks what the client sent, what reached the file, and which typed error
came out.  Time is a task.Clock, so timeouts are exact and instant.
"""

from __future__ import annotations

import io
import random

import pytest
from OpenSSL import SSL
from twisted.internet import task
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from phaserlink.message.wire import DotStuffer
from phaserlink.net.pop3_client import (
    MAX_RESPONSE_LINE,
    POP3AuthError,
    POP3MailboxInUse,
    POP3CleartextRefused,
    POP3ClientProtocol,
    POP3ConnectionLost,
    POP3Error,
    POP3ProtocolError,
    POP3Session,
    POP3Timeout,
    POP3TLSError,
    _Unstuffer,
)

TIMEOUT = 30.0


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS (ITLSTransport)."""

    tls_options = None

    def startTLS(self, options):
        self.tls_options = options


class Script:
    """The server side: check each line the client sent, send replies."""

    def __init__(self, **kw):
        self.clock = task.Clock()
        # Most tests here are about the session, in clear: say so explicitly
        # (the login policy's own tests pass tls= themselves).
        kw.setdefault("tls", "none")
        self.proto = POP3ClientProtocol(
            host="pop.example",
            username="printer1",
            password="s3cret pw",
            timeout=TIMEOUT,
            clock=self.clock,
            tls_options_factory=lambda host, ca: ("verifying-options", host, ca),
            **kw,
        )
        self.t = TLSStringTransport()
        self.proto.makeConnection(self.t)
        self.results: list = []
        self.errors: list = []
        self.proto.ready.addCallbacks(self.results.append, self.errors.append)

    def expect(self, sent: bytes) -> None:
        assert self.t.value() == sent
        self.t.clear()

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def login(self, caps: bytes = b"USER\r\nUIDL\r\n") -> POP3Session:
        self.send(b"+OK Dovecot ready. <1.2@pop.example>\r\n")
        self.expect(b"CAPA\r\n")
        self.send(b"+OK\r\n" + caps + b".\r\n")
        self.expect(b"USER printer1\r\n")
        self.send(b"+OK\r\n")
        self.expect(b"PASS s3cret pw\r\n")
        self.send(b"+OK Logged in.\r\n")
        assert not self.errors, self.errors
        (session,) = self.results
        return session

    def retrieving(self, size: int):
        """Log in, list one message u1 of *size* octets and start its RETR:
        (the session, what it writes into, the retrieve's Deferred)."""
        session = self.login()
        self.listed(session, [("u1", size)])
        out = io.BytesIO()
        return session, out, session.retrieve("u1", out)

    def listed(self, session: POP3Session, entries: list[tuple[str, int]]):
        got = []
        session.list_uidl().addCallback(got.append)
        self.expect(b"LIST\r\n")
        self.send(b"+OK\r\n" + b"".join(b"%d %d\r\n" % (i + 1, s) for i, (_, s) in enumerate(entries)) + b".\r\n")
        self.expect(b"UIDL\r\n")
        self.send(b"+OK\r\n" + b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, (u, _) in enumerate(entries)) + b".\r\n")
        return got[0]


def outcome(d):
    box = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    return box[0]


# -- login ---------------------------------------------------------------


def test_opportunistic_without_stls_sends_no_user_and_no_pass():
    """Issue 7 item 4: 'opportunistic' is TLS if offered, else no login."""
    s = Script(tls="opportunistic", where="pop3://pop.example:110", tls_setting="mailbox_tls")
    s.send(b"+OK Dovecot ready. <1.2@pop.example>\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n")
    (f,) = s.errors
    assert f.check(POP3CleartextRefused) and f.check(POP3TLSError)
    assert str(f.value) == ("pop3://pop.example:110 does not offer STLS; not sending the password in clear "
                            "(set mailbox_tls = none to allow it)")
    assert s.t.value() == b"QUIT\r\n" and s.t.disconnecting  # no USER, no PASS


def test_opportunistic_without_capa_at_all_sends_no_password():
    s = Script(tls="opportunistic")
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"-ERR unknown command\r\n")  # an RFC 1939-only server
    (f,) = s.errors
    assert f.check(POP3CleartextRefused)
    assert b"USER" not in s.t.value() and b"PASS" not in s.t.value()


def test_plain_login_when_no_stls_offered_and_tls_none():
    s = Script(tls="none")
    session = s.login()
    assert not session.tls_active
    assert session.greeting.startswith("Dovecot ready.")
    assert session.capabilities == {"USER": [], "UIDL": []}
    assert s.t.tls_options is None


def test_stls_when_offered_uses_verifying_options_and_asks_capa_again():
    s = Script(tls="opportunistic", ca_file="/ca.pem")
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\nSTLS\r\nUSER\r\n.\r\n")
    s.expect(b"STLS\r\n")
    s.send(b"+OK Begin TLS negotiation now.\r\n")
    # TLS started with the options from phaserlink.tls.client_options(host, ca).
    assert s.t.tls_options == ("verifying-options", "pop.example", "/ca.pem")
    # RFC 2595 4: forget what was learnt in plaintext; nothing secret sent yet.
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n")
    s.expect(b"USER printer1\r\n")
    s.send(b"+OK\r\n")
    s.expect(b"PASS s3cret pw\r\n")
    s.send(b"+OK\r\n")
    (session,) = s.results
    assert session.tls_active
    assert "STLS" not in session.capabilities


def test_tls_required_but_not_offered_fails_before_sending_credentials():
    s = Script(tls="required")
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n")
    (f,) = s.errors
    assert f.check(POP3TLSError)
    assert "TLS is required but the server does not offer STLS" in str(f.value)
    assert b"USER" not in s.t.value() and b"PASS" not in s.t.value()
    assert s.t.value() == b"QUIT\r\n" and s.t.disconnecting


def test_tls_none_ignores_offered_stls():
    s = Script(tls="none")
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\nSTLS\r\n.\r\n")
    s.expect(b"USER printer1\r\n")


def test_stls_refused_is_a_tls_error_with_server_text():
    s = Script(tls="opportunistic")
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\nSTLS\r\n.\r\n")
    s.expect(b"STLS\r\n")
    s.send(b"-ERR TLS not available now\r\n")
    (f,) = s.errors
    assert f.check(POP3TLSError) and f.value.server_text == "TLS not available now"


def test_handshake_failure_is_a_tls_error():
    s = Script(tls="opportunistic")
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\nSTLS\r\n.\r\n")
    s.expect(b"STLS\r\n")
    s.send(b"+OK\r\n")
    s.proto.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    (f,) = s.errors
    assert f.check(POP3TLSError)
    assert "certificate verify failed" in str(f.value)


def test_server_without_capa_still_logs_in():
    s = Script()
    s.send(b"+OK old server\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"-ERR unknown command\r\n")
    s.expect(b"USER printer1\r\n")


@pytest.mark.parametrize("at", ["USER", "PASS"])
def test_refused_login_is_an_auth_error_with_server_text(at):
    s = Script()
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\n.\r\n")
    s.expect(b"USER printer1\r\n")
    if at == "PASS":
        s.send(b"+OK\r\n")
        s.expect(b"PASS s3cret pw\r\n")
    s.send(b"-ERR [AUTH] Authentication failed.\r\n")
    (f,) = s.errors
    assert f.check(POP3AuthError)
    assert f.value.server_text == "[AUTH] Authentication failed."
    assert f"refused at {at}" in str(f.value)


def test_a_locked_mailbox_is_in_use_not_a_bad_password():
    """Dovecot with pop3_lock_session = yes answers PASS with RFC 2449's
    [IN-USE] while another session holds the mailbox: the caller gets a
    POP3MailboxInUse that names the lock, so a retriever can say "another
    session holds it" instead of reporting a wrong password."""
    s = Script()
    s.send(b"+OK ready\r\n")
    s.expect(b"CAPA\r\n")
    s.send(b"+OK\r\n.\r\n")
    s.expect(b"USER printer1\r\n")
    s.send(b"+OK\r\n")
    s.expect(b"PASS s3cret pw\r\n")
    s.send(b"-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n")
    (f,) = s.errors
    assert f.check(POP3MailboxInUse)
    assert f.value.server_text == "[IN-USE] Mailbox is locked by another POP3 session."
    assert "locked by another POP3 session" in str(f.value) and "refused at PASS" in str(f.value)


def test_err_greeting_fails():
    s = Script()
    s.send(b"-ERR go away\r\n")
    (f,) = s.errors
    assert f.check(POP3ProtocolError) and f.value.server_text == "go away"


def test_garbage_reply_is_a_protocol_error():
    s = Script()
    s.send(b"HELLO\r\n")
    (f,) = s.errors
    assert f.check(POP3ProtocolError) and s.t.disconnected


def test_overlong_reply_line_is_a_protocol_error():
    s = Script()
    s.send(b"+OK " + b"x" * (MAX_RESPONSE_LINE + 10))
    (f,) = s.errors
    assert f.check(POP3ProtocolError) and "longer than" in str(f.value)


def test_newline_in_username_is_refused_not_sent():
    clock = task.Clock()
    p = POP3ClientProtocol(host="h", username="a\r\nDELE 1", password="p", clock=clock)
    t = TLSStringTransport()
    p.makeConnection(t)
    errs = []
    p.ready.addErrback(errs.append)
    p.dataReceived(b"+OK\r\n")
    p.dataReceived(b"+OK\r\n.\r\n")
    assert errs and b"DELE" not in t.value()


# -- timeouts --------------------------------------------------------------


def test_silent_server_times_out_on_greeting():
    s = Script()
    s.clock.advance(TIMEOUT - 0.1)
    assert not s.errors
    s.clock.advance(0.2)
    (f,) = s.errors
    assert f.check(POP3Timeout) and "(greeting)" in str(f.value)
    assert s.t.disconnected


def test_timeout_counts_from_the_last_byte_during_retr():
    s = Script()
    session, out, d = s.retrieving(100)
    s.expect(b"RETR 1\r\n")
    s.send(b"+OK\r\nline 1\r\n")
    s.clock.advance(TIMEOUT - 1)
    s.send(b"line 2\r\n")
    s.clock.advance(TIMEOUT - 1)
    assert not d.called
    s.clock.advance(2)
    f = outcome(d)
    assert isinstance(f, Failure) and f.check(POP3Timeout) and "RETR 1" in str(f.value)
    assert out.getvalue() == b"line 1\nline 2\n"


def test_no_timer_while_idle_after_login():
    s = Script()
    s.login()
    assert s.clock.getDelayedCalls() == []


# -- commands --------------------------------------------------------------


def test_list_uidl_pairs_sizes_and_uidls_in_order():
    s = Script()
    session = s.login()
    assert s.listed(session, [("00000001abc", 120), ("00000002def", 45000)]) == [
        ("00000001abc", 120),
        ("00000002def", 45000),
    ]


def wire(content: bytes) -> bytes:
    st = DotStuffer()
    return st.feed(content) + st.finish()


TRICKY = (
    b"From: a@b\n\n.\n..\n.leading dot\n...three\nplain\r\nbare\rcr\n.\r\n"
    b"ends with dot.\n"
)


def test_retrieve_unstuffs_and_writes_lf_in_any_split():
    data = b"+OK 99 octets\r\n" + wire(TRICKY) + b"+OK deleted\r\n"
    # The stuffer normalises CRLF to LF before stuffing; expected output:
    expected = TRICKY.replace(b"\r\n", b"\n")
    for cut1 in range(1, len(data)):
        for cut2 in (cut1 + 1, cut1 + 3, len(data)):
            s = Script()
            session, out, d = s.retrieving(99)
            dd = session.delete("u1")
            s.expect(b"RETR 1\r\n")
            for piece in (data[:cut1], data[cut1:cut2], data[cut2:]):
                if piece:
                    s.send(piece)
            assert outcome(d) == len(expected), (cut1, cut2)
            assert out.getvalue() == expected, (cut1, cut2)
            assert outcome(dd) is None
            assert s.t.value() == b"DELE 1\r\n"


def test_retrieve_dot_line_at_16k_chunk_boundary_and_random_chunks():
    rng = random.Random(1939)
    body = bytearray(b"Subject: x\n\n")
    body += b"a" * (16384 - len(body) - 1) + b"\n"
    body += b".\n" + b"after the dot line\n"
    for _ in range(3000):
        n = rng.randrange(0, 120)
        line = bytes(rng.choice(b".\rabc ") for _ in range(n))
        body += line.rstrip(b"\r") + b"\n"  # LF-ended, as stored: round-trips exactly
    body = bytes(body)
    assert b"\r\n" not in body and b"\n.\n" in body
    data = b"+OK\r\n" + wire(body)
    for trial in range(20):
        s = Script()
        session, out, d = s.retrieving(len(body))
        pos = 0
        cuts = [16384 + 5, 16384 + 6] if trial == 0 else []
        while pos < len(data):
            step = (cuts.pop(0) - pos) if cuts else rng.choice((1, 2, 3, 7, 512, 4096, 16384, 65536))
            s.send(data[pos : pos + step])
            pos += step
        assert outcome(d) == len(body)
        assert out.getvalue() == body


def test_unstuffer_returns_what_follows_the_end():
    out = io.BytesIO()
    u = _Unstuffer(out.write)
    assert u.feed(b"a\r\n..b\r\n.") is None
    assert u.feed(b"\r") is None
    assert u.feed(b"\n+OK next\r\n") == b"+OK next\r\n"
    assert out.getvalue() == b"a\n.b\n"


def test_retrieve_err_fails_with_server_text_and_session_goes_on():
    s = Script()
    session, out, d = s.retrieving(10)
    s.expect(b"RETR 1\r\n")
    s.send(b"-ERR no such message\r\n")
    f = outcome(d)
    assert f.check(POP3ProtocolError) and f.value.server_text == "no such message"
    assert out.getvalue() == b""
    d2 = session.delete("u1")
    s.expect(b"DELE 1\r\n")
    s.send(b"+OK\r\n")
    assert outcome(d2) is None


def test_unknown_uidl_fails_without_sending():
    s = Script()
    session = s.login()
    f = outcome(session.retrieve("nope", io.BytesIO()))
    assert f.check(POP3ProtocolError) and "nope" in str(f.value)
    assert s.t.value() == b""


def test_quit_fires_after_ok_and_closes():
    s = Script()
    session = s.login()
    d = session.quit()
    s.expect(b"QUIT\r\n")
    assert not d.called
    s.send(b"+OK Logging out, messages deleted.\r\n")
    assert outcome(d) is None
    assert s.t.disconnecting
    s.proto.connectionLost(Failure(ConnectionDone()))


def test_quit_err_means_deletions_not_committed():
    s = Script()
    session = s.login()
    d = session.quit()
    s.send(b"-ERR some deleted messages not removed\r\n")
    f = outcome(d)
    assert f.check(POP3ProtocolError) and "not removed" in f.value.server_text


def test_connection_lost_mid_retr_fails_retrieve():
    s = Script()
    session, out, d = s.retrieving(10)
    s.send(b"+OK\r\npart")
    s.proto.connectionLost(Failure(ConnectionLost("gone")))
    f = outcome(d)
    assert f.check(POP3ConnectionLost)
    # Later commands fail at once instead of hanging.
    assert outcome(session.delete("u1")).check(POP3Error)


def test_abort_fails_pending_and_drops_connection():
    s = Script()
    session = s.login()
    s.listed(session, [("u1", 10)])
    d = session.retrieve("u1", io.BytesIO())
    session.abort()
    assert outcome(d).check(POP3ConnectionLost)
    assert s.t.disconnected
    assert b"QUIT" not in s.t.value()


def test_write_error_fails_retrieve_with_the_os_error():
    class Full(io.RawIOBase):
        def write(self, b):
            raise OSError(28, "No space left on device")

    s = Script()
    session = s.login()
    s.listed(session, [("u1", 10)])
    d = session.retrieve("u1", Full())
    s.send(b"+OK\r\nsome data\r\n")
    f = outcome(d)
    assert f.check(OSError) and "No space" in str(f.value)
    assert s.t.disconnected


# -- connect() on a MemoryReactorClock ---------------------------------------


def test_connect_timeout_is_pop3_timeout():
    from twisted.internet import error
    from twisted.internet.testing import MemoryReactorClock

    from phaserlink.net.pop3_client import connect

    r = MemoryReactorClock()
    d = connect(r, "127.0.0.1", 110, username="u", password="p", timeout=5)
    r.advance(0.1)
    (host, port, factory, timeout, _bind), = r.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 110, 5)
    factory.clientConnectionFailed(None, Failure(error.TimeoutError()))
    r.advance(1)
    f = outcome(d)
    assert f.check(POP3Timeout) and "connect timed out after 5 s" in str(f.value)


def test_connect_logs_in_and_uses_the_reactor_clock_for_timeouts():
    from twisted.internet.testing import MemoryReactorClock

    from phaserlink.net.pop3_client import connect

    r = MemoryReactorClock()
    d = connect(r, "127.0.0.1", 110, username="printer1", password="pw", tls="none", timeout=7)
    r.advance(0.1)
    (_h, _p, factory, _t, _b), = r.tcpClients
    proto = factory.buildProtocol(None)
    t = TLSStringTransport()
    proto.makeConnection(t)
    proto.dataReceived(b"+OK hi\r\n")
    proto.dataReceived(b"+OK\r\n.\r\n")
    proto.dataReceived(b"+OK\r\n")
    proto.dataReceived(b"+OK\r\n")
    session = outcome(d)
    assert isinstance(session, POP3Session)
    assert t.value() == b"CAPA\r\nUSER printer1\r\nPASS pw\r\n"
    q = session.quit()
    r.advance(7.1)  # the server never answers QUIT
    f = outcome(q)
    assert f.check(POP3Timeout) and "QUIT" in str(f.value)

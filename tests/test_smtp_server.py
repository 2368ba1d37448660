"""The ESMTP state machine on a StringTransport: every reply the issue names."""

from __future__ import annotations

import base64

import pytest
import pytest_twisted
from twisted.internet import task

from support.ca import TestCA
from support.smtp import HOST, FakeQueue, Session, make_site, mailbox_files, strip_received, strip_results
from support.appliance import password_hash
from phaserlink.trust.logins import FAILURE_DELAY

DEMO = "demo@phaserlink.test"


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("smtpca")).issue()


@pytest.fixture
def tls_site(tmp_path, cert):
    users = f"\n[user:alice]\npassword = {password_hash('wonderland')}\n"
    from support.smtp import PRINTERS

    return make_site(
        tmp_path,
        f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\nrelay_networks = 192.0.2.0/24\n",
        PRINTERS + users,
    )


def keywords(reply: bytes) -> list[str]:
    lines = reply.decode().split("\r\n")[:-1]
    assert all(l.startswith("250-") for l in lines[:-1]) and lines[-1].startswith("250 ")
    return [l[4:] for l in lines[1:]]


# -- greeting, EHLO, simple commands -----------------------------------------


def test_greeting_and_ehlo_keywords(site):
    s = Session(site)
    assert s.greeting == f"220 {HOST} ESMTP PhaserLink\r\n".encode()
    reply = s.cmd("EHLO client.example")
    assert reply.startswith(f"250-{HOST}\r\n".encode())
    assert keywords(reply) == ["PIPELINING", f"SIZE {50 * 1024 * 1024}", "8BITMIME", "ENHANCEDSTATUSCODES"]
    assert s.cmd("HELO client.example") == f"250 {HOST}\r\n".encode()


def test_starttls_only_with_certificate_and_auth_only_after_tls(tls_site):
    s = Session(tls_site)
    kw = keywords(s.cmd("EHLO c"))
    assert "STARTTLS" in kw and not any(k.startswith("AUTH") for k in kw)
    assert s.cmd("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=") == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
    assert s.cmd("STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
    assert s.transport.tls_options is not None
    kw = keywords(s.cmd("EHLO c"))
    assert "STARTTLS" not in kw and "AUTH PLAIN LOGIN" in kw
    assert s.cmd("STARTTLS") == b"503 5.5.1 Error: TLS already active\r\n"


def test_no_tls_configured(site):
    s = Session(site)
    s.ehlo()
    assert s.cmd("STARTTLS") == b"502 5.5.1 Error: STARTTLS not available\r\n"
    assert s.cmd("AUTH LOGIN") == b"502 5.5.1 Error: authentication not enabled\r\n"


def test_simple_commands(site):
    s = Session(site)
    assert s.cmd("NOOP") == b"250 2.0.0 Ok\r\n"
    assert s.cmd("VRFY demo") == b"252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    assert s.cmd("EXPN list") == b"502 5.5.1 Error: EXPN not supported\r\n"
    assert s.cmd("HELP").startswith(b"214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA")
    assert s.cmd("RSET") == b"250 2.0.0 Ok\r\n"
    assert s.cmd("BDAT 10 LAST") == b"500 5.5.2 Error: command not recognized\r\n"
    assert s.cmd("quit") == b"221 2.0.0 Bye\r\n"
    assert s.closed
    assert s.cmd("NOOP") == b""


def test_sequence_errors(site):
    s = Session(site)
    assert s.cmd("MAIL FROM:<a@b.example>") == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
    s.ehlo()
    assert s.cmd(f"RCPT TO:<{DEMO}>") == b"503 5.5.1 Error: need MAIL command\r\n"
    assert s.cmd("DATA") == b"503 5.5.1 Error: need MAIL command\r\n"
    assert s.cmd("MAIL FROM:a@b.example") == b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
    assert s.cmd("MAIL FROM:<a@b.example> FOO=1") == b"555 5.5.4 Unsupported parameter FOO\r\n"
    assert s.cmd("MAIL FROM: <a@b.example> BODY=8BITMIME SIZE=10") == b"250 2.1.0 Ok\r\n"
    assert s.cmd("MAIL FROM:<a@b.example>") == b"503 5.5.1 Error: nested MAIL command\r\n"
    assert s.cmd("DATA") == b"554 5.5.1 Error: no valid recipients\r\n"
    assert s.cmd("RCPT TO:<>") == b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
    assert s.cmd("RSET") == b"250 2.0.0 Ok\r\n"
    assert s.cmd(f"RCPT TO:<{DEMO}>") == b"503 5.5.1 Error: need MAIL command\r\n"
    # EHLO resets the transaction too
    assert s.cmd("MAIL FROM:<>") == b"250 2.1.0 Ok\r\n"
    s.ehlo()
    assert s.cmd("MAIL FROM:<>") == b"250 2.1.0 Ok\r\n"


# -- recipients and senders ----------------------------------------------------


def test_recipient_policy(site):
    s = Session(site, peer="127.0.0.1")
    s.ehlo()
    s.cmd("MAIL FROM:<eve@bad.example>")
    assert s.cmd("RCPT TO:<demo@PhaserLink.test>") == b"250 2.1.5 Ok, prints on demo\r\n"
    assert s.cmd("RCPT TO:<nobody@phaserlink.test>") == (
        b"550 5.1.1 <nobody@phaserlink.test>: Recipient address rejected: no such printer here\r\n")
    # allowed_senders is matched against From:, at the end of DATA (test_trust_smtp.py)
    assert s.cmd("RCPT TO:<strict@phaserlink.test>") == b"250 2.1.5 Ok, prints on strict\r\n"
    assert s.cmd("RCPT TO:<all@phaserlink.test>") == b"250 2.1.5 Ok, prints on strict, open\r\n"
    # 127.0.0.1 is in the default relay_networks
    assert s.cmd("RCPT TO:<someone@elsewhere.example>") == b"250 2.1.5 Ok, relayed\r\n"


def test_group_and_relay_in_one_message(site):
    q = FakeQueue()
    s = Session(site, queue=q)
    s.envelope("x@good.example", "all@phaserlink.test", "demo@phaserlink.test", "u@elsewhere.example")
    assert s.cmd("DATA").startswith(b"354 ")
    reply = s.send(b"Subject: g\r\n\r\nhello\r\n.\r\n")
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    for name in ("strict", "open", "demo"):
        (stored,) = mailbox_files(site, name)
        assert strip_received(stored) == b"Subject: g\n\nhello\n"
    (m,) = q.committed
    assert (m.mail_from, m.recipients) == ("x@good.example", ["u@elsewhere.example"])
    # The relayed copy is the mailbox copy without the Return-Path of
    # final delivery (RFC 5321 4.4: only the last hop adds it) and without
    # our Authentication-Results (for our mailboxes only).
    assert stored.startswith(b"Return-Path: <x@good.example>\nAuthentication-Results: phaserlink.test;")
    assert m.data == strip_results(stored.partition(b"\n")[2])
    # one file, hard-linked into each mailbox
    inodes = {p.stat().st_ino for n in ("strict", "open", "demo")
              for p in (site.appliance.spool / "mail" / n / "new").iterdir()}
    assert len(inodes) == 1


def test_open_relay_refused_outside_relay_networks(tmp_path):
    site = make_site(tmp_path, "relay_networks = 192.0.2.0/24\n")
    s = Session(site, peer="127.0.0.1")
    s.ehlo()
    s.cmd("MAIL FROM:<a@elsewhere.example>")
    assert s.cmd("RCPT TO:<victim@example.com>") == b"550 5.7.1 <victim@example.com>: Relay access denied\r\n"
    assert s.cmd("RCPT TO:<victim%example.com@phaserlink.test>").startswith(b"550 5.1.1 ")
    assert s.cmd("RCPT TO:<@phaserlink.test:victim@example.com>") == (
        b"550 5.7.1 <victim@example.com>: Relay access denied\r\n")
    inside = Session(site, peer="192.0.2.7")
    inside.ehlo()
    inside.cmd("MAIL FROM:<a@elsewhere.example>")
    assert inside.cmd("RCPT TO:<victim@example.com>") == b"250 2.1.5 Ok, relayed\r\n"


def test_relay_queue_failure_is_451(tmp_path):
    site = make_site(tmp_path)
    q = FakeQueue()
    q.fail_commit = True
    s = Session(site, queue=q)
    s.envelope("a@x.example", "u@elsewhere.example")
    s.cmd("DATA")
    # The fake queue's commit fails with ENOSPC: "mail system full".
    assert s.send(b"x\r\n.\r\n") == b"451 4.3.1 Error: insufficient system storage, try again later\r\n"


def test_max_recipients_452(tmp_path):
    site = make_site(tmp_path, "max_recipients = 2\n")
    s = Session(site)
    s.envelope("a@x.example", DEMO, "demo2@phaserlink.test")
    assert s.cmd("RCPT TO:<open@phaserlink.test>") == b"452 4.5.3 Error: too many recipients\r\n"
    assert s.cmd("DATA").startswith(b"354")


# -- limits ---------------------------------------------------------------------


def test_command_line_too_long(site):
    s = Session(site)
    s.ehlo()
    assert s.cmd("NOOP " + "x" * 993) == b"250 2.0.0 Ok\r\n"  # 1000 with CRLF
    assert s.cmd("NOOP " + "x" * 994) == b"500 5.5.2 Error: line too long (more than 1000 bytes with CRLF)\r\n"
    assert s.cmd("NOOP") == b"250 2.0.0 Ok\r\n"
    assert s.cmd("NO\x00OP") == b"500 5.5.2 Error: NUL character in command\r\n"


def test_stream_without_crlf_gets_one_500_and_is_dropped(site):
    s = Session(site)
    replies = b"".join(s.send(b"A" * 1000) for _ in range(10))
    assert replies == b"500 5.5.2 Error: line too long and no end of line; closing\r\n"
    assert s.closed
    assert s.send(b"\r\nNOOP\r\n") == b""


def test_too_many_errors_421(site):
    s = Session(site)
    out = s.send(b"bogus\r\n" * 25)
    assert out.count(b"500 5.5.2") == 20
    assert out.endswith(f"421 4.7.0 {HOST} Error: too many errors\r\n".encode())
    assert s.closed


def test_idle_and_command_timeout(tmp_path):
    site = make_site(tmp_path, "smtp_timeout = 30s\n")
    s = Session(site)
    s.ehlo()
    s.reactor.advance(29)
    assert s.cmd("NOOP") == b"250 2.0.0 Ok\r\n"
    s.reactor.advance(29)
    assert not s.closed
    s.cmd("MAIL FROM:<a@x.example>")
    s.cmd(f"RCPT TO:<{DEMO}>")
    s.cmd("DATA")
    s.send(b"partial message\r\n")
    s.reactor.advance(30)
    assert s.take() == f"421 4.4.2 {HOST} Error: timeout exceeded\r\n".encode()
    assert s.closed
    s.proto.connectionLost(None)
    assert list((site.appliance.spool / "mail" / "demo" / "tmp").iterdir()) == []
    assert mailbox_files(site, "demo") == []


def test_max_sessions_421_at_connect(tmp_path):
    site = make_site(tmp_path, "max_sessions = 2\n")
    first = Session(site)
    second = Session(site, factory=first.factory, reactor=first.reactor)
    third = Session(site, factory=first.factory, reactor=first.reactor)
    assert first.greeting.startswith(b"220 ") and second.greeting.startswith(b"220 ")
    assert third.greeting == f"421 4.3.2 {HOST} Error: too many connections, try again later\r\n".encode()
    assert third.closed
    third.proto.connectionLost(None)
    first.proto.connectionLost(None)
    fourth = Session(site, factory=first.factory, reactor=first.reactor)
    assert fourth.greeting.startswith(b"220 ")


# -- AUTH ---------------------------------------------------------------------------


def tls_session(site, peer="127.0.0.1"):
    s = Session(site, peer=peer)
    s.ehlo()
    assert s.cmd("STARTTLS").startswith(b"220")
    s.ehlo()
    return s


def test_auth_plain_allows_relay(tls_site):
    s = tls_session(tls_site)
    s.cmd("MAIL FROM:<alice@x.example>")
    assert s.cmd("RCPT TO:<u@elsewhere.example>").startswith(b"550 5.7.1 ")
    s.cmd("RSET")
    bad = base64.b64encode(b"\0alice\0wrong").decode()
    assert s.cmd(f"AUTH PLAIN {bad}") == b""  # a failure is answered late (docs/logins.md)
    s.reactor.advance(FAILURE_DELAY)
    assert s.take() == b"535 5.7.8 Error: authentication failed\r\n"
    assert s.cmd("AUTH PLAIN") == b"334 \r\n"
    good = base64.b64encode(b"\0alice\0wonderland").decode()
    assert s.cmd(good) == b"235 2.7.0 Authentication successful\r\n"
    assert s.cmd(f"AUTH PLAIN {good}") == b"503 5.5.1 Error: already authenticated\r\n"
    s.cmd("MAIL FROM:<alice@x.example>")
    assert s.cmd("RCPT TO:<u@elsewhere.example>") == b"250 2.1.5 Ok, relayed\r\n"
    s.cmd("DATA")
    q = s.queue
    assert s.send(b"hi\r\n.\r\n").startswith(b"250 2.0.0 ")
    assert b"with ESMTPSA id " in q.committed[0].data


def test_auth_login_and_cancel(tls_site):
    s = tls_session(tls_site)
    assert s.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert s.cmd("*") == b"501 5.0.0 Authentication cancelled\r\n"
    assert s.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert s.cmd(base64.b64encode(b"alice").decode()) == b"334 UGFzc3dvcmQ6\r\n"
    assert s.cmd(base64.b64encode(b"wonderland").decode()) == b"235 2.7.0 Authentication successful\r\n"
    assert s.cmd("AUTH CRAM-MD5") == b"503 5.5.1 Error: already authenticated\r\n"


def test_starttls_resets_auth_and_helo(tls_site):
    s = tls_session(tls_site)
    good = base64.b64encode(b"\0alice\0wonderland").decode()
    assert s.cmd(f"AUTH PLAIN {good}").startswith(b"235")
    s.cmd("MAIL FROM:<a@x.example>")
    assert s.cmd("STARTTLS") == b"503 5.5.1 Error: TLS already active\r\n"


# -- commit off the reactor thread ---------------------------------------------------


@pytest.mark.parametrize("fail", [False, True])
def test_input_is_held_while_the_commit_runs(site, fail):
    """The 250 waits for the commit; what the client pipelines meanwhile is
    neither lost nor answered early, and the transport is paused once more
    than a little input is held (not before: that costs two epoll calls per
    message)."""
    from twisted.internet import defer

    from phaserlink.smtp_relay.server import SMTPFactory

    pending: list[tuple[defer.Deferred, object]] = []

    class SlowCommitFactory(SMTPFactory):
        def commit(self, sink):
            d = defer.Deferred()
            pending.append((d, sink))
            return d

    s = Session(site, factory=None, store=None)
    factory = SlowCommitFactory(site, s.store, s.queue, reactor=s.reactor)
    s = Session(site, store=s.store, queue=s.queue, factory=factory, reactor=s.reactor)
    s.envelope("a@good.example", DEMO)
    s.cmd("DATA")
    assert s.send(b"Subject: slow\r\n\r\nbody\r\n.\r\nNOOP\r\n") == b""
    assert s.transport.producerState == "producing"
    many = 12000  # 72 KB of pipelined commands: past PAUSE_HELD_INPUT
    assert s.send(b"NOOP\r\n" * many) == b""
    assert s.transport.producerState == "paused"
    assert s.send(b"QUIT\r\n") == b""
    assert mailbox_files(site, "demo") == []
    (d, sink), = pending
    if fail:  # e.g. fsync failed in the thread
        sink.abort()
        d.errback(OSError(5, "Input/output error"))
        assert s.take() == (b"451 4.3.0 Error: cannot store the message now, try again later\r\n"
                            + b"250 2.0.0 Ok\r\n" * (1 + many) + b"221 2.0.0 Bye\r\n")
        assert mailbox_files(site, "demo") == []
        return
    sink.commit()
    d.callback(None)
    reply = s.take()
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    assert reply.endswith(b"\r\n" + b"250 2.0.0 Ok\r\n" * (1 + many) + b"221 2.0.0 Bye\r\n")
    assert s.transport.producerState == "producing"
    assert len(mailbox_files(site, "demo")) == 1


@pytest_twisted.inlineCallbacks
def test_threaded_commit_notifies_store_observers_in_reactor_thread(site):
    """With the real reactor the fsyncs run in a pool thread, but the printer
    side (a store observer) must hear of the message in the reactor thread."""
    import threading

    from twisted.internet import reactor

    from phaserlink.pop3_store.maildir import MaildirStore
    from phaserlink.smtp_relay.server import build_factory
    from phaserlink.smtp_relay.sink import MessageSink

    store = MaildirStore(site.appliance.spool / "mail", list(site.printers))
    heard = []
    store.subscribe("demo", lambda name: heard.append((name, threading.current_thread())))
    factory = build_factory(site, store, FakeQueue(), reactor=reactor)
    sink = MessageSink.open(store, factory.queue, ["demo"], "a@x.example", [])
    sink.write(b"Subject: t\n\nbody\n")
    yield factory.commit(sink)
    yield task.deferLater(reactor, 0, lambda: None)
    assert heard == [("demo", threading.main_thread())]
    assert mailbox_files(site, "demo") == [b"Return-Path: <a@x.example>\nSubject: t\n\nbody\n"]

"""The POP3 server's state machine on a fake transport and clock."""

from __future__ import annotations

import hashlib

import pytest

from phaserlink.pop3_store import server as pop3
from phaserlink.pop3_store.streaming import CHUNK_SIZE
from support.pop3 import APOP_SECRET, Session, deliver, factory_for, make_site, make_store

MSG1 = b"From: a@example.org\nSubject: one\n\nfirst body\n.\n..dots\n"
MSG2 = b"From: b@example.org\nSubject: two\n\nline 1\nline 2\nline 3\n"


def reference_wire(data: bytes) -> bytes:
    """RFC 1939 multi-line body, built line by line (independent of DotStuffer)."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def wire_size(data: bytes) -> int:
    return len(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path / "site")


@pytest.fixture
def tls_site(tmp_path, test_ca):
    return make_site(tmp_path / "tls-site", tls=test_ca.issue())


@pytest.fixture
def store(site):
    s = make_store(site)
    deliver(s, "pull", MSG1)
    deliver(s, "pull", MSG2)
    return s


@pytest.fixture
def factory(site, store):
    return factory_for(site, store)


@pytest.fixture
def session(factory):
    s = Session(factory)
    assert s.login().startswith(b"+OK")
    return s


def files(store, name="pull"):
    return sorted(m.key for m in store.mailbox(name).messages())


# -- greeting and CAPA ---------------------------------------------------------


def test_greeting_has_unique_apop_banner(factory):
    a, b = Session(factory), Session(factory)
    assert a.greeting.startswith(b"+OK PhaserLink POP3 server ready <")
    assert a.greeting.endswith(b"@phaserlink.test>\r\n")
    assert a.protocol.banner != b.protocol.banner
    assert a.protocol.banner in a.greeting


def capa(session):
    reply = session.command(b"CAPA")
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"+OK") and lines[-2:] == [b".", b""]
    return lines[1:-2]


def test_capa_without_certificate_has_no_stls(factory):
    caps = capa(Session(factory, peer="192.0.2.7"))
    assert caps == [b"TOP", b"UIDL", b"USER", b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE",
                    b"EXPIRE NEVER", b"IMPLEMENTATION PhaserLink"]
    assert Session(factory).command(b"STLS").startswith(b"-ERR STLS is not available")


def test_capa_with_certificate_has_stls_and_hides_user_off_loopback(tls_site):
    factory = factory_for(tls_site, make_store(tls_site))
    remote = capa(Session(factory, peer="192.0.2.7"))
    assert b"STLS" in remote and b"USER" not in remote
    local = capa(Session(factory, peer="127.0.0.1"))
    assert b"STLS" in local and b"USER" in local


def test_capa_in_transaction_state(session):
    caps = capa(session)
    assert b"TOP" in caps and b"UIDL" in caps and b"USER" not in caps


# -- USER / PASS -------------------------------------------------------------------


def test_user_pass_opens_mailbox(factory):
    s = Session(factory)
    assert s.command(b"USER pull") == b"+OK send PASS\r\n"
    size = wire_size(MSG1) + wire_size(MSG2)
    assert s.command(b"PASS pull") == f"+OK mailbox pull has 2 messages ({size} octets)\r\n".encode()


@pytest.mark.parametrize("user,password", [(b"pull", b"wrong"), (b"nobody", b"pull"), (b"other", b"pull")])
def test_failed_login_is_answered_after_a_delay(factory, user, password):
    s = Session(factory)
    s.command(b"USER " + user)
    assert s.command(b"PASS " + password) == b""
    s.clock.advance(pop3.FAILED_LOGIN_DELAY - 0.1)
    assert s.take() == b""
    s.clock.advance(0.1)
    assert s.take() == b"-ERR [AUTH] invalid user name or password\r\n"
    assert not s.transport.disconnecting


def test_failed_login_delay_does_not_block_other_sessions(factory):
    bad, good = Session(factory), Session(factory)
    bad.command(b"USER pull")
    bad.command(b"PASS nope")
    assert good.login().startswith(b"+OK mailbox pull")
    assert good.command(b"STAT").startswith(b"+OK 2 ")


def test_pipelined_commands_wait_for_the_failed_login(factory):
    s = Session(factory)
    s.send(b"USER pull\r\nPASS nope\r\nUSER pull\r\nPASS pull\r\nSTAT\r\n")
    assert s.take() == b"+OK send PASS\r\n"
    s.clock.advance(pop3.FAILED_LOGIN_DELAY)
    lines = s.take().split(b"\r\n")
    assert lines[0] == b"-ERR [AUTH] invalid user name or password"
    assert lines[1] == b"+OK send PASS"
    assert lines[2].startswith(b"+OK mailbox pull has 2 messages")
    assert lines[3].startswith(b"+OK 2 ")


def test_too_many_failed_logins_close_the_connection(factory):
    s = Session(factory)
    for attempt in range(pop3.MAX_LOGIN_FAILURES):
        s.command(b"USER pull")
        s.command(b"PASS nope")
        s.clock.advance(pop3.FAILED_LOGIN_DELAY)
        reply = s.take()
        assert reply.startswith(b"-ERR [AUTH] invalid user name or password")
    assert b"too many failures" in reply
    assert s.transport.disconnecting


def test_printers_the_appliance_prints_for_cannot_log_in(factory):
    s = Session(factory)
    s.login(b"local", b"local")
    s.clock.advance(pop3.FAILED_LOGIN_DELAY)
    assert s.take() == b"-ERR [AUTH] invalid user name or password\r\n"
    apop(s, user=b"local")
    s.clock.advance(pop3.FAILED_LOGIN_DELAY)
    assert s.take() == b"-ERR [AUTH] invalid user name or password\r\n"


def test_pass_without_user(factory):
    assert Session(factory).command(b"PASS pull") == b"-ERR send USER first\r\n"


def test_password_may_contain_spaces(tmp_path):
    site = make_site(tmp_path / "s")
    from dataclasses import replace

    from phaserlink.passwords import PasswordHash
    from support.appliance import password_hash

    printer = replace(site.printers["pull"], pop3_password=PasswordHash.parse(password_hash("two words ")))
    site = replace(site, printers={**site.printers, "pull": printer})
    s = Session(factory_for(site, make_store(site)))
    assert s.login(password=b"two words ").startswith(b"+OK mailbox pull")


def test_plaintext_user_refused_off_loopback_when_tls_is_possible(tls_site):
    factory = factory_for(tls_site, make_store(tls_site))
    s = Session(factory, peer="192.0.2.7")
    assert s.command(b"USER pull") == b"-ERR [AUTH] USER/PASS needs TLS here: send STLS first\r\n"
    assert s.command(b"STLS") == b"+OK begin TLS negotiation\r\n"
    assert s.transport.tls_options is factory.tls_options
    assert s.login().startswith(b"+OK mailbox pull")


def test_plaintext_user_allowed_on_loopback_with_tls_configured(tls_site):
    s = Session(factory_for(tls_site, make_store(tls_site)), peer="127.0.0.1")
    assert s.login().startswith(b"+OK mailbox pull has 0 messages")


@pytest.mark.parametrize("peer,allowed", [("::1", True), ("::ffff:127.0.0.1", True), ("127.5.5.5", True),
                                           ("::ffff:192.0.2.7", False), ("2001:db8::1", False)])
def test_loopback_detection(tls_site, peer, allowed):
    s = Session(factory_for(tls_site, make_store(tls_site)), peer=peer)
    assert s.protocol.plaintext_login_allowed() is allowed


def test_plaintext_user_allowed_anywhere_without_certificate(factory):
    assert Session(factory, peer="192.0.2.7").login().startswith(b"+OK mailbox pull")


# -- STLS ------------------------------------------------------------------------------


def test_stls_discards_pipelined_plaintext(tls_site):
    factory = factory_for(tls_site, make_store(tls_site))
    s = Session(factory, peer="192.0.2.7")
    s.command(b"USER pull")  # refused, but must not survive STLS either way
    s.send(b"STLS\r\nUSER pull\r\nPASS pull\r\nSTAT\r\n")
    assert s.take() == b"+OK begin TLS negotiation\r\n"
    assert s.transport.tls_options is not None
    # Inside TLS: the injected commands were dropped, PASS needs a new USER.
    assert s.command(b"PASS pull") == b"-ERR send USER first\r\n"
    caps = capa(s)
    assert b"STLS" not in caps and b"USER" in caps
    assert s.command(b"STLS") == b"-ERR TLS is already active\r\n"


def test_stls_forgets_user_given_before(tls_site):
    s = Session(factory_for(tls_site, make_store(tls_site)), peer="127.0.0.1")
    s.command(b"USER pull")
    s.command(b"STLS")
    assert s.command(b"PASS pull") == b"-ERR send USER first\r\n"


def test_stls_not_valid_after_login(tls_site):
    s = Session(factory_for(tls_site, make_store(tls_site)), peer="127.0.0.1")
    s.login()
    assert s.command(b"STLS") == b"-ERR STLS is not valid in the TRANSACTION state\r\n"
    assert s.transport.tls_options is None


# -- APOP ----------------------------------------------------------------------------------


def apop(s, user=b"pull", secret=APOP_SECRET):
    digest = hashlib.md5(s.protocol.banner + secret).hexdigest().encode()
    return s.command(b"APOP " + user + b" " + digest)


def test_apop_success(factory):
    s = Session(factory)
    assert apop(s).startswith(b"+OK mailbox pull has 2 messages")


def test_apop_uppercase_hex_digest(factory):
    s = Session(factory)
    digest = hashlib.md5(s.protocol.banner + APOP_SECRET).hexdigest().upper().encode()
    assert s.command(b"APOP pull " + digest).startswith(b"+OK mailbox pull")


def test_apop_wrong_secret_fails_after_delay(factory):
    s = Session(factory)
    assert apop(s, secret=b"guess") == b""
    s.clock.advance(pop3.FAILED_LOGIN_DELAY)
    assert s.take() == b"-ERR [AUTH] invalid user name or password\r\n"


def test_apop_digest_of_another_banner_fails(factory):
    s, other = Session(factory), Session(factory)
    digest = hashlib.md5(other.protocol.banner + APOP_SECRET).hexdigest().encode()
    s.command(b"APOP pull " + digest)
    s.clock.advance(pop3.FAILED_LOGIN_DELAY)
    assert s.take().startswith(b"-ERR [AUTH]")


def test_apop_needs_a_shared_secret(factory):
    """'other' has only a password hash: APOP cannot work for it."""
    s = Session(factory)
    for secret in (b"other", b"", b"\0 no secret \0"):
        apop(s, user=b"other", secret=secret)
        s.clock.advance(pop3.FAILED_LOGIN_DELAY)
        assert s.take().startswith(b"-ERR [AUTH]")


def test_apop_bad_digest_syntax(factory):
    s = Session(factory)
    assert s.command(b"APOP pull xyz") == b"-ERR APOP digest must be 32 hex digits\r\n"
    assert s.command(b"APOP pull") == b"-ERR APOP takes 2 arguments\r\n"


# -- TRANSACTION commands ---------------------------------------------------------------


def test_stat_list_uidl(session, store):
    keys = [m.key for m in store.mailbox("pull").messages()]
    s1, s2 = wire_size(MSG1), wire_size(MSG2)
    assert session.command(b"STAT") == f"+OK 2 {s1 + s2}\r\n".encode()
    assert session.command(b"LIST") == f"+OK 2 messages ({s1 + s2} octets)\r\n1 {s1}\r\n2 {s2}\r\n.\r\n".encode()
    assert session.command(b"LIST 2") == f"+OK 2 {s2}\r\n".encode()
    assert session.command(b"UIDL") == f"+OK unique-id listing follows\r\n1 {keys[0]}\r\n2 {keys[1]}\r\n.\r\n".encode()
    assert session.command(b"UIDL 1") == f"+OK 1 {keys[0]}\r\n".encode()


@pytest.mark.parametrize("command", [b"LIST", b"UIDL", b"RETR", b"DELE"])
def test_message_number_errors(session, command):
    assert session.command(command + b" 3") == b"-ERR no such message 3\r\n"
    assert session.command(command + b" 0") == b"-ERR no such message 0\r\n"
    assert session.command(command + b" x1") == b"-ERR invalid message number 'x1'\r\n"
    assert session.command(command + b" -1") == b"-ERR invalid message number '-1'\r\n"
    session.command(b"DELE 1")
    assert session.command(command + b" 1") == b"-ERR message 1 is deleted\r\n"


def test_uidl_is_stable_across_sessions(factory, store):
    first = Session(factory)
    first.login()
    listing = first.command(b"UIDL")
    first.command(b"QUIT")
    deliver(store, "pull", b"Subject: three\n\n3\n")
    second = Session(factory)
    second.login()
    again = second.command(b"UIDL").split(b"\r\n")
    assert again[:3] == listing.split(b"\r\n")[:3]
    assert len(again) == 6  # +OK, 3 messages, ".", ""
    assert len(set(l.split()[1] for l in again[1:4])) == 3


def test_retr_gives_rfc1939_bytes(session):
    assert session.command(b"RETR 1") == f"+OK {wire_size(MSG1)} octets\r\n".encode() + reference_wire(MSG1)
    assert session.command(b"RETR 2") == f"+OK {wire_size(MSG2)} octets\r\n".encode() + reference_wire(MSG2)


def test_retr_body_size_matches_list(session):
    reply = session.command(b"RETR 1")
    body = reply.split(b"\r\n", 1)[1][: -len(b".\r\n")]
    unstuffed = b"\r\n".join(l[1:] if l.startswith(b".") else l for l in body.split(b"\r\n"))
    assert len(unstuffed) == wire_size(MSG1)


def big_message_with_dots() -> bytes:
    """'.' lines at 16384, at the 64 KiB chunk boundary and split across it."""
    data = bytearray(b"Subject: dots\n\n")

    def pad_to(offset: int) -> None:
        # a filler line ending exactly before offset
        need = offset - len(data)
        assert need >= 1
        data.extend(b"x" * (need - 1) + b"\n")

    pad_to(16384)
    data.extend(b".\n")
    pad_to(CHUNK_SIZE)
    data.extend(b"..\n")
    pad_to(2 * CHUNK_SIZE - 1)
    data.extend(b".\n")  # "." last byte of chunk 2, LF first of chunk 3
    pad_to(3 * CHUNK_SIZE)
    data.extend(b".end\n")
    return bytes(data)


def crlf_message_with_dots() -> bytes:
    """As stored by another MDA: CRLF, with a CR-LF pair split by a chunk."""
    data = bytearray(b"Subject: crlf dots\r\n\r\n")
    data.extend(b"y" * (CHUNK_SIZE - 1 - len(data)) + b"\r")
    data.extend(b"\n.\r\n")
    data.extend(b"z" * (2 * CHUNK_SIZE - 1 - len(data)) + b"\r")
    data.extend(b"\n..\r\nend")
    return bytes(data)


def test_retr_dot_lines_at_chunk_boundaries(factory, store):
    data = big_message_with_dots()
    assert data[16384:16386] == b".\n" and data[CHUNK_SIZE : CHUNK_SIZE + 3] == b"..\n"
    deliver(store, "pull", data)
    s = Session(factory)
    s.login()
    assert s.command(b"RETR 3") == f"+OK {wire_size(data)} octets\r\n".encode() + reference_wire(data)


def test_retr_streams_in_chunks_and_respects_pause(factory, store, monkeypatch):
    data = big_message_with_dots()
    deliver(store, "pull", data)
    s = Session(factory)
    s.login()
    # Like a TCP transport with a full buffer: every write pauses the producer.
    real_write = s.transport.write

    def write(chunk):
        real_write(chunk)
        if s.transport.producer is not None:
            s.transport.producer.pauseProducing()

    monkeypatch.setattr(s.transport, "write", write)
    s.protocol.dataReceived(b"RETR 3\r\nSTAT\r\n")
    producer = s.transport.producer
    assert producer is not None and s.transport.streaming
    pieces = [s.take()]
    assert pieces[0] == f"+OK {wire_size(data)} octets\r\n".encode()  # nothing sent synchronously
    while s.transport.producer is not None:
        s.clock.advance(0)
        pieces.append(s.take())
        s.clock.advance(1)
        assert s.take() == b""  # paused: nothing more, and STAT waits
        producer.resumeProducing()
    s.clock.advance(0)
    pieces.append(s.take())
    assert len(pieces) >= 5  # header line, 4 chunks of 64 KiB, the end
    assert all(len(p) <= CHUNK_SIZE * 2 for p in pieces)
    stat = b"+OK 3 " + str(wire_size(MSG1) + wire_size(MSG2) + wire_size(data)).encode() + b"\r\n"
    assert b"".join(pieces) == f"+OK {wire_size(data)} octets\r\n".encode() + reference_wire(data) + stat


@pytest.mark.parametrize("data", [b"Subject: crlf\r\n\r\nbody\r\n.\r\nend", crlf_message_with_dots()])
def test_retr_of_a_crlf_file_dropped_in_by_hand(factory, store, data):
    box = store.mailbox("other")
    (box.new / "1700000000.handmade.host").write_bytes(data)
    s = Session(factory)
    s.login(b"other", b"other")
    assert s.command(b"LIST") == f"+OK 1 messages ({wire_size(data)} octets)\r\n1 {wire_size(data)}\r\n.\r\n".encode()
    assert s.command(b"RETR 1") == f"+OK {wire_size(data)} octets\r\n".encode() + reference_wire(data)


@pytest.mark.parametrize(
    "lines,expect",
    [
        (b"0", b"From: b@example.org\r\nSubject: two\r\n\r\n.\r\n"),
        (b"2", b"From: b@example.org\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\n.\r\n"),
        (b"99", b"From: b@example.org\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\nline 3\r\n.\r\n"),
    ],
)
def test_top(session, lines, expect):
    assert session.command(b"TOP 2 " + lines) == b"+OK top of message follows\r\n" + expect


def test_top_stuffs_dots(session):
    assert session.command(b"TOP 1 1") == (
        b"+OK top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\nfirst body\r\n.\r\n"
    )
    assert session.command(b"TOP 1 3").endswith(b"first body\r\n..\r\n...dots\r\n.\r\n")


def test_top_errors(session):
    assert session.command(b"TOP 1") == b"-ERR TOP takes 2 arguments\r\n"
    assert session.command(b"TOP 1 -1") == b"-ERR invalid number of lines '-1'\r\n"
    assert session.command(b"TOP 9 1") == b"-ERR no such message 9\r\n"


def test_dele_rset_noop(session):
    s1, s2 = wire_size(MSG1), wire_size(MSG2)
    assert session.command(b"DELE 1") == b"+OK message 1 deleted\r\n"
    assert session.command(b"STAT") == f"+OK 1 {s2}\r\n".encode()
    assert session.command(b"LIST") == f"+OK 1 messages ({s2} octets)\r\n2 {s2}\r\n.\r\n".encode()
    assert session.command(b"DELE 1") == b"-ERR message 1 is deleted\r\n"
    assert session.command(b"RETR 1") == b"-ERR message 1 is deleted\r\n"
    assert session.command(b"RSET") == f"+OK maildrop has 2 messages ({s1 + s2} octets)\r\n".encode()
    assert session.command(b"STAT") == f"+OK 2 {s1 + s2}\r\n".encode()
    assert session.command(b"NOOP") == b"+OK\r\n"


def test_dele_takes_effect_only_at_quit(session, store, factory):
    before = files(store)
    session.command(b"DELE 2")
    assert files(store) == before
    assert session.command(b"QUIT") == b"+OK PhaserLink POP3 server signing off (1 messages deleted)\r\n"
    assert session.transport.disconnecting
    assert files(store) == before[:1]
    session.protocol.connectionLost(None)
    again = Session(factory)
    assert again.login().startswith(b"+OK mailbox pull has 1 messages")


def test_quit_without_dele_deletes_nothing(session, store):
    before = files(store)
    assert session.command(b"QUIT") == b"+OK PhaserLink POP3 server signing off\r\n"
    assert files(store) == before


def test_dropped_connection_deletes_nothing_and_unlocks(session, store, factory):
    before = files(store)
    session.command(b"DELE 1")
    session.command(b"DELE 2")
    session.drop()
    assert files(store) == before
    assert Session(factory).login().startswith(b"+OK mailbox pull has 2 messages")


def test_autologout_deletes_nothing(session, store, factory):
    before = files(store)
    session.command(b"DELE 1")
    session.clock.advance(599)
    assert session.take() == b""
    session.command(b"NOOP")  # activity resets the timer
    session.clock.advance(599)
    assert session.take() == b""
    session.clock.advance(1)
    assert session.take() == b"-ERR autologout timer expired, closing\r\n"
    assert session.transport.disconnecting
    session.protocol.connectionLost(None)
    assert files(store) == before
    assert Session(factory).login().startswith(b"+OK mailbox pull has 2")


def test_quit_reports_failed_deletion(session, store, monkeypatch):
    def broken(messages):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(session.protocol.mailbox, "delete", broken)
    session.command(b"DELE 1")
    assert session.command(b"QUIT") == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert session.transport.disconnecting


def test_deletion_is_fsynced_before_ok(session, store, monkeypatch):
    from phaserlink.pop3_store import maildir

    events = []
    real = maildir.fsync_dir
    monkeypatch.setattr(maildir, "fsync_dir", lambda p: (events.append(("fsync", p.name)), real(p)))
    real_write = session.transport.write
    monkeypatch.setattr(session.transport, "write", lambda d: (events.append(("write", d)), real_write(d)))
    session.command(b"DELE 1")
    events.clear()
    session.command(b"QUIT")
    assert events[0] == ("fsync", "new")
    assert events[1][0] == "write" and events[1][1].startswith(b"+OK")


def test_one_session_per_mailbox(factory):
    first = Session(factory)
    assert first.login().startswith(b"+OK")
    second = Session(factory)
    assert second.login() == b"-ERR [IN-USE] mailbox is in use by another session, try again later\r\n"
    # another mailbox is not affected
    assert Session(factory).login(b"other", b"other").startswith(b"+OK mailbox other")
    first.command(b"QUIT")
    first.protocol.connectionLost(None)
    assert second.login().startswith(b"+OK mailbox pull")


def test_in_use_also_for_apop(factory):
    Session(factory).login()
    s = Session(factory)
    assert apop(s).startswith(b"-ERR [IN-USE]")


def test_session_limit(tmp_path):
    site = make_site(tmp_path / "s", extra="max_sessions = 2\n")
    factory = factory_for(site, make_store(site))
    a, b = Session(factory), Session(factory)
    c = Session(factory)
    assert c.greeting == b"-ERR [SYS/TEMP] too many sessions, try again later\r\n"
    assert c.transport.disconnecting
    c.protocol.connectionLost(None)
    a.command(b"QUIT")
    a.protocol.connectionLost(None)
    assert Session(factory).greeting.startswith(b"+OK")


# -- syntax --------------------------------------------------------------------------------


def test_unknown_and_misplaced_commands(factory):
    s = Session(factory)
    assert s.command(b"XYZZY") == b"-ERR unknown command\r\n"
    assert s.command(b"") == b"-ERR unknown command\r\n"
    assert s.command(b"STAT") == b"-ERR STAT is not valid in the AUTHORIZATION state\r\n"
    assert s.command(b"user") == b"-ERR USER takes 1 argument\r\n"
    assert s.command(b"CAPA x") == b"-ERR CAPA takes 0 arguments\r\n"
    s.login()
    assert s.command(b"USER pull") == b"-ERR USER is not valid in the TRANSACTION state\r\n"
    assert s.command(b"LIST 1 2") == b"-ERR LIST takes 0 to 1 arguments\r\n"
    assert s.command(b"stat").startswith(b"+OK 2 ")


def test_long_line_is_refused_and_the_session_goes_on(session):
    assert session.command(b"NOOP " + b"x" * 1000) == b"-ERR line too long (at most 512 octets)\r\n"
    # a long line arriving in pieces gets one answer
    session.send(b"LIST " + b"9" * 600)
    assert session.take() == b"-ERR line too long (at most 512 octets)\r\n"
    session.send(b"9" * 5000)
    session.send(b"9\r\nNOOP\r\n")
    assert session.take() == b"+OK\r\n"


def test_endless_garbage_is_cut_off(factory):
    s = Session(factory)
    for _ in range(pop3.MAX_BAD_COMMANDS):
        s.send(b"BOGUS\r\n")
    assert s.take().endswith(b"-ERR unknown command; too many bad commands, closing\r\n")
    assert s.transport.disconnecting


def test_pipelined_session(session, store):
    key = store.mailbox("pull").messages()[1].key
    session.send(b"STAT\r\nLIST\r\nRETR 2\r\nUIDL 2\r\nDELE 2\r\nQUIT\r\n")
    lines = session.take()
    s1, s2 = wire_size(MSG1), wire_size(MSG2)
    assert lines == (
        f"+OK 2 {s1 + s2}\r\n".encode()
        + f"+OK 2 messages ({s1 + s2} octets)\r\n1 {s1}\r\n2 {s2}\r\n.\r\n".encode()
        + f"+OK {s2} octets\r\n".encode() + reference_wire(MSG2)
        + f"+OK 2 {key}\r\n".encode()
        + b"+OK message 2 deleted\r\n"
        + b"+OK PhaserLink POP3 server signing off (1 messages deleted)\r\n"
    )
    assert len(store.mailbox("pull").messages()) == 1


def test_quit_in_authorization_state(factory):
    s = Session(factory)
    assert s.command(b"QUIT") == b"+OK PhaserLink POP3 server signing off\r\n"
    assert s.transport.disconnecting


def test_uidl_of_odd_file_name_is_a_valid_unique_id(factory, store):
    box = store.mailbox("pull")
    (box.new / ("weird name é " + "y" * 80)).write_bytes(b"Subject: x\n\nx\n")
    s = Session(factory)
    s.login()
    lines = s.command(b"UIDL").split(b"\r\n")[1:-2]
    for line in lines:
        uid = line.split(b" ", 1)[1]
        assert 1 <= len(uid) <= 70 and all(0x21 <= c <= 0x7E for c in uid)
    s.command(b"QUIT")
    s.protocol.connectionLost(None)
    s2 = Session(factory)
    s2.login()
    assert s2.command(b"UIDL").split(b"\r\n")[1:-2] == lines

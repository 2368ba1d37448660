"""POP3 client against a real Dovecot (the remote POP3 store of a printer).

What a user would check: the bytes that came out equal the bytes put in the
Maildir, deleted mail is gone from Dovecot's Maildir after QUIT, a wrong
password / missing STLS / wrong CA / silent server each give their own error.
"""

from __future__ import annotations

import base64
import random
import socket

import pytest
import pytest_twisted

from phaserlink.net.pop3_client import (
    POP3AuthError,
    POP3ConnectError,
    POP3Timeout,
    POP3TLSError,
    connect,
)
from support.ca import TestCA
from support.dovecot import Dovecot
from support.peers import free_port

pytestmark = pytest.mark.peer

USERS = {f"printer{i}": f"pw-{i} with space" for i in range(1, 9)}


@pytest.fixture(scope="module")
def dovecot():
    d = Dovecot()
    try:
        d.start(USERS)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def dovecot_tls(test_ca):
    d = Dovecot(cert=test_ca.issue("localhost"))
    try:
        d.start(USERS)
        yield d
    finally:
        d.stop()


def reactor():
    from twisted.internet import reactor as r

    return r


def login(server: Dovecot, user: str, **kw):
    kw.setdefault("password", USERS[user])
    kw.setdefault("timeout", 10)
    # A server without a certificate is reached in clear only when we say so.
    kw.setdefault("tls", "none" if server.cert is None else "opportunistic")
    return connect(reactor(), server.host, kw.pop("port", server.port), username=user, **kw)


def dot_at_16k() -> bytes:
    head = b"From: someone@example.org\nSubject: dot line at 16384\n\n"
    filler = b"x" * (16384 - len(head) - 1) + b"\n"
    msg = head + filler + b".\n..\n.not a terminator\nend\n"
    assert msg[16384:16386] == b".\n"
    return msg


def big_base64(size: int) -> bytes:
    rng = random.Random(20)
    raw = rng.randbytes(size * 3 // 4)
    body = base64.encodebytes(raw)  # 76-char lines, LF
    return (
        b"From: someone@example.org\nSubject: big\nMIME-Version: 1.0\n"
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n" + body
    )


@pytest_twisted.inlineCallbacks
def test_list_retrieve_byte_identical_delete_quit(dovecot, tmp_path):
    user = "printer1"
    small = b"From: a@example.org\nSubject: small\n\n.\n..\nhello\n"
    big = big_base64(20 * 1024 * 1024)
    msgs = [small, dot_at_16k(), big]
    for m in msgs:
        dovecot.deliver(user, m)

    session = yield login(dovecot, user)
    assert not session.tls_active
    listing = yield session.list_uidl()
    assert len(listing) == 3
    # LIST sizes are wire sizes: one CR more per line.
    assert [size for _, size in listing] == [len(m) + m.count(b"\n") for m in msgs]
    for i, (uidl, _) in enumerate(listing):
        path = tmp_path / f"m{i}"
        with open(path, "wb") as out:
            n = yield session.retrieve(uidl, out)
        assert n == len(msgs[i])
        assert path.read_bytes() == msgs[i], f"message {i} differs"
    yield session.delete(listing[0][0])
    yield session.delete(listing[1][0])
    yield session.quit()
    assert dovecot.messages(user) == [big]


@pytest_twisted.inlineCallbacks
def test_abort_deletes_nothing(dovecot, tmp_path):
    user = "printer2"
    dovecot.deliver(user, b"Subject: keep me\n\nbody\n")
    session = yield login(dovecot, user)
    ((uidl, _),) = yield session.list_uidl()
    yield session.delete(uidl)
    session.abort()
    # A new session still sees it, under the same UIDL.
    session = yield login(dovecot, user)
    listing = yield session.list_uidl()
    assert [u for u, _ in listing] == [uidl]
    yield session.quit()
    assert dovecot.messages(user) == [b"Subject: keep me\n\nbody\n"]


@pytest_twisted.inlineCallbacks
def test_wrong_password_is_auth_error(dovecot):
    with pytest.raises(POP3AuthError) as e:
        yield login(dovecot, "printer3", password="wrong")
    assert "Authentication failed" in e.value.server_text


@pytest_twisted.inlineCallbacks
def test_tls_required_without_stls_is_tls_error(dovecot):
    with pytest.raises(POP3TLSError) as e:
        yield login(dovecot, "printer3", tls="required")
    assert "does not offer STLS" in str(e.value)


@pytest_twisted.inlineCallbacks
def test_stls_verified_against_test_ca(dovecot_tls, test_ca, tmp_path):
    user = "printer4"
    msg = dot_at_16k()
    dovecot_tls.deliver(user, msg)
    for host in ("127.0.0.1", "localhost"):
        session = yield connect(
            reactor(), host, dovecot_tls.port, username=user, password=USERS[user],
            tls="required", ca_file=test_ca.ca_path, timeout=10,
        )
        assert session.tls_active
        ((uidl, _),) = yield session.list_uidl()
        with open(tmp_path / "m", "wb") as out:
            yield session.retrieve(uidl, out)
        assert (tmp_path / "m").read_bytes() == msg
        yield session.quit()
    # Dovecot itself says the logins were over TLS (not just "secured" loopback).
    logins = dovecot_tls.logins(user)
    assert len(logins) == 2 and all(", TLS," in line for line in logins), logins


@pytest_twisted.inlineCallbacks
def test_implicit_tls_pop3s(dovecot_tls, test_ca):
    user = "printer5"
    dovecot_tls.deliver(user, b"Subject: s\n\nx\n")
    session = yield login(dovecot_tls, user, port=dovecot_tls.pop3s_port, implicit_tls=True,
                          ca_file=test_ca.ca_path)
    assert session.tls_active
    listing = yield session.list_uidl()
    assert len(listing) == 1
    yield session.quit()
    assert dovecot_tls.logins(user) and ", TLS," in dovecot_tls.logins(user)[-1]


@pytest_twisted.inlineCallbacks
def test_untrusted_certificate_is_tls_error(dovecot_tls, tmp_path):
    other = TestCA(tmp_path / "other-ca", name="Someone Else's CA")
    with pytest.raises(POP3TLSError) as e:
        yield login(dovecot_tls, "printer6", ca_file=other.ca_path)
    assert "certificate verify failed" in str(e.value)
    with pytest.raises(POP3TLSError):
        yield login(dovecot_tls, "printer6", port=dovecot_tls.pop3s_port, implicit_tls=True,
                    ca_file=other.ca_path)


@pytest_twisted.inlineCallbacks
def test_silent_server_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        start = reactor().seconds()
        with pytest.raises(POP3Timeout) as e:
            yield connect(reactor(), "127.0.0.1", port, username="u", password="p", timeout=0.5)
        assert reactor().seconds() - start < 5
        assert "greeting" in str(e.value)


@pytest_twisted.inlineCallbacks
def test_refused_connection_is_connect_error():
    with pytest.raises(POP3ConnectError):
        yield connect(reactor(), "127.0.0.1", free_port(), username="u", password="p", timeout=5)

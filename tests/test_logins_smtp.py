"""SMTP AUTH under the login rules, on fake transports and a fake clock:
a wrong password is answered late, an address that guessed too often is
refused and cut off, and an unknown user costs a full PBKDF2."""

from __future__ import annotations

import base64

import pytest

from phaserlink.trust import logins
from support.appliance import password_hash
from support.ca import TestCA
from support.smtp import PRINTERS, Session, make_site
from test_logins_rules import count_pbkdf2_rounds

DEMO = "demo@phaserlink.test"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("loginca")).issue()


@pytest.fixture
def site(tmp_path, cert):
    users = f"\n[user:alice]\npassword = {password_hash('wonderland')}\n"
    return make_site(tmp_path, f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\n", PRINTERS + users)


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def tls_session(site, peer="192.0.2.10", first=None) -> Session:
    if first is None:
        s = Session(site, peer=peer)
    else:
        s = Session(site, peer=peer, factory=first.factory, reactor=first.reactor, store=first.store)
    s.ehlo()
    assert s.cmd("STARTTLS").startswith(b"220")
    s.ehlo()
    return s


@pytest.fixture
def pbkdf2_calls(monkeypatch):
    """The iterations of each pbkdf2_hmac call the test makes."""
    return count_pbkdf2_rounds(monkeypatch)


def test_wrong_password_is_answered_after_the_delay_and_others_go_on(site):
    s = tls_session(site)
    assert s.cmd(f"AUTH PLAIN {plain('alice', 'guess')}") == b""
    # meanwhile another client sends mail and gets its 250
    other = Session(site, peer="192.0.2.99", factory=s.factory, reactor=s.reactor, store=s.store)
    other.envelope("a@good.example", DEMO)
    other.cmd("DATA")
    assert other.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as ")
    s.reactor.advance(logins.FAILURE_DELAY - 0.1)
    assert s.take() == b""
    s.reactor.advance(0.1)
    assert s.take() == b"535 5.7.8 Error: authentication failed\r\n"
    assert not s.closed
    # the right password is answered at once
    assert s.cmd(f"AUTH PLAIN {plain('alice', 'wonderland')}") == b"235 2.7.0 Authentication successful\r\n"


def test_commands_pipelined_after_a_wrong_auth_wait_for_its_answer(site):
    s = tls_session(site)
    assert s.send(f"AUTH PLAIN {plain('alice', 'guess')}\r\nNOOP\r\n") == b""
    s.reactor.advance(logins.FAILURE_DELAY)
    assert s.take() == b"535 5.7.8 Error: authentication failed\r\n250 2.0.0 Ok\r\n"


def test_session_is_closed_after_its_failures(site):
    s = tls_session(site)
    for n in range(logins.FAILURES_PER_SESSION):
        s.cmd("AUTH LOGIN")
        s.cmd(base64.b64encode(b"alice").decode())
        s.cmd(base64.b64encode(b"guess%d" % n).decode())
        s.reactor.advance(logins.FAILURE_DELAY)
        reply = s.take()
        assert reply.startswith(b"535 5.7.8 Error: authentication failed\r\n")
    assert reply.endswith(b"421 4.7.0 phaserlink.test Error: too many failed logins\r\n")
    assert s.closed


def test_address_that_failed_too_often_is_refused_without_a_check(site, pbkdf2_calls):
    first = tls_session(site, peer="198.51.100.7")
    sessions = [first] + [tls_session(site, peer="198.51.100.7", first=first)
                          for _ in range(logins.FAILURE_BURST - 1)]
    for s in sessions:  # FAILURE_BURST failures at once, one per session
        assert s.cmd(f"AUTH PLAIN {plain('alice', 'guess')}") == b""
    first.reactor.advance(logins.FAILURE_DELAY)
    assert all(s.take() == b"535 5.7.8 Error: authentication failed\r\n" for s in sessions)
    assert len(pbkdf2_calls) == logins.FAILURE_BURST
    # the next attempt from that address, even with the right password
    late = tls_session(site, peer="198.51.100.7", first=first)
    assert late.cmd(f"AUTH PLAIN {plain('alice', 'wonderland')}") == b""
    first.reactor.advance(logins.FAILURE_DELAY - 0.1)
    assert late.take() == b"" and not late.closed  # answered late too
    first.reactor.advance(0.1)
    assert late.take() == (b"421 4.7.0 phaserlink.test Error: too many failed logins from your address, "
                           b"try again later\r\n")
    assert late.closed
    assert len(pbkdf2_calls) == logins.FAILURE_BURST  # no PBKDF2 spent on it
    # another address is not affected
    other = tls_session(site, peer="198.51.100.8", first=first)
    assert other.cmd(f"AUTH PLAIN {plain('alice', 'wonderland')}").startswith(b"235 ")


def test_ipv6_clients_count_per_64(site):
    from twisted.internet.address import IPv6Address

    from support.smtp import TLSStringTransport

    first = None
    replies = []
    for n in range(logins.FAILURE_BURST + 1):
        peer = IPv6Address("TCP", f"2001:db8:5:6::{n + 1:x}", 40000)
        kw = {} if first is None else {"factory": first.factory, "reactor": first.reactor, "store": first.store}
        s = Session(site, transport=TLSStringTransport(peerAddress=peer), **kw)
        first = first or s
        s.ehlo()
        s.cmd("STARTTLS")
        s.ehlo()
        s.cmd(f"AUTH PLAIN {plain('alice', 'guess')}")
        first.reactor.advance(logins.FAILURE_DELAY)
        replies.append(s.take()[:3])
    assert replies == [b"535"] * logins.FAILURE_BURST + [b"421"]


def test_unknown_user_costs_the_same_pbkdf2(site, pbkdf2_calls):
    known = site.users["alice"].password.iterations
    s = tls_session(site)
    for user in ("mallory", "alice"):
        s.cmd(f"AUTH PLAIN {plain(user, 'guess')}")
        s.reactor.advance(logins.FAILURE_DELAY)
        assert s.take() == b"535 5.7.8 Error: authentication failed\r\n"
    assert pbkdf2_calls == [known, known]


def test_connection_lost_during_the_delay(site):
    s = tls_session(site)
    s.cmd(f"AUTH PLAIN {plain('alice', 'guess')}")
    s.proto.connectionLost(None)
    s.reactor.advance(logins.FAILURE_DELAY)
    assert s.take() == b""


def test_too_many_checks_waiting_is_a_temporary_failure(site, pbkdf2_calls):
    s = tls_session(site)
    guard = s.factory.logins
    guard.waiting = 0
    held = guard.checks.acquire()  # a check is running: no room for another
    assert held.called
    assert s.cmd(f"AUTH PLAIN {plain('alice', 'wonderland')}") == b""
    s.reactor.advance(logins.FAILURE_DELAY)
    assert s.take() == b"454 4.7.0 Temporary authentication failure, try again later\r\n"
    assert not s.closed and pbkdf2_calls == []
    guard.checks.release()
    assert s.cmd(f"AUTH PLAIN {plain('alice', 'wonderland')}").startswith(b"235 ")

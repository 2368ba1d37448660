"""POP3 USER/PASS and APOP under the login rules, on a fake transport and
clock: the address that guessed too often is refused and cut off, the
failures count together with SMTP's, and an unknown user costs a PBKDF2 of
the configured rounds."""

from __future__ import annotations

import hashlib

import pytest

from phaserlink.trust import logins
from support.pop3 import Session, factory_for, make_site, make_store
from test_logins_rules import count_pbkdf2_rounds


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path / "site")


@pytest.fixture
def factory(site):
    return factory_for(site, make_store(site))


def wrong_login(factory, peer, user=b"pull"):
    s = Session(factory, peer=peer)
    s.command(b"USER " + user)
    s.command(b"PASS guess")
    return s


def test_address_that_failed_too_often_is_refused_and_closed(factory):
    sessions = [wrong_login(factory, "203.0.113.5") for _ in range(logins.FAILURE_BURST)]
    factory.reactor.advance(logins.FAILURE_DELAY)
    assert all(s.take() == b"-ERR [AUTH] invalid user name or password\r\n" for s in sessions)
    late = Session(factory, peer="203.0.113.5")
    assert late.login() == b""  # the right password, but from that address
    factory.reactor.advance(logins.FAILURE_DELAY)
    assert late.take() == b"-ERR [SYS/TEMP] too many failed logins from your address, try again later\r\n"
    assert late.transport.disconnecting
    other = Session(factory, peer="203.0.113.6")
    assert other.login().startswith(b"+OK mailbox pull")


def test_apop_failures_count_too(factory):
    for _ in range(logins.FAILURE_BURST):
        s = Session(factory, peer="203.0.113.5")
        s.command(b"APOP pull " + b"0" * 32)
    factory.reactor.advance(logins.FAILURE_DELAY)
    late = Session(factory, peer="203.0.113.5")
    digest = hashlib.md5(late.protocol.banner + b"tanstaaf-shared-secret").hexdigest().encode()
    late.command(b"APOP pull " + digest)
    factory.reactor.advance(logins.FAILURE_DELAY)
    assert late.take().startswith(b"-ERR [SYS/TEMP] too many failed logins")


def test_smtp_and_pop3_count_failures_in_one_table(site, factory):
    """An address that guessed over POP3 is refused over SMTP too (one
    LoginGuard per reactor)."""
    from phaserlink.smtp_relay.server import build_factory as smtp_factory

    from support.smtp import FakeQueue

    for _ in range(logins.FAILURE_BURST):
        wrong_login(factory, "203.0.113.5")
    factory.reactor.advance(logins.FAILURE_DELAY)
    smtp = smtp_factory(site, make_store(site), FakeQueue(), reactor=factory.reactor)
    assert smtp.logins is factory.logins
    verdicts = []
    smtp.logins.session("203.0.113.5").attempt(lambda: True).addCallback(verdicts.append)
    factory.reactor.advance(logins.FAILURE_DELAY)
    assert [v.outcome for v in verdicts] == [logins.Outcome.THROTTLED]


def test_unknown_user_costs_a_pbkdf2_of_the_configured_rounds(factory, site, monkeypatch):
    rounds = site.printers["pull"].pop3_password.iterations
    calls = count_pbkdf2_rounds(monkeypatch)
    for user in (b"nobody", b"local", b"pull"):  # unknown, may not log in, known
        s = wrong_login(factory, "192.0.2.1", user)
        factory.reactor.advance(logins.FAILURE_DELAY)
        assert s.take() == b"-ERR [AUTH] invalid user name or password\r\n"
    assert calls == [rounds, rounds, rounds]


def test_too_many_checks_waiting_is_a_temporary_failure(factory):
    guard = factory.logins
    guard.waiting = 0
    guard.checks.acquire()  # a check is running: no room for another
    s = Session(factory, peer="192.0.2.1")
    assert s.login() == b""
    factory.reactor.advance(logins.FAILURE_DELAY)
    assert s.take() == b"-ERR [SYS/TEMP] too many logins being checked, try again later\r\n"
    assert not s.transport.disconnecting
    guard.checks.release()
    assert s.login().startswith(b"+OK mailbox pull")

"""The login rules themselves (phaserlink.trust.logins) on a fake clock."""

from __future__ import annotations

import time

from twisted.cred import error as cred_error
from twisted.internet import defer, task

from phaserlink.passwords import PasswordHash, hash_password
from phaserlink.trust import logins
from phaserlink.trust.logins import FailureBuckets, LoginGuard, Outcome, PasswordBook, client_key


def test_client_key_counts_ipv4_alone_ipv6_per_64_and_mapped_as_ipv4():
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("") == "local"


def test_bucket_empties_after_the_burst_and_refills_with_time():
    clock = task.Clock()
    buckets = FailureBuckets(clock, burst=3, per_hour=60)
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b")  # another address is not affected
    clock.advance(59)
    assert not buckets.take("a")
    clock.advance(1)  # one failure earned back per minute
    assert buckets.take("a")
    assert not buckets.take("a")


def test_bucket_table_is_bounded_and_forgets_full_buckets():
    clock = task.Clock()
    buckets = FailureBuckets(clock, burst=2, per_hour=60, max_tracked=100)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100
    buckets.take("x")
    buckets.give_back("x")  # back to full: nothing worth remembering
    assert len(buckets) <= 100 and "x" not in buckets._entries and buckets.tokens("x") == 2


def wrong():
    return defer.succeed(False)


def test_failure_is_answered_after_the_delay_success_at_once():
    clock = task.Clock()
    guard = LoginGuard(clock)
    session = guard.session("192.0.2.1")
    answers = []
    session.attempt(wrong).addCallback(answers.append)
    clock.advance(logins.FAILURE_DELAY - 0.01)
    assert answers == []
    clock.advance(0.01)
    assert [a.outcome for a in answers] == [Outcome.REJECTED]
    session.attempt(lambda: defer.succeed("avatar")).addCallback(answers.append)
    assert answers[-1].accepted and answers[-1].value == "avatar"


def test_unauthorized_login_failure_counts_as_wrong_other_failures_pass():
    clock = task.Clock()
    guard = LoginGuard(clock, burst=5)
    session = guard.session("192.0.2.1")
    answers, errors = [], []
    session.attempt(lambda: defer.fail(cred_error.UnauthorizedLogin())).addCallback(answers.append)
    session.attempt(lambda: defer.fail(RuntimeError("in use"))).addErrback(errors.append)
    clock.advance(logins.FAILURE_DELAY)
    assert [a.outcome for a in answers] == [Outcome.REJECTED]
    assert errors[0].check(RuntimeError)
    assert int(guard.buckets.tokens(session.key)) == 4  # only the wrong password cost a token


def test_throttled_address_is_refused_without_a_check_and_hung_up():
    clock = task.Clock()
    guard = LoginGuard(clock, burst=4, per_session=100)
    checks = []

    def check():
        checks.append(1)
        return defer.succeed(False)

    answers = []
    for n in range(5):  # four sessions' worth of failures, then one more
        guard.session("198.51.100.9").attempt(check).addCallback(answers.append)
    clock.advance(logins.FAILURE_DELAY)
    assert [a.outcome for a in answers] == [Outcome.REJECTED] * 4 + [Outcome.THROTTLED]
    assert answers[-1].hangup and len(checks) == 4
    # even the right password is refused now, from that address only
    right = []
    guard.session("198.51.100.9").attempt(lambda: defer.succeed("me")).addCallback(right.append)
    guard.session("198.51.100.10").attempt(lambda: defer.succeed("you")).addCallback(right.append)
    assert [a.outcome for a in right] == [Outcome.ACCEPTED]
    clock.advance(logins.FAILURE_DELAY)
    assert [a.outcome for a in right] == [Outcome.ACCEPTED, Outcome.THROTTLED]


def test_session_is_hung_up_after_its_failures():
    clock = task.Clock()
    guard = LoginGuard(clock, per_session=3)
    session = guard.session("192.0.2.1")
    answers = []
    for _ in range(3):
        session.attempt(wrong).addCallback(answers.append)
        clock.advance(logins.FAILURE_DELAY)
    assert [a.hangup for a in answers] == [False, False, True]


def test_checks_run_one_at_a_time_and_a_full_queue_answers_busy():
    clock = task.Clock()
    guard = LoginGuard(clock, concurrent=1, waiting=2)
    running: list[defer.Deferred] = []

    def slow():
        d = defer.Deferred()
        running.append(d)
        return d

    answers = []
    for n in range(4):  # one runs, two wait, the fourth is busy
        guard.session(f"192.0.2.{n}").attempt(slow).addCallback(answers.append)
    assert len(running) == 1
    clock.advance(logins.FAILURE_DELAY)
    assert [a.outcome for a in answers] == [Outcome.BUSY]
    running[0].callback(True)
    assert len(running) == 2  # the next waiting check starts when one ends
    assert guard.buckets.tokens(client_key("192.0.2.3")) == guard.buckets.burst  # busy cost nothing


def count_pbkdf2_rounds(monkeypatch) -> list[int]:
    """From now on, the iterations of every hashlib.pbkdf2_hmac call, in
    order (each call still hashes): what a password check cost."""
    import hashlib

    calls: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name, password, salt, iterations, *rest):
        calls.append(iterations)
        return real(name, password, salt, iterations, *rest)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    return calls


def test_unknown_name_costs_a_pbkdf2_of_the_same_rounds(monkeypatch):
    book = PasswordBook({"alice": PasswordHash.parse(hash_password("right", iterations=4321))})
    assert book.dummy.iterations == 4321
    calls = count_pbkdf2_rounds(monkeypatch)
    assert book.verify("alice", b"right")
    assert not book.verify("alice", b"wrong")
    assert not book.verify("mallory", b"right")
    assert calls == [4321, 4321, 4321]


def test_unknown_and_known_user_take_the_same_time():
    book = PasswordBook({"alice": PasswordHash.parse(hash_password("right", iterations=30_000))})

    def median(name):
        times = []
        for _ in range(7):
            start = time.perf_counter()
            book.verify(name, b"wrong")
            times.append(time.perf_counter() - start)
        return sorted(times)[3]

    known, unknown = median("alice"), median("mallory")
    assert 1 / 3 < unknown / known < 3, (known, unknown)

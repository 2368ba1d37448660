"""Logins: how a password is checked, and what a wrong one costs (docs/logins.md).

One attacker with twenty sessions guessing SMTP AUTH passwords once made
every other sender's 250 wait half a second: PBKDF2 ran in the thread pool
the fsyncs also needed, a wrong password was answered at once, and
reconnecting was free.  The rules here make a flood cost the attacker, not
the other clients:

- **A failure is answered late.**  Every failed attempt (wrong password,
  unknown user, throttled, too busy) is answered :data:`FAILURE_DELAY`
  seconds after it began, on a reactor timer (no thread sleeps).  A success
  is answered at once.  Counting from the start of the attempt also hides how
  long the check took.
- **An address that fails too often is refused.**  Each client address
  (IPv4, or the IPv6 /:data:`IPV6_PREFIX` a subscriber gets) has a token
  bucket of :data:`FAILURE_BURST` failures that refills at
  :data:`FAILURES_PER_HOUR`.  An attempt takes a token before the check and
  gets it back unless the password was wrong; with the bucket empty the
  attempt is refused without a check, and the session is closed.  The table
  holds at most :data:`MAX_TRACKED_ADDRESSES` addresses (least recently seen
  forgotten first), so memory is bounded whatever the attacker's addresses.
- **Checks are few at a time.**  At most :data:`CONCURRENT_CHECKS` PBKDF2
  run at once, in the ``cpu`` pool of :mod:`phaserlink.threads` (never the
  ``durable`` pool the fsyncs use), and at most :data:`WAITING_CHECKS` wait;
  beyond that an attempt is answered "busy" (temporary) without a check.
  So addresses without number (a botnet) cost at most one core, and the
  print work that shares the cpu pool keeps a thread.
- **A session that fails** :data:`FAILURES_PER_SESSION` **times is closed.**
- **Unknown users cost as much as known ones:** :class:`PasswordBook` checks
  an unknown name against a dummy hash with the same PBKDF2 parameters, so
  the time to an answer does not tell which users exist.

The SMTP and POP3 servers ask a :class:`LoginSession` for each attempt and
turn the :class:`LoginVerdict` into their protocol's reply; one
:class:`LoginGuard` per reactor (:func:`guard_for`) counts for both, so an
address that guessed over POP3 is refused over SMTP too.
"""

from __future__ import annotations

import ipaddress
import os
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping

from twisted.cred import error as cred_error
from twisted.internet import defer, task
from twisted.logger import Logger

from phaserlink.passwords import DEFAULT_ITERATIONS, SALT_BYTES, PasswordHash
from phaserlink.threads import PerReactor

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    FAILURE_DELAY,
    FAILURE_BURST,
    FAILURES_PER_HOUR,
    FAILURES_PER_SESSION,
    MAX_TRACKED_ADDRESSES,
    IPV6_PREFIX,
    CONCURRENT_CHECKS,
    WAITING_CHECKS,
)

class Outcome(Enum):
    ACCEPTED = "accepted"  # the check succeeded: answer now
    REJECTED = "rejected"  # wrong user name or password
    THROTTLED = "throttled"  # this address failed too often: refuse, close
    BUSY = "busy"  # too many checks queued: temporary failure


@dataclass(frozen=True)
class LoginVerdict:
    """What a server answers to one login attempt."""

    outcome: Outcome
    value: Any = None  # what the check gave on success (an avatar, ...)
    hangup: bool = False  # close the session after the answer

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


def client_key(host: str) -> str:
    """The bucket a client address counts in: an IPv4 address (also when
    mapped into IPv6), an IPv6 /64, or the text itself (UNIX sockets)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host or "local"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


class FailureBuckets:
    """A token bucket of failed logins per client key, in bounded memory.

    An entry whose bucket is full says nothing and is dropped; when the
    table is full the least recently touched entry goes.  (An attacker with
    more addresses than the table holds can push its own drained entries
    out; :data:`CONCURRENT_CHECKS` still bounds what that costs.)
    """

    def __init__(self, clock, burst: int = FAILURE_BURST, per_hour: float = FAILURES_PER_HOUR,
                 max_tracked: int = MAX_TRACKED_ADDRESSES):
        self.clock = clock
        self.burst = float(burst)
        self.rate = per_hour / 3600.0
        self.max_tracked = max_tracked
        self._entries: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, when]

    def __len__(self) -> int:
        return len(self._entries)

    def tokens(self, key: str) -> float:
        entry = self._entries.get(key)
        if entry is None:
            return self.burst
        return min(self.burst, entry[0] + (self.clock.seconds() - entry[1]) * self.rate)

    def take(self, key: str) -> bool:
        """Take one token for an attempt; False if the bucket is empty."""
        tokens = self.tokens(key)
        if tokens < 1.0:
            self._store(key, tokens)
            return False
        self._store(key, tokens - 1.0)
        return True

    def give_back(self, key: str) -> None:
        """The attempt did not fail (success, or not the client's fault)."""
        tokens = self.tokens(key) + 1.0
        if tokens >= self.burst:
            self._entries.pop(key, None)
        else:
            self._store(key, tokens)

    def _store(self, key: str, tokens: float) -> None:
        self._entries[key] = [tokens, self.clock.seconds()]
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_tracked:
            self._entries.popitem(last=False)


class LoginGuard:
    """The login rules of the module docstring for one reactor."""

    def __init__(self, clock, delay: float = FAILURE_DELAY, burst: int = FAILURE_BURST,
                 per_hour: float = FAILURES_PER_HOUR, per_session: int = FAILURES_PER_SESSION,
                 concurrent: int = CONCURRENT_CHECKS, waiting: int = WAITING_CHECKS,
                 max_tracked: int = MAX_TRACKED_ADDRESSES):
        self.clock = clock
        self.delay = delay
        self.per_session = per_session
        self.waiting = waiting
        self.buckets = FailureBuckets(clock, burst, per_hour, max_tracked)
        self.checks = defer.DeferredSemaphore(concurrent)
        #: Attempts by outcome since start (for logs and the benchmark).
        self.counts = {outcome: 0 for outcome in Outcome}

    def session(self, host: str) -> "LoginSession":
        """The login attempts of one connection from *host*."""
        return LoginSession(self, client_key(host))

    def _busy(self) -> bool:
        return self.checks.tokens == 0 and len(self.checks.waiting) >= self.waiting

    def _later(self, started: float, verdict: LoginVerdict) -> "defer.Deferred[LoginVerdict]":
        """*verdict*, FAILURE_DELAY after the attempt *started*."""
        self.counts[verdict.outcome] += 1
        wait = max(0.0, started + self.delay - self.clock.seconds())
        return task.deferLater(self.clock, wait, lambda: verdict)


class LoginSession:
    """One connection's login attempts (its failure count and address)."""

    def __init__(self, guard: LoginGuard, key: str):
        self.guard = guard
        self.key = key
        self.failures = 0

    def attempt(self, check: Callable[[], "defer.Deferred[Any]"]) -> "defer.Deferred[LoginVerdict]":
        """Run *check* under the rules; fire with the verdict when it is
        time to answer.

        *check* returns a Deferred that fires with a true value (success:
        it becomes ``verdict.value``), or with a false value or an
        ``UnauthorizedLogin`` failure (wrong credentials).  Any other failure
        (the mailbox is in use, an internal error) is passed on at once and
        costs the address nothing.
        """
        guard = self.guard
        started = guard.clock.seconds()
        if not guard.buckets.take(self.key):
            log.info("login: {key} has failed too often; refused without a check", key=self.key)
            return guard._later(started, LoginVerdict(Outcome.THROTTLED, hangup=True))
        if guard._busy():
            guard.buckets.give_back(self.key)
            log.warn("login: {n} password checks waiting; {key} answered busy", n=guard.waiting, key=self.key)
            return guard._later(started, LoginVerdict(Outcome.BUSY))

        def checked(value: Any):
            if not value:
                return wrong()
            guard.buckets.give_back(self.key)
            guard.counts[Outcome.ACCEPTED] += 1
            return LoginVerdict(Outcome.ACCEPTED, value)

        def failed(failure):
            if failure.check(cred_error.UnauthorizedLogin, cred_error.UnhandledCredentials):
                return wrong()
            guard.buckets.give_back(self.key)
            return failure

        def wrong() -> "defer.Deferred[LoginVerdict]":
            self.failures += 1
            hangup = self.failures >= guard.per_session
            return guard._later(started, LoginVerdict(Outcome.REJECTED, hangup=hangup))

        # A fresh Deferred, so that ``called`` means "the answer is ready"
        # (the chain itself has fired already while it waits for the delay).
        verdict: defer.Deferred[LoginVerdict] = defer.Deferred()
        guard.checks.run(check).addCallbacks(checked, failed).chainDeferred(verdict)
        return verdict


#: The :class:`LoginGuard` of a reactor: the SMTP and POP3 servers (and the
#: console) of one appliance count failures in one table.
guard_for: PerReactor[LoginGuard] = PerReactor(LoginGuard)


class PasswordBook:
    """User names and their password hashes, checked at equal cost.

    An unknown name is checked against a dummy hash with the PBKDF2
    parameters of the configured ones (the largest iteration count), so it
    takes as long as a known name with a wrong password: timing does not
    tell which users exist.  Sites should make all hashes with the same
    ``phaserlink-passwd`` rounds.
    """

    def __init__(self, hashes: Mapping[str, PasswordHash]):
        self.hashes = dict(hashes)
        self.dummy = dummy_hash(self.hashes.values())

    def verify(self, name: str, password: bytes | str) -> bool:
        return self.check(self.hashes.get(name), password)

    def check(self, stored: PasswordHash | None, password: bytes | str) -> bool:
        """PBKDF2 against *stored*, or against the dummy when there is none."""
        ok = (stored or self.dummy).check(password)
        return ok and stored is not None


def dummy_hash(hashes) -> PasswordHash:
    """A hash nobody's password matches, as costly as the costliest of *hashes*."""
    iterations = max((h.iterations for h in hashes if h is not None), default=DEFAULT_ITERATIONS)
    return PasswordHash(iterations, os.urandom(SALT_BYTES), os.urandom(32))


__all__ = [
    "CONCURRENT_CHECKS", "FAILURES_PER_HOUR", "FAILURES_PER_SESSION", "FAILURE_BURST", "FAILURE_DELAY",
    "IPV6_PREFIX", "MAX_TRACKED_ADDRESSES", "WAITING_CHECKS",
    "FailureBuckets", "LoginGuard", "LoginSession", "LoginVerdict", "Outcome", "PasswordBook",
    "client_key", "dummy_hash", "guard_for",
]

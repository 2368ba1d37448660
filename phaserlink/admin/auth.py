"""Who may use the console, and how they prove it (docs/console.md).

``[admin:NAME]`` users have a password hash and a role: a ``viewer`` sees
everything, an ``operator`` may also change things.  Passwords are checked
under the appliance's login rules (:mod:`phaserlink.trust.logins`): PBKDF2
in the cpu pool, a failure answered late, an address that fails too often
refused.  A success is remembered for :data:`CREDENTIAL_CACHE_SECONDS`
(keyed by an HMAC under a per-process key, never the password itself) so
that a script polling the API with HTTP Basic does not pay PBKDF2 per call.

The web page logs in once and then carries a session cookie; each session
has its own CSRF token that every form POST must repeat.  Without TLS a
login is only taken from loopback: a password must not cross a network in
clear.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import AdminConfig

log = Logger()

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    CREDENTIAL_CACHE_SECONDS,
    CREDENTIAL_CACHE_SIZE,
    SESSION_IDLE_SECONDS,
    AUTH_MAX_SESSIONS as MAX_SESSIONS,
)

SESSION_COOKIE = b"phaserlink_console"


@dataclass(frozen=True)
class Admin:
    """A logged-in console user."""

    name: str
    role: str

    @property
    def may_operate(self) -> bool:
        return self.role == OPERATOR


AdminAccount = AdminConfig  # one [admin:NAME] section


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in ("localhost", "")  # UNIX sockets have no address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class Authenticator:
    """Checks console passwords under the appliance's login rules."""

    def __init__(self, accounts: Mapping[str, AdminAccount], reactor, *,
                 on_failure: Callable[[], None] = lambda: None):
        from phaserlink.threads import pools_for
        from phaserlink.trust.logins import PasswordBook, guard_for

        self.accounts = dict(accounts)
        self.book = PasswordBook({n: a.password for n, a in self.accounts.items()})
        self.guard = guard_for(reactor)
        self.pools = pools_for(reactor)
        self.clock = reactor
        self.on_failure = on_failure
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[float, str]] = OrderedDict()

    def _cache_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, name.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    def check(self, name: str, password: str, host: str) -> "defer.Deferred[Admin | None]":
        """Fire with the Admin, or None for a wrong name or password (late)."""
        key = self._cache_key(name, password)
        now = self.clock.seconds()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now and hit[1] in self.accounts:
            self._cache.move_to_end(key)
            return defer.succeed(self._admin(name))

        def verify():
            return self.pools.cpu(self.book.verify, name, password)

        d = self.guard.session(host).attempt(verify)

        def decided(verdict):
            if not verdict.accepted:
                self.on_failure()
                log.info("console: failed login as {name!r} from {host} ({why})", name=name, host=host,
                         why=verdict.outcome.value)
                return None
            self._cache[key] = (self.clock.seconds() + CREDENTIAL_CACHE_SECONDS, name)
            while len(self._cache) > CREDENTIAL_CACHE_SIZE:
                self._cache.popitem(last=False)
            return self._admin(name)

        return d.addCallback(decided)

    def _admin(self, name: str) -> Admin:
        return Admin(name, self.accounts[name].role)


@dataclass
class Session:
    token: str
    admin: Admin
    csrf: str
    expires: float


class Sessions:
    """Web sessions in memory (a restart logs everyone out, by design)."""

    def __init__(self, clock, idle: float = SESSION_IDLE_SECONDS, limit: int = MAX_SESSIONS):
        self.clock = clock
        self.idle = idle
        self.limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self, admin: Admin) -> Session:
        session = Session(secrets.token_urlsafe(32), admin, secrets.token_urlsafe(32),
                          self.clock.seconds() + self.idle)
        self._sessions[session.token] = session
        while len(self._sessions) > self.limit:
            self._sessions.popitem(last=False)
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock.seconds()
        if session.expires < now:
            del self._sessions[token]
            return None
        session.expires = now + self.idle
        self._sessions.move_to_end(token)
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)


def csrf_ok(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())

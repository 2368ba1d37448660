"""The appliance's POP3 server (RFC 1939, CAPA RFC 2449, STLS RFC 2595).

Printers that pull for themselves (``output = pull``) log in here and fetch
their mail from the printer's durable Maildir.  The protocol is our own state
machine, not ``twisted.mail.pop3.POP3`` (see docs/README.md: it stuffs RETR
per chunk, its APOP fails on Python 3, it has no STLS, and its QUIT says +OK
even when the deletion failed).

Behaviour chosen, and why:

* **Plaintext login policy.**  When a certificate is configured, USER/PASS
  over an unencrypted connection is refused (``-ERR [AUTH]``, and ``USER``
  is not in CAPA) unless the client is on a loopback address: a password
  must not cross a network in the clear once TLS is possible (RFC 2595
  section 2.1 allows this).  Without a certificate there is no other way, so
  plaintext login is allowed everywhere.  Loopback is always allowed so the
  demo ``pull`` login works over plain TCP on 127.0.0.1.
* **APOP** is offered (a ``<...>`` banner in every greeting) and works only
  for printers with ``pop3_apop_secret_file``: APOP needs the clear shared
  secret and a password hash cannot provide it.  APOP is allowed without TLS
  (the secret itself never crosses the wire); use a long random secret, as an
  eavesdropper can still guess it offline from banner and digest.
* **DELE** marks only.  Messages are removed at QUIT, durably (unlink and
  directory fsync) before the ``+OK``; if that fails QUIT says ``-ERR``.
  A connection that drops, times out or is killed deletes nothing.
* **One session per mailbox**: a second login gets ``-ERR [IN-USE]``.
* **Only pull printers log in**: the mailbox of a printer the appliance
  prints for itself is read by its retriever; POP3 access would print twice.
* **Logins** follow :mod:`phaserlink.trust.logins` (docs/logins.md): the
  PBKDF2 check runs in the ``cpu`` pool; a failure is answered ``-ERR
  [AUTH]`` only after :data:`FAILED_LOGIN_DELAY` seconds (on the reactor
  clock, other sessions go on); the connection is closed after
  :data:`MAX_LOGIN_FAILURES`; an address that failed too often (over SMTP
  or POP3) is answered ``-ERR [SYS/TEMP]`` and closed, without a check.
  QUIT's deletions (unlink, fsync) run in the ``durable`` pool.
* **Pipelining**: commands are handled strictly in order; while one is busy
  (a login check, a RETR being streamed, the QUIT deletion) later lines wait
  in a bounded buffer.
* **STLS** throws away anything the client sent after the STLS line in
  plaintext, and forgets a USER given before it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import os
import secrets
from enum import Enum
from typing import Callable

from twisted.cred import credentials as _credentials
from twisted.cred.portal import Portal
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from phaserlink.config import SiteConfig
from phaserlink.pop3_store.auth import (
    APOPCredentials,
    IMailbox,
    MailboxInUse,
    Runner,
    build_portal,
    pop3_login_possible,
    run_inline,
)
from phaserlink.pop3_store.maildir import MaildirStore, StoredMessage
from phaserlink.pop3_store.streaming import MessageProducer, TopFilter
from phaserlink.threads import pools_for
from phaserlink.trust import logins as login_rules
from phaserlink.trust.logins import LoginGuard, LoginSession, LoginVerdict, Outcome, guard_for

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_COMMAND_LINE,
    MAX_PENDING_INPUT,
    MAX_BAD_COMMANDS,
    RFC_MIN_TIMEOUT,
    MAX_UIDL,
)

#: Seconds before a failed login is answered (anti-guessing; the login
#: rules own it).
FAILED_LOGIN_DELAY = login_rules.FAILURE_DELAY
#: Failed logins per connection before we hang up (the login rules own it).
MAX_LOGIN_FAILURES = login_rules.FAILURES_PER_SESSION

IMPLEMENTATION = "PhaserLink"


class State(Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


AUTH_STATE = (State.AUTHORIZATION,)
TRANS_STATE = (State.TRANSACTION,)
BOTH_STATES = (State.AUTHORIZATION, State.TRANSACTION)

#: command -> (states it is valid in, fewest arguments, most arguments).
#: PASS takes the rest of the line as one argument (passwords may hold spaces).
COMMANDS: dict[bytes, tuple[tuple[State, ...], int, int]] = {
    b"CAPA": (BOTH_STATES, 0, 0),
    b"QUIT": (BOTH_STATES, 0, 0),
    b"USER": (AUTH_STATE, 1, 1),
    b"PASS": (AUTH_STATE, 1, 1),
    b"APOP": (AUTH_STATE, 2, 2),
    b"STLS": (AUTH_STATE, 0, 0),
    b"STAT": (TRANS_STATE, 0, 0),
    b"LIST": (TRANS_STATE, 0, 1),
    b"UIDL": (TRANS_STATE, 0, 1),
    b"RETR": (TRANS_STATE, 1, 1),
    b"TOP": (TRANS_STATE, 2, 2),
    b"DELE": (TRANS_STATE, 1, 1),
    b"RSET": (TRANS_STATE, 0, 0),
    b"NOOP": (TRANS_STATE, 0, 0),
}


def uidl_for(message: StoredMessage) -> str:
    """The message's Maildir key, which never changes; a hash of it if the
    key is not a valid RFC 2449 unique-id (a file dropped in by hand)."""
    key = message.key
    if 0 < len(key) <= MAX_UIDL and all(0x21 <= ord(c) <= 0x7E for c in key):
        return key
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()


class BadArguments(Exception):
    """A command's arguments are malformed; the text is the -ERR reply."""


class POP3Server(Protocol, TimeoutMixin):
    """One POP3 session: bytes in, calls on a three-state machine."""

    def __init__(self, factory: "POP3Factory"):
        self.factory = factory
        self.clock = factory.reactor
        self.callLater = factory.reactor.callLater  # TimeoutMixin uses it
        self.state = State.AUTHORIZATION
        self.banner = b""
        self.secure = False
        self.buffer = b""
        self.discarding = False  # inside an over-long line
        self.busy = False
        self.processing = False
        self.reading_paused = False
        self.closing = False
        self.counted = False
        self.user: bytes | None = None
        self.logins: LoginSession | None = None  # this connection's login attempts
        self.bad_commands = 0
        self.producer: MessageProducer | None = None
        self.mailbox = None
        self.logout: Callable[[], None] | None = None
        self.messages: list[StoredMessage] = []
        self.deleted: set[int] = set()
        self.deleting = False

    # -- connection -------------------------------------------------------------

    def connectionMade(self) -> None:
        if self.factory.sessions >= self.factory.max_sessions:
            self.send(b"-ERR [SYS/TEMP] too many sessions, try again later")
            self.closing = True
            self.transport.loseConnection()
            return
        self.factory.sessions += 1
        self.counted = True
        self.secure = interfaces.ISSLTransport.providedBy(self.transport)
        self.banner = self.factory.new_banner()
        self.setTimeout(self.factory.timeout)
        self.send(b"+OK PhaserLink POP3 server ready " + self.banner)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closing = True
        self.setTimeout(None)
        if self.producer is not None:
            self.producer.stopProducing()
        if not self.deleting:
            if self.logout is not None:
                log.info("pop3: {peer} left mailbox {name} without QUIT: nothing deleted",
                         peer=self._peer(), name=self.mailbox.name)
            self._release()
        if self.counted:
            self.counted = False
            self.factory.sessions -= 1

    def timeoutConnection(self) -> None:
        # RFC 1939 section 3: the autologout timer ends the session without
        # entering UPDATE, so nothing marked with DELE is removed.
        log.info("pop3: autologout of {peer} after {t}s idle", peer=self._peer(), t=self.factory.timeout)
        self.send(b"-ERR autologout timer expired, closing")
        self._close()

    def _release(self) -> None:
        if self.logout is not None:
            logout, self.logout = self.logout, None
            logout()

    def _close(self) -> None:
        self.closing = True
        self.transport.loseConnection()

    def _peer(self) -> str:
        peer = self.transport.getPeer()
        return getattr(peer, "host", None) or str(peer)

    def _peer_is_loopback(self) -> bool:
        host = getattr(self.transport.getPeer(), "host", None)
        if host is None:  # a UNIX socket: local by definition
            return True
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)  # 127.0.0.1 on a tcp6 port
        return (mapped or address).is_loopback

    def plaintext_login_allowed(self) -> bool:
        """USER/PASS: over TLS, from loopback, or when TLS is impossible."""
        return self.secure or self.factory.tls_options is None or self._peer_is_loopback()

    # -- input ---------------------------------------------------------------------

    def send(self, line: bytes) -> None:
        self.transport.write(line + b"\r\n")

    def ok(self, text: str = "") -> None:
        self.send(b"+OK" + (b" " + text.encode("utf-8") if text else b""))

    def err(self, text: str, code: str | None = None) -> None:
        prefix = f"[{code}] " if code else ""
        self.send(b"-ERR " + (prefix + text).encode("utf-8"))

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.resetTimeout()
        self.buffer += data
        self._process()
        if self.busy and len(self.buffer) > MAX_PENDING_INPUT and not self.reading_paused:
            self.reading_paused = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        if self.processing:
            return
        self.processing = True
        try:
            while not self.busy and not self.closing:
                nl = self.buffer.find(b"\n")
                if nl < 0:
                    if len(self.buffer) > MAX_COMMAND_LINE:
                        self.buffer = b""
                        if not self.discarding:
                            self.discarding = True
                            self._bad(f"line too long (at most {MAX_COMMAND_LINE} octets)")
                    return
                line, self.buffer = self.buffer[:nl], self.buffer[nl + 1 :]
                if self.discarding:
                    self.discarding = False
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) + 2 > MAX_COMMAND_LINE:
                    self._bad(f"line too long (at most {MAX_COMMAND_LINE} octets)")
                    continue
                self._dispatch(line)
        finally:
            self.processing = False

    def _busy(self) -> None:
        self.busy = True

    def _done(self) -> None:
        """The busy command finished: go on with pipelined input."""
        self.busy = False
        if self.closing:
            return
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resumeProducing()
        self._process()

    def _bad(self, text: str) -> None:
        self.bad_commands += 1
        if self.bad_commands >= MAX_BAD_COMMANDS:
            self.err(f"{text}; too many bad commands, closing")
            self._close()
        else:
            self.err(text)

    def _dispatch(self, line: bytes) -> None:
        keyword, _, rest = line.partition(b" ")
        command = keyword.upper()
        spec = COMMANDS.get(command)
        if spec is None:
            self._bad("unknown command")
            return
        states, fewest, most = spec
        name = command.decode()
        if self.state not in states:
            self._bad(f"{name} is not valid in the {self.state.value} state")
            return
        if command == b"PASS":
            args = [rest] if rest else []
        else:
            args = rest.split()
        if not fewest <= len(args) <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
            self._bad(f"{name} takes {wanted} argument{'' if fewest == most == 1 else 's'}")
            return
        try:
            getattr(self, "do_" + name)(*args)
        except BadArguments as e:
            self._bad(str(e))

    # -- AUTHORIZATION ----------------------------------------------------------------

    def capabilities(self) -> list[bytes]:
        caps = [b"TOP", b"UIDL"]
        if self.state == State.AUTHORIZATION and self.plaintext_login_allowed():
            caps.append(b"USER")
        caps += [b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE", b"EXPIRE NEVER"]
        if self.state == State.AUTHORIZATION and self.factory.tls_options is not None and not self.secure:
            caps.append(b"STLS")
        caps.append(b"IMPLEMENTATION " + IMPLEMENTATION.encode())
        return caps

    def do_CAPA(self) -> None:
        self.ok("capability list follows")
        for cap in self.capabilities():
            self.send(cap)
        self.send(b".")

    def do_STLS(self) -> None:
        if self.factory.tls_options is None:
            self.err("STLS is not available: no certificate configured")
            return
        if self.secure:
            self.err("TLS is already active")
            return
        self.ok("begin TLS negotiation")
        # RFC 2595 / CVE-2011-0411: nothing sent in plaintext after STLS may
        # be acted on inside TLS, and a USER given before it is forgotten.
        self.buffer = b""
        self.discarding = False
        self.user = None
        self.secure = True
        self.transport.startTLS(self.factory.tls_options)

    def do_USER(self, name: bytes) -> None:
        if not self.plaintext_login_allowed():
            self.err("USER/PASS needs TLS here: send STLS first", "AUTH")
            return
        self.user = name
        self.ok("send PASS")

    def do_PASS(self, password: bytes) -> None:
        if self.user is None:
            self._bad("send USER first")
            return
        user, self.user = self.user, None
        self._login(_credentials.UsernamePassword(user, password), user)

    def do_APOP(self, name: bytes, digest: bytes) -> None:
        if len(digest) != 32 or any(c not in b"0123456789abcdefABCDEF" for c in digest):
            raise BadArguments("APOP digest must be 32 hex digits")
        self.user = None
        self._login(APOPCredentials(name, self.banner, digest), name)

    def _login(self, creds, user: bytes) -> None:
        self._busy()
        if self.logins is None:
            self.logins = self.factory.logins.session(self._peer())
        d = self.logins.attempt(lambda: defer.maybeDeferred(self.factory.portal.login, creds, None, IMailbox))
        d.addCallbacks(self._login_answer, self._login_refused, callbackArgs=(user,), errbackArgs=(user,))
        d.addErrback(self._internal_error, "login")

    def _login_answer(self, verdict: LoginVerdict, user: bytes) -> None:
        """Say what the login rules decided (docs/logins.md)."""
        if verdict.accepted:
            self._logged_in(verdict.value)
            return
        if verdict.outcome is Outcome.REJECTED:
            log.info("pop3: failed login for {user!r} from {peer}", user=user, peer=self._peer())
        if self.closing:
            return
        if verdict.outcome is Outcome.THROTTLED:
            self.err("too many failed logins from your address, try again later", "SYS/TEMP")
            self._close()
        elif verdict.outcome is Outcome.BUSY:
            self.err("too many logins being checked, try again later", "SYS/TEMP")
            self._done()
        elif verdict.hangup:
            self.err("invalid user name or password; too many failures, closing", "AUTH")
            self._close()
        else:
            self.err("invalid user name or password", "AUTH")
            self._done()

    def _logged_in(self, result) -> None:
        _, mailbox, logout = result
        if self.closing:
            logout()
            return
        try:
            messages = mailbox.list()
        except OSError as e:
            logout()
            log.error("pop3: cannot list mailbox {name}: {e}", name=mailbox.name, e=e)
            self.err("cannot read the mailbox, try again later", "SYS/TEMP")
            self._done()
            return
        self.mailbox, self.logout = mailbox, logout
        self.messages, self.deleted = messages, set()
        self.state = State.TRANSACTION
        log.info("pop3: {peer} opened mailbox {name} ({n} messages)", peer=self._peer(), name=mailbox.name,
                 n=len(messages))
        self.ok(f"mailbox {mailbox.name} has {len(messages)} messages ({self._octets()} octets)")
        self._done()

    def _login_refused(self, failure: Failure, user: bytes) -> None:
        """The credentials were right but the mailbox cannot be had now."""
        if failure.check(MailboxInUse):
            log.info("pop3: {peer}: mailbox {name} is in use", peer=self._peer(), name=failure.value.args[0])
            if not self.closing:
                self.err("mailbox is in use by another session, try again later", "IN-USE")
                self._done()
            return
        return failure

    def _internal_error(self, failure: Failure, what: str) -> None:
        log.failure("pop3: {what} failed", failure, what=what)
        if not self.closing:
            self.err(f"internal error during {what}, try again later", "SYS/TEMP")
            self._done()

    # -- TRANSACTION ----------------------------------------------------------------

    def _octets(self) -> int:
        return sum(m.wire_size for i, m in enumerate(self.messages) if i not in self.deleted)

    def _message(self, arg: bytes) -> tuple[int, StoredMessage]:
        """Message number -> (index, message), or BadArguments with the reply."""
        if not arg.isdigit() or len(arg) > 9:
            raise BadArguments(f"invalid message number {arg.decode('ascii', 'replace')!r}")
        number = int(arg)
        if not 1 <= number <= len(self.messages):
            raise BadArguments(f"no such message {number}")
        if number - 1 in self.deleted:
            raise BadArguments(f"message {number} is deleted")
        return number - 1, self.messages[number - 1]

    def _live(self):
        return ((i + 1, m) for i, m in enumerate(self.messages) if i not in self.deleted)

    def do_STAT(self) -> None:
        count = len(self.messages) - len(self.deleted)
        self.ok(f"{count} {self._octets()}")

    def do_LIST(self, arg: bytes | None = None) -> None:
        if arg is not None:
            index, message = self._message(arg)
            self.ok(f"{index + 1} {message.wire_size}")
            return
        count = len(self.messages) - len(self.deleted)
        self.ok(f"{count} messages ({self._octets()} octets)")
        for number, message in self._live():
            self.send(f"{number} {message.wire_size}".encode())
        self.send(b".")

    def do_UIDL(self, arg: bytes | None = None) -> None:
        if arg is not None:
            index, message = self._message(arg)
            self.ok(f"{index + 1} {uidl_for(message)}")
            return
        self.ok("unique-id listing follows")
        for number, message in self._live():
            self.send(f"{number} {uidl_for(message)}".encode())
        self.send(b".")

    def do_RETR(self, arg: bytes) -> None:
        index, message = self._message(arg)
        self._stream(index, message, f"{message.wire_size} octets", None)

    def do_TOP(self, arg: bytes, lines: bytes) -> None:
        index, message = self._message(arg)
        if not lines.isdigit() or len(lines) > 9:
            raise BadArguments(f"invalid number of lines {lines.decode('ascii', 'replace')!r}")
        self._stream(index, message, "top of message follows", TopFilter(int(lines)))

    def _stream(self, index: int, message: StoredMessage, text: str, top: TopFilter | None) -> None:
        try:
            source = self.mailbox.open(message)
        except OSError as e:
            log.error("pop3: cannot open {path}: {e}", path=message.path, e=e)
            self.err(f"message {index + 1} cannot be read", "SYS/TEMP")
            return
        self.ok(text)
        self._busy()
        self.producer = MessageProducer(
            source, self.transport, self.clock, self._streamed, on_chunk=self.resetTimeout, top=top
        )
        self.producer.start()

    def _streamed(self, complete: bool) -> None:
        self.producer = None
        if complete:
            self._done()

    def do_DELE(self, arg: bytes) -> None:
        index, _ = self._message(arg)
        self.deleted.add(index)
        self.ok(f"message {index + 1} deleted")

    def do_RSET(self) -> None:
        self.deleted.clear()
        self.ok(f"maildrop has {len(self.messages)} messages ({self._octets()} octets)")

    def do_NOOP(self) -> None:
        self.ok()

    def do_QUIT(self) -> None:
        if self.state == State.AUTHORIZATION:
            self.ok("PhaserLink POP3 server signing off")
            self._close()
            return
        # UPDATE: remove what DELE marked, durably, then answer.
        self.state = State.UPDATE
        self.setTimeout(None)
        doomed = [self.messages[i] for i in sorted(self.deleted)]
        if not doomed:
            self.ok("PhaserLink POP3 server signing off")
            self._release()
            self._close()
            return
        self._busy()
        self.deleting = True
        d = self.factory.runner(self.mailbox.delete, doomed)
        d.addCallbacks(self._deleted, self._delete_failed, callbackArgs=(len(doomed),))

    def _deleted(self, _, count: int) -> None:
        self.deleting = False
        log.info("pop3: {name}: deleted {n} messages", name=self.mailbox.name, n=count)
        if not self.closing:
            self.ok(f"PhaserLink POP3 server signing off ({count} messages deleted)")
        self._release()
        self._close()

    def _delete_failed(self, failure: Failure) -> None:
        self.deleting = False
        log.failure("pop3: {name}: deleting messages failed", failure, name=self.mailbox.name)
        if not self.closing:
            self.err("some deleted messages not removed", "SYS/TEMP")
        self._release()
        self._close()


class POP3Factory(ServerFactory):
    """Shared state of all sessions: portal, TLS, limits, clock."""

    protocol = POP3Server
    noisy = False

    def __init__(
        self,
        site: SiteConfig,
        portal: Portal,
        reactor,
        tls_options=None,
        runner: Runner = run_inline,
    ):
        self.site = site
        self.portal = portal
        self.reactor = reactor
        self.tls_options = tls_options
        self.runner = runner
        self.hostname = site.appliance.hostname
        self.timeout = site.appliance.pop3_timeout
        self.max_sessions = site.appliance.max_sessions
        self.sessions = 0
        self._banners = itertools.count()

    def new_banner(self) -> bytes:
        """RFC 1939 APOP timestamp: unique per greeting, never predictable."""
        stamp = f"<{os.getpid()}.{int(self.reactor.seconds())}.{next(self._banners)}.{secrets.token_hex(4)}@{self.hostname}>"
        return stamp.encode("ascii", "replace")

    def buildProtocol(self, addr) -> POP3Server:
        return self.protocol(self)

    @property
    def logins(self) -> LoginGuard:
        """The login rules' state, one per reactor (shared with SMTP)."""
        return guard_for(self.reactor)


def build_factory(site: SiteConfig, store: MaildirStore, reactor=None) -> POP3Factory:
    """The POP3 server for *site*'s printer mailboxes in *store*."""
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    tls_options = None
    if site.appliance.tls is not None:
        from phaserlink.tls import server_options

        tls_options = server_options(site.appliance.tls)
    for printer in site.printers.values():
        has_login = printer.pop3_password is not None or printer.pop3_apop_secret is not None
        if has_login and not pop3_login_possible(printer):
            log.warn(
                "pop3: printer {name} has a POP3 login but output = {output}: its mailbox is read by the "
                "appliance itself, so POP3 logins to it are refused", name=printer.name, output=printer.output)
    if site.appliance.pop3_timeout < RFC_MIN_TIMEOUT:
        log.warn("pop3: pop3_timeout {t}s is below RFC 1939's 10 minutes; clients may be cut off",
                 t=site.appliance.pop3_timeout)
    # PBKDF2 in the cpu pool, the deletions' unlink and fsync in the durable
    # one: a flood of logins never queues ahead of a commit (docs/threads.md).
    pools = pools_for(reactor)
    return POP3Factory(site, build_portal(site, store, pools.runner("cpu")), reactor, tls_options,
                       pools.runner("durable"))

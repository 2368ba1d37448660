"""A small ESMTP client: one message, one connection, streamed from disk.

Shared by the appliance's outbound queue and the ``phaserlink`` client CLI,
so it imports nothing of either: only Twisted, :mod:`phaserlink.tls` and
:mod:`phaserlink.message.wire`.  Twisted's ``ESMTPSender`` is not used: it
dot-stuffs each chunk on its own (a "." line on a 16 KiB boundary ends the
message early) and, through an endpoint, never reports a failure.

API
===

``send(reactor, host, port, mail_from, recipients, message_source, *, helo,
tls="opportunistic", implicit_tls=False, ca_file=None, tls_hostname=None,
username=None, password=None, size=None, timeout=DEFAULT_TIMEOUT, body=None)
-> Deferred[SendResult]``

    Connects (``HostnameEndpoint``; wrapped in TLS when *implicit_tls*),
    greets with EHLO (HELO if EHLO is refused), does STARTTLS by policy,
    AUTH when *username* is given, ``MAIL FROM:<mail_from>`` (with
    ``SIZE=`` when the server advertises SIZE), one RCPT per recipient, DATA,
    and QUIT.  *mail_from* ``""`` is the null reverse-path ``<>``.

    *message_source* is a path (``str``/``os.PathLike``) or a binary file
    object positioned at the message start; it holds the whole RFC 5322
    message, LF or CRLF line ends, not dot-stuffed.  It is read in
    ``CHUNK_SIZE`` pieces through a pull producer (back-pressure from the
    socket) and :class:`~phaserlink.message.wire.DotStuffer`: the message is
    never in memory.  A path is opened and closed here; a file object is left
    open for the caller.  *size* is the ``SIZE=`` value (RFC 1870: the
    message with CRLF line ends, without stuffing dots); default: measured
    from the source by :func:`wire_size` (a read of the whole source: large
    messages should pass it).  *body* ``"8BITMIME"`` sends ``BODY=8BITMIME``
    (RFC 6152); a server that does not advertise 8BITMIME then fails the
    send permanently at stage ``mail`` (5.6.3: no downgrade here).

    The Deferred fires with :class:`SendResult` when the server accepted the
    message for at least one recipient: ``result.accepted`` /
    ``result.refused`` are :class:`RecipientResult` (address, reply) per
    recipient, ``result.reply`` the server's reply to the final ".",
    ``result.server`` the :class:`ServerInfo` (extensions, ``size_limit``,
    ``tls``).  It fails with :class:`SMTPError` otherwise:
    :class:`RecipientsRefused` (a subclass, ``.recipients`` lists every
    recipient's reply) when no RCPT was accepted.

``probe(reactor, host, port, *, helo, tls=..., implicit_tls=..., ca_file=...,
tls_hostname=None, timeout=...) -> Deferred[ServerInfo]``

    Connects, EHLO, STARTTLS by policy, EHLO again, QUIT: what the server
    advertises (``info.size_limit`` is its SIZE limit or None).

``SMTPError(message, *, code, enhanced, text, permanent, stage)``

    ``code`` is the reply code (None for local failures: connection refused
    or lost, timeout, TLS, policy), ``enhanced`` the RFC 3463 code
    ("5.1.1") or None, ``text`` the server's reply text (lines joined by
    "\\n") or a description, ``permanent`` True only for a 5xx reply (4xx,
    connection problems, timeouts and TLS failures are temporary),
    ``stage`` one of the ``STAGE_*`` names (where it failed).

TLS policy (*tls*)
    ``"required"``: STARTTLS must be offered and succeed, else a temporary
    SMTPError (nothing is sent in clear).  ``"opportunistic"``: STARTTLS if
    offered; a server that offers it must then pass verification (no silent
    fallback to plaintext after a failed handshake, which would make
    downgrade trivial).  ``"none"``: never STARTTLS.  The certificate is
    always verified with :func:`phaserlink.tls.client_options` (*ca_file* or
    the system CAs; the name checked is *tls_hostname* or *host*).
    Credentials (AUTH PLAIN, else LOGIN) are sent only over TLS, unless
    *tls* is ``"none"``, the configuration's explicit word for "this
    server may have the password in clear": with ``"opportunistic"`` and
    a server without STARTTLS no AUTH line is sent and the SMTPError
    (stage ``auth``, temporary) says why, naming *tls_setting*, the key
    that would allow it.  The rule is :func:`phaserlink.tls.cleartext_login_refusal`
    (docs/tls.md), shared with the POP3 client.

Cancelling the Deferred of :func:`send` or :func:`probe` aborts the
connection at once (no QUIT) and fails it with ``CancelledError``.

Not implemented: PIPELINING (commands go one at a time), MIME downgrade
of 8-bit mail, SMTPUTF8 and DSN parameters.  A TLS handshake or verification failure
after STARTTLS is an SMTPError at stage ``starttls`` whose text starts
"TLS negotiation failed:".

Timeouts: every wait for a reply, and every stall while streaming the body,
is limited to *timeout* seconds; then the connection is aborted and the
Deferred fails (temporary, ``stage`` where it stalled).
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from typing import IO, Any, Iterable

from twisted.internet import defer, endpoints
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from phaserlink.message.wire import DotStuffer
from phaserlink.tls import TLS_POLICIES, cleartext_login_refusal  # the one login rule (docs/tls.md)

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    SMTP_CLIENT_TIMEOUT as DEFAULT_TIMEOUT,
    QUIT_TIMEOUT,
    SMTP_CLIENT_CHUNK_SIZE as CHUNK_SIZE,
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    WIRE_SCAN_CHUNK,
)

STAGE_CONNECT = "connect"
STAGE_GREETING = "greeting"
STAGE_EHLO = "ehlo"
STAGE_STARTTLS = "starttls"
STAGE_AUTH = "auth"
STAGE_MAIL = "mail"
STAGE_RCPT = "rcpt"
STAGE_DATA = "data"  # the reply to DATA (354 expected)
STAGE_MESSAGE = "message"  # streaming the body and the reply to the final "."
STAGE_QUIT = "quit"

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")


# -- values --------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One (possibly multi-line) server reply."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str | None:
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        return m.group(1) if m else None

    @property
    def text(self) -> str:
        """The reply text as the server gave it, lines joined by newlines."""
        return "\n".join(self.lines)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class ServerInfo:
    """What a server said about itself in its greeting and (last) EHLO."""

    greeting: str
    esmtp: bool  # False when we fell back to HELO
    extensions: dict[str, str] = field(default_factory=dict)  # KEYWORD -> parameters
    tls: bool = False  # the session is encrypted (STARTTLS or implicit)

    @property
    def size_limit(self) -> int | None:
        """The SIZE limit in bytes, or None (not advertised, or 0 = none)."""
        value = self.extensions.get("SIZE")
        if value is None:
            return None
        try:
            limit = int(value.split()[0]) if value.strip() else 0
        except ValueError:
            return None
        return limit or None

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        return tuple(self.extensions.get("AUTH", "").upper().split())


@dataclass(frozen=True)
class RecipientResult:
    address: str
    reply: Reply

    @property
    def accepted(self) -> bool:
        return self.reply.positive

    @property
    def permanent(self) -> bool:
        return self.reply.permanent


@dataclass(frozen=True)
class SendResult:
    """The message was accepted for ``accepted`` and refused for ``refused``."""

    recipients: tuple[RecipientResult, ...]
    reply: Reply  # the reply to the final "."
    server: ServerInfo

    @property
    def accepted(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if r.accepted)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if not r.accepted)


class SMTPError(Exception):
    """A failed SMTP transaction: the server's answer, or why there was none."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        enhanced: str | None = None,
        text: str = "",
        permanent: bool = False,
        stage: str = STAGE_CONNECT,
    ):
        super().__init__(message)
        self.code = code
        self.enhanced = enhanced
        self.text = text or message
        self.permanent = permanent
        self.stage = stage

    @classmethod
    def from_reply(cls, stage: str, command: str, reply: Reply) -> "SMTPError":
        return cls(
            f"{command}: server replied {reply.code} {reply.text}",
            code=reply.code,
            enhanced=reply.enhanced,
            text=reply.text,
            permanent=reply.permanent,
            stage=stage,
        )


class RecipientsRefused(SMTPError):
    """No recipient was accepted; ``recipients`` has each one's reply."""

    def __init__(self, recipients: tuple[RecipientResult, ...]):
        worst = recipients[-1].reply
        permanent = all(r.permanent for r in recipients)
        # Report a temporary reply if there is one: the whole attempt is
        # retryable unless every recipient failed for good.
        for r in recipients:
            if not r.permanent:
                worst = r.reply
                break
        detail = "; ".join(f"<{r.address}>: {r.reply}" for r in recipients)
        super().__init__(
            f"all recipients refused: {detail}",
            code=worst.code,
            enhanced=worst.enhanced,
            text=worst.text,
            permanent=permanent,
            stage=STAGE_RCPT,
        )
        self.recipients = recipients


# -- the protocol ------------------------------------------------------------------


@implementer(IPullProducer)
class _BodyProducer:
    """Reads the message file chunk by chunk as the transport asks for it."""

    def __init__(self, protocol: "SMTPClientProtocol", source: IO[bytes], chunk_size: int):
        self.protocol = protocol
        self.source = source
        self.chunk_size = chunk_size
        self.stuffer = DotStuffer()
        self.done: defer.Deferred[None] = defer.Deferred()
        self._finished = False

    def resumeProducing(self) -> None:
        if self._finished:
            return
        try:
            chunk = self.source.read(self.chunk_size)
        except OSError as e:
            why = f"cannot read the message: {e}"
            self._stop(Failure(SMTPError(why, text=why, stage=STAGE_MESSAGE)))
            if self.protocol.transport is not None:
                self.protocol.transport.abortConnection()
            return
        transport = self.protocol.transport
        assert transport is not None
        self.protocol._touch()
        if chunk:
            wire = self.stuffer.feed(chunk)
            if wire:
                transport.write(wire)
            return
        transport.write(self.stuffer.finish())
        self._stop(None)

    def stopProducing(self) -> None:
        # The transport is going away; the protocol's connectionLost, which
        # follows, fails ``done`` with the reason (lost or timed out).
        self._finished = True

    def lost(self, error: SMTPError) -> None:
        if not self.done.called:
            self._finished = True
            self.done.errback(Failure(error))

    def _stop(self, failure: Failure | None) -> None:
        if self._finished:
            return
        self._finished = True
        transport = self.protocol.transport
        if transport is not None:
            transport.unregisterProducer()
        if failure is None:
            self.done.callback(None)
        else:
            self.done.errback(failure)


class SMTPClientProtocol(LineReceiver):
    """Turns server bytes into :class:`Reply` objects and sends commands.

    The conversation itself is :func:`converse`, an ordinary coroutine that
    awaits replies; this class only frames lines, groups multi-line replies,
    keeps the timeout and streams the body.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = MAX_REPLY_LINE

    def __init__(self, reactor: Any, timeout: float = DEFAULT_TIMEOUT):
        self.reactor = reactor
        self.timeout = timeout
        self.stage = STAGE_GREETING
        self.tls = False
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.connected_ = False
        self._lines: list[str] = []
        self._replies: list[Reply] = []
        self._waiter: defer.Deferred[Reply] | None = None
        self._timer: Any = None
        self._lost: SMTPError | None = None
        self._timed_out = False
        self._producer: _BodyProducer | None = None

    # connection events

    def connectionMade(self) -> None:
        self.connected_ = True
        self._arm()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.connected_ = False
        self._disarm()
        if self._timed_out:
            why = f"timed out after {self.timeout:g}s waiting for the server"
        elif self.tls and self.stage == STAGE_STARTTLS:
            why = f"TLS negotiation failed: {reason.getErrorMessage()}"
        else:
            why = f"connection lost: {reason.getErrorMessage()}"
        self._lost = SMTPError(why, text=why, stage=self.stage)
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(self._lost)
        if self._producer is not None:
            self._producer.lost(self._lost)
        if not self.closed.called:
            self.closed.callback(None)

    # timeouts

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.reactor.callLater(self.timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _touch(self) -> None:
        """Progress: restart the stall timer."""
        if self._timer is not None:
            self._arm()

    def _expired(self) -> None:
        self._timer = None
        self._timed_out = True
        log.info("SMTP: no progress for {timeout}s in {stage}; aborting", timeout=self.timeout, stage=self.stage)
        if self.transport is not None:
            self.transport.abortConnection()

    # replies

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
            self._protocol_error(f"malformed reply line {text[:80]!r}")
            return
        self._lines.append(text[4:])
        if len(self._lines) > MAX_REPLY_LINES:
            self._protocol_error("reply has too many lines")
            return
        if len(text) > 3 and text[3] == "-":
            return
        reply = Reply(int(text[:3]), tuple(self._lines))
        self._lines = []
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            self._disarm()
            waiter.callback(reply)
        else:
            self._replies.append(reply)
            if len(self._replies) > MAX_REPLY_LINES:
                self._protocol_error("too many unsolicited replies")

    def lineLengthExceeded(self, line: bytes) -> None:
        self._protocol_error("reply line too long")

    def _protocol_error(self, why: str) -> None:
        log.warn("SMTP: server protocol error: {why}", why=why)
        self._timed_out = False
        if self.transport is not None:
            self.transport.abortConnection()

    def next_reply(self) -> defer.Deferred[Reply]:
        """The next complete reply (already received or still to come)."""
        if self._replies:
            return defer.succeed(self._replies.pop(0))
        if self._lost is not None:
            return defer.fail(self._lost)
        assert self._waiter is None, "one reply at a time"
        self._waiter = defer.Deferred(self._cancel_wait)
        self._arm()
        return self._waiter

    def _cancel_wait(self, waiter: defer.Deferred) -> None:
        """The caller gave up (Deferred.cancel): the session is unusable."""
        if self._waiter is waiter:
            self._waiter = None
        self._disarm()
        if self.transport is not None and self.connected_:
            self.transport.abortConnection()

    def command(self, line: str | bytes) -> defer.Deferred[Reply]:
        if isinstance(line, str):
            line = line.encode("utf-8")
        if self._lost is not None:
            return defer.fail(self._lost)
        assert self.transport is not None
        self.transport.write(line + b"\r\n")
        return self.next_reply()

    # TLS and body

    def start_tls(self, options: Any) -> None:
        """Switch to TLS after a 220 to STARTTLS; forget anything buffered
        in clear (RFC 3207 5: it must not be trusted)."""
        self.clearLineBuffer()
        self._lines = []
        self._replies = []
        assert self.transport is not None
        self.transport.startTLS(options)
        self.tls = True

    def send_body(self, source: IO[bytes], chunk_size: int = CHUNK_SIZE) -> defer.Deferred[None]:
        """Stream *source* dot-stuffed and ended by ".": fires when all is written."""
        if self._lost is not None:
            return defer.fail(self._lost)
        producer = _BodyProducer(self, source, chunk_size)
        self._producer = producer

        def done(result: Any) -> Any:
            self._producer = None
            return result

        producer.done.addBoth(done)
        assert self.transport is not None
        self._arm()
        self.transport.registerProducer(producer, False)
        return producer.done


# -- the conversation ------------------------------------------------------------


def _address(address: str) -> str:
    if any(c in address for c in "\r\n<>\0") or address != address.strip():
        raise ValueError(f"not a usable mail address: {address!r}")
    return address


def _parse_ehlo(reply: Reply) -> dict[str, str]:
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


async def _expect(proto: SMTPClientProtocol, stage: str, command: str | None, wanted: Iterable[int]) -> Reply:
    proto.stage = stage
    reply = await (proto.command(command) if command is not None else proto.next_reply())
    if reply.code not in wanted:
        raise SMTPError.from_reply(stage, command or "greeting", reply)
    return reply


async def _hello(proto: SMTPClientProtocol, helo: str, greeting: str, stage: str = STAGE_EHLO) -> ServerInfo:
    proto.stage = stage
    reply = await proto.command(f"EHLO {helo}")
    if reply.positive:
        return ServerInfo(greeting, True, _parse_ehlo(reply), proto.tls)
    if reply.code == 421:
        raise SMTPError.from_reply(stage, "EHLO", reply)
    await _expect(proto, stage, f"HELO {helo}", (250,))
    return ServerInfo(greeting, False, {}, proto.tls)


async def _open_session(
    proto: SMTPClientProtocol,
    *,
    host: str,
    helo: str,
    tls: str,
    ca_file: str | os.PathLike | None,
    tls_hostname: str | None,
) -> ServerInfo:
    """Greeting, EHLO, STARTTLS by policy, EHLO again."""
    if tls not in TLS_POLICIES:
        raise ValueError(f"tls must be one of {TLS_POLICIES}, not {tls!r}")
    greeting = await _expect(proto, STAGE_GREETING, None, (220,))
    info = await _hello(proto, helo, greeting.text)
    if proto.tls or tls == "none":
        return info
    if "STARTTLS" not in info.extensions:
        if tls == "required":
            why = "TLS is required but the server does not offer STARTTLS"
            raise SMTPError(why, text=why, stage=STAGE_STARTTLS)
        return info
    await _expect(proto, STAGE_STARTTLS, "STARTTLS", (220,))
    from phaserlink.tls import client_options

    try:
        options = client_options(tls_hostname or host, ca_file)
    except Exception as e:
        why = f"cannot set up TLS: {e}"
        raise SMTPError(why, text=why, stage=STAGE_STARTTLS) from e
    proto.start_tls(options)
    # The handshake runs with the next EHLO; a failed verification shows up
    # as a lost connection there, so it still counts as the STARTTLS stage.
    return await _hello(proto, helo, greeting.text, STAGE_STARTTLS)


async def _authenticate(proto: SMTPClientProtocol, info: ServerInfo, username: str, password: str, *,
                        tls: str, where: str, tls_setting: str) -> None:
    proto.stage = STAGE_AUTH
    why = cleartext_login_refusal(tls, encrypted=proto.tls, where=where, offer="STARTTLS", setting=tls_setting)
    if why is not None:
        raise SMTPError(why, text=why, stage=STAGE_AUTH)
    mechanisms = info.auth_mechanisms
    user, secret = username.encode("utf-8"), password.encode("utf-8")
    if "PLAIN" in mechanisms:
        token = base64.b64encode(b"\0" + user + b"\0" + secret).decode("ascii")
        await _expect(proto, STAGE_AUTH, f"AUTH PLAIN {token}", (235,))
    elif "LOGIN" in mechanisms:
        await _expect(proto, STAGE_AUTH, "AUTH LOGIN", (334,))
        await _expect(proto, STAGE_AUTH, base64.b64encode(user).decode("ascii"), (334,))
        await _expect(proto, STAGE_AUTH, base64.b64encode(secret).decode("ascii"), (235,))
    else:
        why = f"server offers no AUTH PLAIN or LOGIN (offers: {' '.join(mechanisms) or 'none'})"
        raise SMTPError(why, text=why, stage=STAGE_AUTH)


async def _quit(proto: SMTPClientProtocol, polite: bool) -> None:
    """Say QUIT if the session is sane, then close and wait for the close."""
    if proto.connected_ and polite:
        proto.timeout = min(proto.timeout, QUIT_TIMEOUT)
        proto.stage = STAGE_QUIT
        try:
            await proto.command("QUIT")
        except SMTPError:
            pass
    if proto.connected_ and proto.transport is not None:
        proto.transport.loseConnection()
        if proto.connected_:
            # If the peer never closes its side, do not wait forever.
            timer = proto.reactor.callLater(QUIT_TIMEOUT, _abort_if_open, proto)
            await proto.closed
            if timer.active():
                timer.cancel()


def _abort_if_open(proto: SMTPClientProtocol) -> None:
    if proto.connected_ and proto.transport is not None:
        proto.transport.abortConnection()


async def converse(
    proto: SMTPClientProtocol,
    mail_from: str,
    recipients: list[str],
    source: IO[bytes],
    *,
    host: str,
    helo: str,
    tls: str = "opportunistic",
    ca_file: str | os.PathLike | None = None,
    tls_hostname: str | None = None,
    username: str | None = None,
    password: str | None = None,
    size: int | None = None,
    port: int | None = None,
    tls_setting: str = "tls",
    body: str | None = None,
) -> SendResult:
    """One mail transaction on a connected protocol (used by :func:`send`
    and, with a fake transport, by the unit tests)."""
    polite = True
    if size is None:
        size = wire_size(source)
    try:
        info = await _open_session(proto, host=host, helo=helo, tls=tls, ca_file=ca_file, tls_hostname=tls_hostname)
        if username is not None:
            where = f"smtp://{host}" if port is None else f"smtp://{_hostport(host, port)}"
            await _authenticate(proto, info, username, password or "", tls=tls, where=where,
                                tls_setting=tls_setting)
        params = _mail_parameters(info, size, body)
        await _expect(proto, STAGE_MAIL, f"MAIL FROM:<{mail_from}>{params}", (250,))
        results = []
        for rcpt in recipients:
            proto.stage = STAGE_RCPT
            reply = await proto.command(f"RCPT TO:<{rcpt}>")
            results.append(RecipientResult(rcpt, reply))
        outcome = tuple(results)
        if not any(r.accepted for r in outcome):
            raise RecipientsRefused(outcome)
        await _expect(proto, STAGE_DATA, "DATA", (354,))
        proto.stage = STAGE_MESSAGE
        await proto.send_body(source)
        final = await proto.next_reply()
        if final.code != 250:
            raise SMTPError.from_reply(STAGE_MESSAGE, "end of data", final)
        return SendResult(outcome, final, info)
    except SMTPError as e:
        # After a 421 the server is closing; after a timeout or loss the
        # connection is gone (_quit checks).  Otherwise say goodbye.
        polite = e.code != 421
        raise
    except BaseException:
        polite = False
        raise
    finally:
        await _quit(proto, polite)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _open_source(message_source: Any) -> tuple[IO[bytes], bool]:
    if isinstance(message_source, (str, os.PathLike)):
        return open(message_source, "rb"), True
    return message_source, False


BODY_8BITMIME = "8BITMIME"


def _mail_parameters(info: ServerInfo, size: int | None, body: str | None) -> str:
    """``SIZE=`` when the server takes it; ``BODY=8BITMIME`` for 8-bit mail,
    which a server without 8BITMIME must not get (RFC 6152 3)."""
    params = f" SIZE={size}" if "SIZE" in info.extensions and size is not None else ""
    if body is not None and body.upper() == BODY_8BITMIME:
        if BODY_8BITMIME not in info.extensions:
            why = "the server does not offer 8BITMIME and the message has 8-bit data (RFC 6152 3; no downgrade)"
            raise SMTPError(why, enhanced="5.6.3", text=f"5.6.3 {why}", permanent=True, stage=STAGE_MAIL)
        params += f" BODY={BODY_8BITMIME}"
    return params


def wire_size(source: IO[bytes]) -> int | None:
    """RFC 1870's size of the rest of *source*: each bare LF counts as
    CRLF, a missing final line end as 2, stuffing dots not at all.  The
    position is kept.  None when the source cannot be read twice."""
    try:
        here = source.tell()
    except (OSError, AttributeError, ValueError):
        return None
    total = lf = crlf = 0
    previous = b""
    last = b"\n"
    try:
        for chunk in iter(lambda: source.read(WIRE_SCAN_CHUNK), b""):
            total += len(chunk)
            lf += chunk.count(b"\n")
            crlf += chunk.count(b"\r\n")
            if previous == b"\r" and chunk[:1] == b"\n":
                crlf += 1
            previous = last = chunk[-1:]
    except (OSError, ValueError):
        return _remaining_size(source)
    finally:
        try:
            source.seek(here)
        except (OSError, ValueError):
            pass
    if total == 0:
        return 0
    return total + (lf - crlf) + (0 if last == b"\n" else 2)


def _remaining_size(source: IO[bytes]) -> int | None:
    try:
        here = source.tell()
        return os.fstat(source.fileno()).st_size - here
    except (OSError, AttributeError, ValueError):
        try:
            here = source.tell()
            end = source.seek(0, os.SEEK_END)
            source.seek(here)
            return end - here
        except (OSError, AttributeError, ValueError):
            return None


def _endpoint(reactor: Any, host: str, port: int, implicit_tls: bool, ca_file: Any, tls_hostname: str | None, timeout: float):
    endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    if implicit_tls:
        from phaserlink.tls import client_options

        endpoint = endpoints.wrapClientTLS(client_options(tls_hostname or host, ca_file), endpoint)
    return endpoint


async def _connect(reactor: Any, host: str, port: int, implicit_tls: bool, ca_file: Any, tls_hostname: str | None, timeout: float) -> SMTPClientProtocol:
    proto = SMTPClientProtocol(reactor, timeout)
    try:
        endpoint = _endpoint(reactor, host, port, implicit_tls, ca_file, tls_hostname, timeout)
        await endpoints.connectProtocol(endpoint, proto)
    except Exception as e:
        why = f"cannot connect to {host}:{port}: {e}"
        raise SMTPError(why, text=why, stage=STAGE_CONNECT) from e
    if implicit_tls:
        proto.tls = True
    return proto


def send(
    reactor: Any,
    host: str,
    port: int,
    mail_from: str,
    recipients: list[str],
    message_source: str | os.PathLike | IO[bytes],
    *,
    helo: str,
    tls: str = "opportunistic",
    implicit_tls: bool = False,
    ca_file: str | os.PathLike | None = None,
    tls_hostname: str | None = None,
    username: str | None = None,
    password: str | None = None,
    size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tls_setting: str = "tls",
    body: str | None = None,
) -> "defer.Deferred[SendResult]":
    """Send one message; see the module docstring."""
    if mail_from:
        _address(mail_from)
    if not recipients:
        raise ValueError("no recipients")
    for rcpt in recipients:
        _address(rcpt)
    if tls not in TLS_POLICIES:
        raise ValueError(f"tls must be one of {TLS_POLICIES}, not {tls!r}")

    async def run() -> SendResult:
        source, owned = _open_source(message_source)
        try:
            proto = await _connect(reactor, host, port, implicit_tls, ca_file, tls_hostname, timeout)
            return await converse(
                proto, mail_from, list(recipients), source,
                host=host, helo=helo, tls=tls, ca_file=ca_file, tls_hostname=tls_hostname,
                username=username, password=password, size=size, port=port, tls_setting=tls_setting, body=body,
            )
        finally:
            if owned:
                source.close()

    return defer.Deferred.fromCoroutine(run())


def probe(
    reactor: Any,
    host: str,
    port: int,
    *,
    helo: str,
    tls: str = "opportunistic",
    implicit_tls: bool = False,
    ca_file: str | os.PathLike | None = None,
    tls_hostname: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> "defer.Deferred[ServerInfo]":
    """What the server advertises after EHLO (and STARTTLS by policy)."""

    async def run() -> ServerInfo:
        proto = await _connect(reactor, host, port, implicit_tls, ca_file, tls_hostname, timeout)
        polite = True
        try:
            return await _open_session(proto, host=host, helo=helo, tls=tls, ca_file=ca_file, tls_hostname=tls_hostname)
        except SMTPError as e:
            polite = e.code is not None and e.code != 421
            raise
        except BaseException:
            polite = False
            raise
        finally:
            await _quit(proto, polite)

    return defer.Deferred.fromCoroutine(run())


__all__ = [
    "CHUNK_SIZE", "DEFAULT_TIMEOUT", "RecipientResult", "RecipientsRefused", "Reply", "SMTPClientProtocol",
    "SMTPError", "SendResult", "ServerInfo", "TLS_POLICIES", "converse", "probe", "send", "wire_size",
]

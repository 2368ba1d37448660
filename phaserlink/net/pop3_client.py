"""A small POP3 client (RFC 1939, CAPA RFC 2449, STLS RFC 2595), streaming.

Shared by the printer side's retriever (a printer whose mailbox is a remote
POP3 server such as Dovecot) and the client's ``phaserlink status`` command,
so it imports nothing of the appliance: only Twisted and ``phaserlink.tls``.

Why not ``twisted.mail.pop3.AdvancedPOP3Client``: its ``login`` prefers APOP,
``startTLS`` without a context does not verify the certificate, it has no
timeout, and ``retrieve`` hands over one line at a time through Python calls.
This protocol is a plain state machine instead:

* every RETR is unstuffed and written straight to a binary file as the bytes
  arrive, whole chunks at a time (never a whole message in memory); CRLF and
  LF line ends both become LF, so a message stored LF-ended on the server
  comes back byte-identical;
* STLS is used when the server offers it (``tls='opportunistic'``), demanded
  when ``tls='required'`` (a clear :class:`POP3TLSError` if not offered), and
  certificates are always verified with :func:`phaserlink.tls.client_options`;
  ``implicit_tls=True`` is pop3s:// (TLS from the first byte);
* USER/PASS go only over TLS unless ``tls='none'`` says otherwise
  (:func:`phaserlink.tls.cleartext_login_refusal`, docs/tls.md): with
  ``opportunistic`` a server without STLS gets no USER line at all and the
  caller a :class:`POP3CleartextRefused` that says why;
* a server that goes quiet for ``timeout`` seconds during any command
  (including the greeting) gets the connection dropped and a
  :class:`POP3Timeout`;
* login is USER/PASS only (APOP needs a shared secret we do not keep);
* a login refused with RFC 2449's ``[IN-USE]`` response code (the mailbox
  is locked by another session: Dovecot's ``pop3_lock_session = yes``,
  or our own store) is a :class:`POP3MailboxInUse`, not a bad password:
  two retrievers given one mailbox (two appliances, or an appliance and a
  mail client) take turns, and the caller can say that plainly.

Errors are typed and carry the server's text, so a status line or a log can
say exactly what the server answered.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import BinaryIO, Callable

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from phaserlink import tls as _tls

__all__ = [
    "DEFAULT_TIMEOUT",
    "POP3AuthError",
    "POP3CleartextRefused",
    "POP3ConnectError",
    "POP3Error",
    "POP3MailboxInUse",
    "POP3ProtocolError",
    "POP3Session",
    "POP3TLSError",
    "POP3Timeout",
    "TLS_MODES",
    "connect",
]

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    POP3_CLIENT_TIMEOUT as DEFAULT_TIMEOUT,
    MAX_RESPONSE_LINE,
    MAX_LISTING_LINES,
    MAX_ERROR_TEXT,
)

TLS_MODES = _tls.TLS_POLICIES


class POP3Error(Exception):
    """Base of everything this client raises; ``server_text`` is the server's
    reply line when there was one (decoded, without ``-ERR``)."""

    def __init__(self, message: str, server_text: str | None = None):
        super().__init__(message)
        self.server_text = server_text


class POP3AuthError(POP3Error):
    """USER or PASS was refused."""


class POP3MailboxInUse(POP3AuthError):
    """The login was refused with ``[IN-USE]`` (RFC 2449 section 8): another
    session holds the mailbox's lock.  Nothing is wrong with the
    credentials; try again later.  A subclass of :class:`POP3AuthError`
    because the server said it at USER/PASS."""


#: RFC 2449 response code: the maildrop is locked by another session.
IN_USE_CODE = "[IN-USE]"


class POP3TLSError(POP3Error):
    """TLS was required but not offered, or the handshake/verification failed."""


class POP3CleartextRefused(POP3TLSError):
    """The session is not encrypted and the policy does not allow a password
    in clear: nothing of the login (not even USER) was sent."""


class POP3ProtocolError(POP3Error):
    """The server answered -ERR to a command, broke the protocol, or the
    connection was lost in the middle of a command."""


class POP3ConnectionLost(POP3ProtocolError):
    """The connection ended while a command was waiting for its reply."""


class POP3Timeout(POP3Error):
    """The server said nothing for ``timeout`` seconds."""


class POP3ConnectError(POP3Error):
    """No TCP connection could be made (refused, unreachable)."""


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")[:MAX_ERROR_TEXT]


class _Unstuffer:
    """Wire form of a multi-line reply -> stored form, across any chunking.

    Removes the stuffed leading "." of each line, turns CRLF into LF (bare CR
    passes, as :class:`phaserlink.message.wire.DotStuffer` lets it pass), and
    stops at the ``.`` line.  Works on whole chunks: only the lines that start
    with "." cost a Python step, so throughput is that of ``bytes.replace``.
    """

    def __init__(self, write: Callable[[bytes], object]):
        self._write = write
        self._line_start = True
        self._tail = b""  # undecided bytes: ".", ".\r" at a line start, or a trailing "\r"
        self.written = 0

    def feed(self, data: bytes) -> bytes | None:
        """Consume *data*; return None while the message goes on, else the
        bytes that followed the terminating ``.`` line (maybe b"")."""
        buf = self._tail + data if self._tail else data
        self._tail = b""
        pos = 0
        end = len(buf)
        while pos < end:
            if self._line_start:
                if buf[pos] == 0x2E:  # "."
                    nxt = buf[pos + 1 : pos + 3]
                    if nxt[:1] == b"\n":
                        return buf[pos + 2 :]
                    if nxt == b"\r\n":
                        return buf[pos + 3 :]
                    if nxt in (b"", b"\r"):
                        self._tail = buf[pos:]
                        return None
                    pos += 1  # a stuffed (or, leniently, unstuffed) leading dot
                self._line_start = False
            idx = buf.find(b"\n.", pos)
            if idx == -1:
                region = buf[pos:]
                if region.endswith(b"\r"):
                    region = region[:-1]
                    self._tail = b"\r"
                    self._line_start = False
                else:
                    self._line_start = region.endswith(b"\n")
                self._emit(region)
                return None
            self._emit(buf[pos : idx + 1])
            pos = idx + 1
            self._line_start = True
        return None

    def _emit(self, region: bytes) -> None:
        if region:
            region = region.replace(b"\r\n", b"\n")
            self._write(region)
            self.written += len(region)


class _Command:
    """One command in the queue: what to send, whether its +OK starts a
    multi-line body, and the Deferred its caller waits on."""

    def __init__(self, line: bytes, multiline: bool, sink: _Unstuffer | None = None, log_line: str | None = None):
        self.line = line
        self.multiline = multiline
        self.sink = sink
        self.log_line = log_line or line.decode("ascii", "replace")
        self.deferred: defer.Deferred = defer.Deferred()
        self.status: bytes | None = None
        self.lines: list[bytes] = []


class POP3ClientProtocol(Protocol, TimeoutMixin):
    """The state machine: greeting, CAPA, STLS, USER/PASS, then commands.

    ``ready`` fires with a :class:`POP3Session` once logged in, or fails with
    a :class:`POP3Error`.  Commands are queued and sent one at a time (no
    pipelining: simple, and every server supports it).
    """

    def __init__(
        self,
        *,
        host: str,
        username: str,
        password: str | bytes,
        tls: str = "opportunistic",
        implicit_tls: bool = False,
        ca_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock=None,
        tls_options_factory: Callable[[str, str | Path | None], object] | None = None,
        where: str | None = None,
        tls_setting: str = "tls",
    ):
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, not {tls!r}")
        self.host = host
        self.username = username
        self.password = password.encode("utf-8") if isinstance(password, str) else password
        self.tls_mode = tls
        self.where = where or f"pop3://{host}"
        self.tls_setting = tls_setting
        self.implicit_tls = implicit_tls
        self.ca_file = ca_file
        self.timeout = timeout
        if clock is not None:
            self.callLater = clock.callLater
        self._tls_options_factory = tls_options_factory or _tls.client_options
        self.ready: defer.Deferred = defer.Deferred()
        self.greeting: str | None = None
        self.capabilities: dict[str, list[str]] = {}
        self.tls_active = implicit_tls
        self._buffer = b""
        self._queue: deque[_Command] = deque()
        self._current: _Command | None = None
        self._tls_starting = False
        self._closing = False
        self._lost = False
        self._failure: POP3Error | None = None

    # -- connection -----------------------------------------------------

    def connectionMade(self) -> None:
        # The greeting is a reply like any other: wait for it with the timeout.
        self._current = _Command(b"", multiline=False, log_line="(greeting)")
        self._current.deferred.addCallbacks(self._got_greeting, self._login_failed)
        self.setTimeout(self.timeout)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        buf = self._buffer + data if self._buffer else data
        self._buffer = b""
        pos = 0
        while pos < len(buf) and not self._lost:
            cmd = self._current
            if cmd is not None and cmd.sink is not None and cmd.status is not None:
                # Inside a RETR body: whole chunks go to the file.
                try:
                    rest = cmd.sink.feed(buf[pos:] if pos else buf)
                except Exception as e:  # the file could not take it (disk full...)
                    self._local_error(cmd, e)
                    return
                if rest is None:
                    return
                self._finish(cmd, None)
                buf, pos = rest, 0
                continue
            nl = buf.find(b"\n", pos)
            if nl == -1:
                if len(buf) - pos > MAX_RESPONSE_LINE:
                    self._protocol_error(f"reply line longer than {MAX_RESPONSE_LINE} bytes")
                else:
                    self._buffer = buf[pos:]
                return
            line = buf[pos:nl]
            pos = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_RESPONSE_LINE:
                self._protocol_error(f"reply line longer than {MAX_RESPONSE_LINE} bytes")
                return
            self._line_received(line)

    def _local_error(self, cmd: _Command, exc: Exception) -> None:
        """Our side failed mid-command (e.g. writing the spool): the session
        cannot continue in step with the server, so drop it; the caller sees
        the original exception."""
        self._current = None
        self._lost = True
        cmd.deferred.errback(exc)
        self._fail_all(POP3ConnectionLost(f"{self.host}: session dropped after a local error: {exc}"))
        self.transport.abortConnection()

    def _line_received(self, line: bytes) -> None:
        cmd = self._current
        if cmd is None:
            self._protocol_error(f"unexpected data from server: {_text(line)!r}")
            return
        if cmd.status is None:
            if line.startswith(b"+OK"):
                cmd.status = line
                if not cmd.multiline:
                    self._finish(cmd, None)
            elif line.startswith(b"-ERR"):
                cmd.status = line
                self._finish(cmd, _text(line[4:].strip()))
            else:
                self._protocol_error(f"reply to {cmd.log_line} is neither +OK nor -ERR: {_text(line)!r}")
            return
        # A multi-line listing (CAPA, LIST, UIDL).
        if line == b".":
            self._finish(cmd, None)
            return
        if line.startswith(b"."):
            line = line[1:]
        if len(cmd.lines) >= MAX_LISTING_LINES:
            self._protocol_error(f"listing longer than {MAX_LISTING_LINES} lines")
            return
        cmd.lines.append(line)

    def _finish(self, cmd: _Command, err_text: str | None) -> None:
        self._current = None
        if self._queue:
            self._send_next()
        else:
            self.setTimeout(None)
        if err_text is None:
            cmd.deferred.callback(cmd)
        else:
            cmd.deferred.errback(
                POP3ProtocolError(f"{self.host}: {cmd.log_line} refused: -ERR {err_text}", err_text)
            )

    def timeoutConnection(self) -> None:
        what = self._current.log_line if self._current else "idle"
        self._fail_all(POP3Timeout(f"{self.host}: no answer to {what} within {self.timeout:g} s"))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self._lost = True
        self.setTimeout(None)
        if self._closing:
            exc: POP3Error = POP3ConnectionLost(f"{self.host}: session closed")
        elif self._tls_starting or (self.implicit_tls and self.greeting is None and reason is not None
                                    and _is_tls_failure(reason)):
            exc = POP3TLSError(f"{self.host}: TLS handshake failed: {_describe(reason)}")
        else:
            exc = POP3ConnectionLost(f"{self.host}: connection lost: {_describe(reason)}")
        self._fail_all(exc)

    def _fail_all(self, exc: POP3Error) -> None:
        if self._failure is None:
            self._failure = exc
        pending = ([self._current] if self._current else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        for cmd in pending:
            if not cmd.deferred.called:
                cmd.deferred.errback(exc)
        if not self.ready.called:
            self.ready.errback(exc)

    def _protocol_error(self, why: str) -> None:
        self._fail_all(POP3ProtocolError(f"{self.host}: {why}"))
        self._lost = True
        self.transport.abortConnection()

    # -- commands -------------------------------------------------------

    def command(self, line: bytes, multiline: bool = False, sink: _Unstuffer | None = None,
                log_line: str | None = None) -> defer.Deferred:
        """Queue *line* (without CRLF); fires with the finished command."""
        if self._failure is not None:
            return defer.fail(self._failure)
        if b"\r" in line or b"\n" in line:
            raise ValueError("POP3 command must be one line")
        cmd = _Command(line, multiline, sink, log_line)
        self._queue.append(cmd)
        if self._current is None:
            self._send_next()
        return cmd.deferred

    def _send_next(self) -> None:
        cmd = self._queue.popleft()
        self._current = cmd
        self.transport.write(cmd.line + b"\r\n")
        self.setTimeout(self.timeout)

    # -- login sequence ------------------------------------------------

    def _got_greeting(self, cmd: _Command) -> defer.Deferred:
        self.greeting = _text(cmd.status[3:].strip())
        if self.implicit_tls:
            self.tls_active = True
        d = self._capa()
        d.addCallback(self._maybe_stls)
        d.addCallback(self._may_log_in)
        d.addCallback(lambda _: self.command(b"USER " + self.username.encode("utf-8")))
        d.addErrback(self._auth_refused, "USER")
        d.addCallback(lambda _: self.command(b"PASS " + self.password, log_line="PASS ****"))
        d.addErrback(self._auth_refused, "PASS")
        d.addCallback(lambda _: self.ready.callback(POP3Session(self)))
        d.addErrback(self._login_failed)
        return d

    def _capa(self) -> defer.Deferred:
        def parsed(cmd: _Command) -> None:
            caps = {}
            for line in cmd.lines:
                words = line.decode("ascii", "replace").split()
                if words:
                    caps[words[0].upper()] = words[1:]
            self.capabilities = caps

        def refused(f: Failure) -> None:
            f.trap(POP3ProtocolError)
            if isinstance(f.value, POP3ConnectionLost):
                return f
            self.capabilities = {}  # an RFC 1939-only server: no CAPA

        return self.command(b"CAPA", multiline=True).addCallbacks(parsed, refused)

    def _maybe_stls(self, _) -> defer.Deferred | None:
        if self.tls_active or self.tls_mode == "none":
            return None
        if "STLS" not in self.capabilities:
            if self.tls_mode == "required":
                raise POP3TLSError(
                    f"{self.host}: TLS is required but the server does not offer STLS "
                    f"(capabilities: {' '.join(sorted(self.capabilities)) or 'none'})"
                )
            return None
        options = self._tls_options_factory(self.host, self.ca_file)

        def go(cmd: _Command):
            # After +OK the next bytes are the TLS handshake (RFC 2595 4).
            self._tls_starting = True
            self.transport.startTLS(options)
            self.tls_active = True
            # Capabilities learnt in plaintext are forgotten; ask again.  Its
            # reply is the proof that the handshake (and verification) passed.
            return self._capa().addCallback(tls_up)

        def tls_up(_):
            self._tls_starting = False

        def refused(f: Failure):
            if f.check(POP3ProtocolError) and not f.check(POP3ConnectionLost):
                raise POP3TLSError(f"{self.host}: STLS refused: -ERR {f.value.server_text}", f.value.server_text)
            return f

        return self.command(b"STLS").addCallbacks(go, refused)

    def _may_log_in(self, _) -> None:
        """The policy's last word before USER: no password in clear unless
        the configuration says ``none`` (docs/tls.md)."""
        why = _tls.cleartext_login_refusal(self.tls_mode, encrypted=self.tls_active, where=self.where,
                                           offer="STLS", setting=self.tls_setting)
        if why is not None:
            raise POP3CleartextRefused(why)

    def _auth_refused(self, f: Failure, what: str):
        if f.check(POP3ProtocolError) and not f.check(POP3ConnectionLost) and f.value.server_text is not None:
            if f.value.server_text.upper().startswith(IN_USE_CODE):
                raise POP3MailboxInUse(
                    f"{self.where}: mailbox {self.username!r} is locked by another POP3 session "
                    f"(refused at {what}: -ERR {f.value.server_text})",
                    f.value.server_text,
                )
            raise POP3AuthError(
                f"{self.host}: login as {self.username!r} refused at {what}: -ERR {f.value.server_text}",
                f.value.server_text,
            )
        return f

    def _login_failed(self, f: Failure) -> None:
        exc = f.value if isinstance(f.value, POP3Error) else POP3ProtocolError(f"{self.host}: {f.value}")
        if not self.ready.called:
            self.ready.errback(exc)
        if not self._lost:
            self._closing = True
            # Be polite when the server still talks; drop it otherwise.
            if self._current is None and not self._queue and not self._tls_starting:
                self.transport.write(b"QUIT\r\n")
                self.transport.loseConnection()
            else:
                self.transport.abortConnection()


def _is_tls_failure(reason: Failure) -> bool:
    from OpenSSL.SSL import Error as SSLError

    return reason.check(SSLError) is not None


def _describe(reason: Failure | None) -> str:
    if reason is None:
        return "unknown reason"
    value = reason.value
    try:
        from OpenSSL.SSL import Error as SSLError

        if isinstance(value, SSLError) and value.args and isinstance(value.args[0], list):
            return "; ".join(" ".join(str(p) for p in e if p) for e in value.args[0]) or repr(value)
    except ImportError:  # pragma: no cover
        pass
    return str(value) or value.__class__.__name__


class POP3Session:
    """A logged-in POP3 session: list, retrieve, delete, quit.

    Messages are named by UIDL (RFC 1939 7), which stays valid across
    sessions; message numbers are this session's business only.
    """

    def __init__(self, protocol: POP3ClientProtocol):
        self._proto = protocol
        self._numbers: dict[str, int] = {}

    @property
    def greeting(self) -> str | None:
        return self._proto.greeting

    @property
    def capabilities(self) -> dict[str, list[str]]:
        return self._proto.capabilities

    @property
    def tls_active(self) -> bool:
        return self._proto.tls_active

    @defer.inlineCallbacks
    def list_uidl(self):
        """``[(uidl, size)]`` in message-number order (oldest first).

        Sizes are the server's LIST sizes (octets on the wire, CRLF-ended),
        so a file retrieved with LF line ends is a little smaller."""
        sizes_cmd = yield self._proto.command(b"LIST", multiline=True)
        uidl_cmd = yield self._proto.command(b"UIDL", multiline=True)
        sizes: dict[int, int] = {}
        for line in sizes_cmd.lines:
            number, size = self._pair(line, "LIST")
            sizes[number] = int(size) if size.isdigit() else self._bad("LIST", line)
        result = []
        self._numbers = {}
        for line in uidl_cmd.lines:
            number, uidl = self._pair(line, "UIDL")
            if number in sizes:
                self._numbers[uidl] = number
                result.append((number, uidl, sizes[number]))
        result.sort()
        return [(uidl, size) for _, uidl, size in result]

    def _pair(self, line: bytes, what: str) -> tuple[int, str]:
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            self._bad(what, line)
        return int(parts[0]), parts[1].strip().decode("ascii", "replace")

    def _bad(self, what: str, line: bytes):
        raise POP3ProtocolError(f"{self._proto.host}: bad {what} line {_text(line)!r}")

    def _number(self, uidl: str) -> int:
        try:
            return self._numbers[uidl]
        except KeyError:
            raise POP3ProtocolError(
                f"{self._proto.host}: no message with UIDL {uidl!r} in this session (call list_uidl first)"
            ) from None

    def retrieve(self, uidl: str, out: BinaryIO) -> defer.Deferred:
        """Stream message *uidl* into *out* (unstuffed, LF line ends).

        Fires with the number of bytes written.  Writes go straight to
        *out* as data arrives; the caller fsyncs (and decides what a partial
        file after a failure means)."""
        try:
            number = self._number(uidl)
        except POP3Error as e:
            return defer.fail(e)
        sink = _Unstuffer(out.write)
        d = self._proto.command(b"RETR %d" % number, multiline=True, sink=sink)
        return d.addCallback(lambda _: sink.written)

    def delete(self, uidl: str) -> defer.Deferred:
        """Mark *uidl* deleted; the server removes it only after :meth:`quit`."""
        try:
            number = self._number(uidl)
        except POP3Error as e:
            return defer.fail(e)
        return self._proto.command(b"DELE %d" % number).addCallback(lambda _: None)

    def quit(self) -> defer.Deferred:
        """QUIT; fires after the server's +OK, i.e. once deletions are committed
        (RFC 1939 6).  A -ERR (the server could not remove them) fails it."""
        proto = self._proto

        def done(_):
            proto._closing = True
            proto.transport.loseConnection()

        def refused(f: Failure):
            proto._closing = True
            proto.transport.loseConnection()
            return f

        return proto.command(b"QUIT").addCallbacks(done, refused)

    def abort(self) -> None:
        """Drop the connection without QUIT: nothing marked is deleted."""
        proto = self._proto
        if not proto._lost:
            proto._closing = True
            proto._fail_all(POP3ConnectionLost(f"{proto.host}: session aborted"))
            proto.transport.abortConnection()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ClientFactory(Factory):
    #: A retriever connects every poll_interval, per remote mailbox: the
    #: "Starting factory" / "Stopping factory" pair per session would be
    #: most of an appliance's log (two lines per printer per poll).
    noisy = False

    def __init__(self, make: Callable[[], POP3ClientProtocol]):
        self._make = make
        self.protocol_instance: POP3ClientProtocol | None = None

    def buildProtocol(self, addr):
        self.protocol_instance = self._make()
        self.protocol_instance.factory = self
        return self.protocol_instance


def connect(
    reactor,
    host: str,
    port: int,
    *,
    username: str,
    password: str | bytes,
    tls: str = "opportunistic",
    implicit_tls: bool = False,
    ca_file: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tls_setting: str = "tls",
) -> defer.Deferred:
    """Connect, (STLS,) log in; fire with a :class:`POP3Session`.

    *tls*: 'none' never STLS (and logs in without TLS); 'opportunistic'
    STLS when CAPA offers it, and :class:`POP3CleartextRefused` (before
    USER) when it does not; 'required' fail with :class:`POP3TLSError`
    when it is not offered.  *tls_setting* is the configuration key the
    refusal names ("set mailbox_tls = none to allow it").
    *implicit_tls*: TLS from the first byte (pop3s://, port 995).
    *timeout*: seconds for the TCP connect and for each reply.
    """
    if tls not in TLS_MODES:
        raise ValueError(f"tls must be one of {TLS_MODES}, not {tls!r}")

    def make() -> POP3ClientProtocol:
        return POP3ClientProtocol(
            host=host, username=username, password=password, tls=tls,
            implicit_tls=implicit_tls, ca_file=ca_file, timeout=timeout, clock=reactor,
            where=f"{'pop3s' if implicit_tls else 'pop3'}://{_hostport(host, port)}", tls_setting=tls_setting,
        )

    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if implicit_tls:
        endpoint = wrapClientTLS(_tls.client_options(host, ca_file), endpoint)
    factory = _ClientFactory(make)
    d = endpoint.connect(factory)

    def connected(proto: POP3ClientProtocol):
        return proto.ready

    def failed(f: Failure):
        if f.check(POP3Error):
            return f
        if f.check(error.TimeoutError, defer.TimeoutError):
            raise POP3Timeout(f"{host}:{port}: connect timed out after {timeout:g} s")
        raise POP3ConnectError(f"{host}:{port}: cannot connect: {_describe(f)}")

    return d.addCallback(connected).addErrback(failed)

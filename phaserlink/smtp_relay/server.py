"""The appliance's ESMTP server (RFC 5321) taking mail for printers.

Why not ``twisted.mail.smtp.ESMTP``: it hands DATA to Python one line at a
time (0.45x Postfix at 1 MB messages), answers 550 to a full disk, parses
the rest of a message as commands after an overlong line, keeps pipelined
plaintext across STARTTLS and advertises AUTH in the clear (see
``docs/README.md``).  This is a small state machine on a plain
``Protocol``: commands are split on LF by ``bytes.find``; DATA goes to
:class:`~phaserlink.smtp_relay.data.DataReader`, which scans whole chunks.

Protocol behaviour chosen here (all replies carry RFC 3463 status codes):

* Greeting ``220``; ``max_sessions`` concurrent sessions, the next one gets
  ``421 4.3.2`` and is closed.  One timeout (``smtp_timeout``) for idle and
  per-command waits, also inside DATA: ``421 4.4.2`` and close.
* EHLO advertises PIPELINING, SIZE <max_message_size>, 8BITMIME,
  ENHANCEDSTATUSCODES, STARTTLS (only with a certificate, before TLS) and
  AUTH PLAIN LOGIN (only under TLS and when ``[user:NAME]`` sections exist).
  HELO/EHLO is required before MAIL (503 5.5.1); EHLO resets the transaction.
* A command line ends at LF (a CR before it is dropped).  Longer than
  ``max_line_length`` including CRLF: ``500 5.5.2`` and the line is ignored.
  NUL in a command: ``500 5.5.2``.  More than ``MAX_BUFFERED_LINE`` bytes
  without any LF: one ``500 5.5.2`` and the connection is dropped.
  ``MAX_ERRORS`` bad commands in one session: ``421 4.7.0`` and close.
* MAIL FROM takes SIZE= (over the limit: 552 5.3.4), BODY=7BIT/8BITMIME
  (kept with relayed mail and declared again on the way out) and AUTH=;
  other parameters 555 5.5.4; while the disk is behind, its 250 waits (at
  most ``in_flow_delay``; :mod:`phaserlink.smtp_relay.inflow`, input held
  meanwhile).  RCPT TO takes none.  Recipient policy:
  :mod:`phaserlink.smtp_relay.policy` (``postmaster`` is always accepted,
  never printed); the ``max_recipients``-th + 1 RCPT gets ``452 4.5.3``.
* DATA: ``354``; then the reader (see there for bare LF/CR, NUL, line length,
  size lie and loop rules).  The ``250 2.0.0 Ok: queued as ID`` is sent only
  after the message, with our ``Received:`` line on top (RFC 5321 4.4; the
  mailbox copy has its ``Return-Path:`` above that), is committed (fsync'd)
  into every mailbox / the outbound queue.  An OSError from the store or
  the queue is ``451 4.3.0`` (``451 4.3.1`` when the disk is full), never
  250 and never 550; the partial file is removed.  The fsyncs run in worker
  threads so that concurrent sessions' fsyncs overlap; the session's input
  is held until the reply (docs/smtp.md).
* Who may print is asked of :mod:`phaserlink.trust.gate` (docs/trust.md)
  at RCPT (bounces, quotas: ``452 4.7.0``, ``sender_auth = spf``) and at
  the end of DATA (From:, DKIM, DMARC, login; ``550 5.7.x`` or, when DNS
  did not answer, ``451 4.7.x``); the message goes only into the mailboxes
  of the printers that take it, with our Authentication-Results on top.
  ``release+TOKEN@hostname`` releases a held job once the DATA is in.
* DATA refused (no valid recipients, ...) while the client had already sent
  bytes after the DATA line: it did not wait for 354 (RFC 2920 3.1), so
  that is message text; ``554 5.5.0`` and close, never parse it.
* STARTTLS (RFC 3207): 220, then every byte the client pipelined after it in
  plaintext is discarded, and HELO, sender, recipients and AUTH are
  forgotten (the CVE-2011-0411 class).
* AUTH PLAIN / LOGIN (RFC 4954) only under TLS (else ``530 5.7.0``); the
  rules of :mod:`phaserlink.trust.logins` decide (docs/logins.md): the
  PBKDF2 check runs in the ``cpu`` pool, a failure (``535 5.7.8``) is
  answered after a delay, a session is closed after a few failures, and an
  address that failed too often gets ``421 4.7.0`` and is closed.  Input is
  held meanwhile, so pipelined commands wait for the answer.
* VRFY ``252 2.5.2``; EXPN ``502 5.5.1``; NOOP, RSET, HELP, QUIT as RFC 5321.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import time
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Callable

from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from phaserlink.config import SiteConfig
from phaserlink.pop3_store.maildir import MaildirStore
from phaserlink.pop3_store.postmaster import POSTMASTER_BOX
from phaserlink.smtp_relay.data import DataReader, store_failed
from phaserlink.smtp_relay.inflow import InflowGate
from phaserlink.smtp_relay.interfaces import IOutboundQueue
from phaserlink.smtp_relay.policy import RelayPolicy
from phaserlink.smtp_relay.sink import MessageSink
from phaserlink.threads import pools_for
from phaserlink.trust.gate import Checkpoint, MessageResult, RcptResult, SenderGate
from phaserlink.trust.logins import LoginGuard, LoginSession, LoginVerdict, Outcome, guard_for

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_BUFFERED_LINE_FACTOR,
    RELEASE_HEAD,
    MAX_ERRORS,
    MAX_AUTH_LINE,
    MAX_HELD_INPUT,
    PAUSE_HELD_INPUT,
)

"""Input held while a commit or password check runs: reading pauses past
PAUSE_HELD_INPUT (one more read may still land), so MAX_HELD_INPUT is only
reached by a peer that ignores TCP back-pressure."""
SOFTWARE = "PhaserLink"

_ids = itertools.count()


def new_message_id() -> str:
    """A short, sortable, unique-enough id for the 250 reply, the Received
    header and the log (milliseconds, pid, counter)."""
    return f"{int(time.time() * 1000):X}{os.getpid() & 0xFFFF:04X}{next(_ids) & 0xFFFF:04X}"


class _Transaction:
    """One MAIL ... DATA transaction."""

    __slots__ = ("mail_from", "body", "printers", "relay", "count", "rcpts")

    def __init__(self, mail_from: str, body: str | None = None):
        self.mail_from = mail_from
        self.body = body  # BODY= of MAIL FROM (7BIT, 8BITMIME) or None
        self.printers: dict[str, None] = {}
        self.relay: dict[str, None] = {}
        self.count = 0
        self.rcpts: list[str] = []


class SMTPServer(Protocol, TimeoutMixin):
    """One SMTP session.  Bytes in, calls on the state machine, replies out."""

    factory: "SMTPFactory"

    def __init__(self, factory: "SMTPFactory"):
        self.factory = factory
        self.site = factory.site
        self.max_line = factory.site.appliance.max_line_length
        self._buf = b""
        self._out: list[bytes] = []
        self._closed = False
        self._counted = False
        self._busy = False  # waiting for an asynchronous check; input held
        self._paused = False  # reading stopped because too much input was held
        self._line_handler: Callable[[bytes], None] | None = None  # AUTH continuation
        self._reader: DataReader | None = None
        self._sink: MessageSink | None = None
        self._message_id = ""
        self._errors = 0
        self.helo: str | None = None
        self.esmtp = False
        self.tls = False
        self.user: str | None = None
        self.client_ip = ""
        self.may_relay_by_network = False
        self.txn: _Transaction | None = None
        self._check: Checkpoint | None = None  # sender verification of _check_txn
        self._check_txn: _Transaction | None = None
        self._releases: dict[str, None] = {}  # release tokens of the current transaction
        self._release_head = bytearray()  # the start of a message to a release address
        self._prefix = 0

    # -- connection -----------------------------------------------------

    def callLater(self, period, func):  # TimeoutMixin: use our reactor
        return self.factory.reactor.callLater(period, func)

    def connectionMade(self) -> None:
        factory = self.factory
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", "") or ""
        if factory.sessions >= factory.max_sessions:
            self._closed = True
            self.transport.write(
                f"421 4.3.2 {factory.hostname} Error: too many connections, try again later\r\n".encode()
            )
            self.transport.loseConnection()
            return
        factory.sessions += 1
        self._counted = True
        self.tls = ISSLTransport.providedBy(self.transport)  # implicit TLS endpoint
        self.may_relay_by_network = factory.policy.client_may_relay(self.client_ip)
        self.setTimeout(factory.timeout)
        self.transport.write(f"220 {factory.hostname} ESMTP {SOFTWARE}\r\n".encode())

    def connectionLost(self, reason=None) -> None:
        self.setTimeout(None)
        if self._counted:
            self._counted = False
            self.factory.sessions -= 1
        self._closed = True
        self._abort_data()

    def timeoutConnection(self) -> None:
        log.info("smtp {ip}: timeout", ip=self.client_ip)
        self._abort_data()
        self._hangup(421, "4.4.2", f"{self.factory.hostname} Error: timeout exceeded")

    def _hangup(self, code: int, status: str, text: str) -> None:
        """Reply, flush and close; ignore everything after."""
        self.reply(code, status, text)
        self._closed = True
        self._buf = b""
        self.flush()
        self.transport.loseConnection()

    # -- bytes in -------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self.resetTimeout()
        if self._buf:
            self._buf += data
        else:
            self._buf = data
        if self._busy:
            if len(self._buf) > MAX_HELD_INPUT:
                self._hangup(421, "4.7.0", "Error: too much pipelined input")
            elif len(self._buf) > PAUSE_HELD_INPUT and not self._paused:
                # Only now stop reading: pausing on every commit costs two
                # epoll_ctl calls per message, and most clients wait anyway.
                self._paused = True
                self.transport.pauseProducing()
            return
        self._process()
        self.flush()

    def _process(self) -> None:
        while self._buf and not self._closed and not self._busy:
            reader = self._reader
            if reader is not None:
                buf, self._buf = self._buf, b""
                rest = reader.feed(buf)
                if rest is None:
                    return
                self._buf = rest
                self._end_of_data()
                continue
            nl = self._buf.find(b"\n")
            limit = MAX_AUTH_LINE if self._line_handler is not None else self.max_line
            if nl < 0:
                if len(self._buf) > limit * MAX_BUFFERED_LINE_FACTOR:
                    self._hangup(500, "5.5.2", "Error: line too long and no end of line; closing")
                return
            line = self._buf[:nl]
            self._buf = self._buf[nl + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) + 2 > limit:
                self._line_handler = None
                self._error(500, "5.5.2", f"Error: line too long (more than {limit} bytes with CRLF)")
                continue
            if b"\x00" in line:
                self._line_handler = None
                self._error(500, "5.5.2", "Error: NUL character in command")
                continue
            handler = self._line_handler
            if handler is not None:
                self._line_handler = None
                handler(line)
            else:
                self._command(line)

    # -- replies --------------------------------------------------------

    def reply(self, code: int, status: str, text: str) -> None:
        self._out.append(f"{code} {status} {text}\r\n".encode())

    def reply_lines(self, code: int, lines: list[str]) -> None:
        last = len(lines) - 1
        self._out.append(
            "".join(f"{code}{' ' if i == last else '-'}{line}\r\n" for i, line in enumerate(lines)).encode()
        )

    def flush(self) -> None:
        if self._out:
            out = b"".join(self._out)
            self._out = []
            self.transport.write(out)

    def _error(self, code: int, status: str, text: str) -> None:
        self.reply(code, status, text)
        self._errors += 1
        if self._errors >= MAX_ERRORS:
            self._hangup(421, "4.7.0", f"{self.factory.hostname} Error: too many errors")

    # -- commands -------------------------------------------------------

    def _command(self, line: bytes) -> None:
        text = line.decode("latin-1")
        verb, _, arg = text.strip().partition(" ")
        handler = self._COMMANDS.get(verb.upper())
        if handler is None:
            self._error(500, "5.5.2", "Error: command not recognized")
            return
        handler(self, arg.strip())

    def do_HELO(self, arg: str, esmtp: bool = False) -> None:
        if not arg or " " in arg:
            self._error(501, "5.5.4", f"Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
            return
        self._reset()
        self.helo = arg
        self.esmtp = esmtp
        hostname = self.factory.hostname
        if not esmtp:
            self._out.append(f"250 {hostname}\r\n".encode())
            return
        lines = [
            hostname,
            "PIPELINING",
            f"SIZE {self.site.appliance.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.factory.tls_options is not None and not self.tls:
            lines.append("STARTTLS")
        if self.tls and self.site.users:
            lines.append("AUTH PLAIN LOGIN")
        self.reply_lines(250, lines)

    def do_EHLO(self, arg: str) -> None:
        self.do_HELO(arg, esmtp=True)

    def do_NOOP(self, arg: str) -> None:
        self.reply(250, "2.0.0", "Ok")

    def do_RSET(self, arg: str) -> None:
        self._reset()
        self.reply(250, "2.0.0", "Ok")

    def do_QUIT(self, arg: str) -> None:
        self._hangup(221, "2.0.0", "Bye")

    def do_VRFY(self, arg: str) -> None:
        if not arg:
            self._error(501, "5.5.4", "Syntax: VRFY address")
            return
        self.reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")

    def do_EXPN(self, arg: str) -> None:
        self._error(502, "5.5.1", "Error: EXPN not supported")

    def do_HELP(self, arg: str) -> None:
        self.reply(
            214, "2.0.0",
            "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        )

    def do_MAIL(self, arg: str) -> None:
        if self.helo is None:
            self._error(503, "5.5.1", "Error: send HELO/EHLO first")
            return
        if self.txn is not None:
            self._error(503, "5.5.1", "Error: nested MAIL command")
            return
        parsed = _path(arg, "FROM:")
        if parsed is None:
            self._error(501, "5.5.4", "Syntax: MAIL FROM:<address>")
            return
        address, params = parsed
        if address and "@" not in address:
            self._error(501, "5.1.7", "Bad sender address syntax")
            return
        body = None
        for param in params:
            key, _, value = param.partition("=")
            key = key.upper()
            if key == "SIZE" and self.esmtp:
                if not value.isdigit():
                    self._error(501, "5.5.4", "Bad SIZE parameter")
                    return
                if int(value) > self.site.appliance.max_message_size:
                    self.reply(552, "5.3.4", "Error: message size exceeds fixed limit")
                    return
            elif key == "BODY" and self.esmtp:
                if value.upper() not in ("7BIT", "8BITMIME"):
                    self._error(501, "5.5.4", "Bad BODY parameter (7BIT or 8BITMIME)")
                    return
                body = value.upper()
            elif key == "AUTH" and self.esmtp:
                pass  # RFC 4954 5: may be ignored
            else:
                self._error(555, "5.5.4", f"Unsupported parameter {key}")
                return
        wait = self.factory.admit()  # inflow control: may hold us while the disk is behind
        if wait is None:
            self._begin(address, body)
            return
        wait.addCallback(lambda _: None if self._closed else self._begin(address, body))
        self._wait_for(wait)

    def _begin(self, address: str, body: str | None) -> None:
        self.txn = _Transaction(address, body)
        self.reply(250, "2.1.0", "Ok")

    def do_RCPT(self, arg: str) -> None:
        txn = self.txn
        if txn is None:
            self._error(503, "5.5.1", "Error: need MAIL command")
            return
        parsed = _path(arg, "TO:")
        if parsed is None or not parsed[0]:
            self._error(501, "5.5.4", "Syntax: RCPT TO:<address>")
            return
        address, params = parsed
        if params:
            self._error(555, "5.5.4", "RCPT TO parameters not supported")
            return
        if txn.count >= self.site.appliance.max_recipients:
            self.reply(452, "4.5.3", "Error: too many recipients")
            return
        token = self.factory.gate.release_token(address)
        if token is not None:  # release+TOKEN@hostname: releases a held job (docs/trust.md)
            v = self._checkpoint(txn).release_rcpt(token)
            if not v.accepted:
                self._error(v.code, v.status, f"<{address}>: {v.text}")
                return
            self._releases.setdefault(token, None)
            txn.count += 1
            txn.rcpts.append(address)
            self.reply(v.code, v.status, v.text)
            return
        verdict = self.factory.policy.recipient(
            address, txn.mail_from, self.may_relay_by_network or self.user is not None
        )
        if not verdict.accepted:
            log.info("smtp {ip}: refused <{rcpt}> from <{sender}>: {code} {text}", ip=self.client_ip,
                     rcpt=address, sender=txn.mail_from, code=verdict.code, text=verdict.text)
            self.factory.count("rcpt", verdict.code, verdict.status)
            self._error(verdict.code, verdict.status, verdict.text)
            return
        printers = tuple(self.site.printers[n] for n in verdict.printers if n in self.site.printers)
        if printers:  # who may print: the gate (phaserlink.trust, docs/trust.md)
            d = self._checkpoint(txn).rcpt(printers)
            d.addCallback(lambda result: self._rcpt_checked(txn, address, verdict, result))
            d.addErrback(self._check_failed)
            self._wait_for(d)
            return
        self._add_rcpt(txn, address, verdict)

    def _checkpoint(self, txn: _Transaction) -> Checkpoint:
        """This transaction's sender verification (started at its first printer RCPT)."""
        if self._check is None or self._check_txn is not txn:
            self._check_txn = txn
            self._check = self.factory.gate.transaction(
                self.client_ip, self.helo or "", txn.mail_from, self.user, self.may_relay_by_network)
        return self._check

    def _rcpt_checked(self, txn: _Transaction, address: str, verdict, result: RcptResult) -> None:
        if self._closed or self.txn is not txn:
            return
        if not result.printers:
            v = result.verdict
            log.info("smtp {ip}: refused <{rcpt}> from <{sender}>: {code} {status} {text}", ip=self.client_ip,
                     rcpt=address, sender=txn.mail_from, code=v.code, status=v.status, text=v.text)
            self.factory.count("rcpt", v.code, v.status)
            if v.temporary:
                self.reply(v.code, v.status, f"<{address}>: {v.text}")
            else:
                self._error(v.code, v.status, f"<{address}>: {v.text}")
            return
        boxes = result.printers + tuple(n for n in verdict.printers if n not in self.site.printers)
        text = f"Ok, prints on {', '.join(result.printers)}"
        if result.refused:
            text += "; not " + "; ".join(f"{n}: {v.text}" for n, v in result.refused.items())
        self._add_rcpt(txn, address, type(verdict)(verdict.code, verdict.status, text, printers=boxes,
                                                    relay=verdict.relay))

    def _check_failed(self, f) -> None:
        log.failure("smtp {ip}: sender verification failed", f, ip=self.client_ip)
        if not self._closed:
            self.reply(451, "4.7.0", "Error: cannot verify the sender now, try again later")

    def _add_rcpt(self, txn: _Transaction, address: str, verdict) -> None:
        txn.count += 1
        txn.rcpts.append(address)
        for name in verdict.printers:
            txn.printers[name] = None
        if verdict.relay:
            txn.relay[verdict.forward_to or address] = None
        self.reply(verdict.code, verdict.status, verdict.text)

    def do_DATA(self, arg: str) -> None:
        txn = self.txn
        if arg:
            self._refuse_data(501, "5.5.4", "Syntax: DATA")
            return
        if txn is None:
            self._refuse_data(503, "5.5.1", "Error: need MAIL command")
            return
        if not txn.count:
            self._refuse_data(554, "5.5.1", "Error: no valid recipients")
            return
        factory = self.factory
        message_id = new_message_id()
        sink: MessageSink | None = None
        try:
            sink = MessageSink.open(factory.store, factory.queue, list(txn.printers), txn.mail_from,
                                    list(txn.relay), txn.body)
            sink.write(self._received(message_id, txn))
        except OSError as e:
            log.error("smtp {id}: cannot start storing: {e}", id=message_id, e=e)
            if sink is not None:
                sink.abort()
            refusal = store_failed(e)
            self._refuse_data(refusal.code, refusal.status, refusal.text)
            return
        self._sink = sink
        self._prefix = sink.delivery.size if sink.delivery is not None else 0  # ours, before the client's
        self._message_id = message_id
        write = sink.write
        if self._releases:  # keep the head: an automatic reply must not release (docs/trust.md)
            head = self._release_head = bytearray()

            def write(data: bytes, _write=sink.write) -> None:
                if len(head) < RELEASE_HEAD:
                    head.extend(data[:RELEASE_HEAD - len(head)])
                _write(data)
        self._reader = DataReader(write, self.site.appliance.max_message_size, self.max_line)
        self._out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")

    def _refuse_data(self, code: int, status: str, text: str) -> None:
        """DATA refused.  A client that already sent bytes after DATA did not
        wait for the 354 (RFC 2920 3.1): what it sent is message text, and
        reading it as commands is exactly SMTP smuggling.  Hang up instead."""
        self._error(code, status, text)
        if self._buf and not self._closed:
            log.info("smtp {ip}: data sent before 354, closing", ip=self.client_ip)
            self._hangup(554, "5.5.0", "Error: SMTP protocol synchronization (message sent before 354)")

    def _received(self, message_id: str, txn: _Transaction) -> bytes:
        """Our trace line (RFC 5321 4.4; protocol names from RFC 3848)."""
        with_ = "ESMTP" if self.esmtp else "SMTP"
        if self.tls:
            with_ += "S"
        if self.user is not None:
            with_ += "A"
        for_ = f"\n\tfor <{txn.rcpts[0]}>" if len(txn.rcpts) == 1 else ""
        when = format_datetime(datetime.fromtimestamp(self.factory.reactor.seconds(), timezone.utc))
        helo = _printable(self.helo or "unknown")
        return (
            f"Received: from {helo} ([{self.client_ip}])\n"
            f"\tby {self.factory.hostname} ({SOFTWARE}) with {with_} id {message_id}{for_};\n"
            f"\t{when}\n"
        ).encode("utf-8", "replace")

    def _end_of_data(self) -> None:
        reader, sink, txn = self._reader, self._sink, self.txn
        self._reader = self._sink = None
        self.txn = None
        assert reader is not None and sink is not None and txn is not None
        refusal = reader.verdict()
        mid = self._message_id
        releases, self._releases = self._releases, {}
        if refusal is not None:
            sink.abort()
            if reader.error is not None:
                log.error("smtp {id}: store failed: {e}", id=mid, e=reader.error)
            log.info("smtp {id}: refused from <{sender}>: {code} {text}", id=mid, sender=txn.mail_from,
                     code=refusal.code, text=refusal.text)
            self.factory.count("data", refusal.code, refusal.status)
            self.reply(refusal.code, refusal.status, refusal.text)
            return

        check = self._check if self._check_txn is txn else None
        self._check = self._check_txn = None
        if check is not None and releases:
            auto = check.is_automatic(bytes(self._release_head))
            if auto is not None:
                log.info("smtp {id}: {why}; releases nothing", id=mid, why=auto)
                if not (txn.printers or txn.relay):
                    sink.abort()
                    self.reply(550, "5.7.1", f"{auto}: releases nothing")
                    return
            else:
                for token in releases:  # the whole message arrived: now it releases
                    check.release(token)
        names = tuple(n for n in txn.printers if n in self.site.printers)
        if check is None or not names or sink.delivery is None:
            self._wait_for(self._commit(txn, sink, reader, None))
            return

        def checked(result: MessageResult) -> defer.Deferred | None:
            if self._closed:
                sink.abort()
                return
            if not result.printers:
                v = result.verdict
                log.info("smtp {id}: refused from <{sender}>: {code} {status} {text}", id=mid,
                         sender=txn.mail_from, code=v.code, status=v.status, text=v.text)
                sink.restrict([n for n in txn.printers if n not in self.site.printers])
                if not sink.targets:
                    sink.abort()
                    self.factory.count("data", v.code, v.status)
                    self.reply(v.code, v.status, v.text)
                    return
            else:
                sink.restrict(list(result.printers) + [n for n in txn.printers if n not in self.site.printers])
            return self._commit(txn, sink, reader, result, check)

        def failed(f) -> None:
            sink.abort()
            self._check_failed(f)

        self._wait_for(check.message(names, sink.delivery, self._prefix).addCallbacks(checked, failed))

    def _commit(self, txn: _Transaction, sink: MessageSink, reader: DataReader, result: MessageResult | None,
                check: Checkpoint | None = None) -> defer.Deferred:
        """The 250 after the message is durable (and counted against the quotas)."""
        mid = self._message_id

        def committed(_: object) -> defer.Deferred | None:
            if check is not None and result is not None:
                # Counted against the quotas (on disk) before the 250.
                return check.committed(result).addCallback(answered)
            return answered(None)

        def answered(_: object) -> None:
            log.info(
                "smtp {id}: from=<{sender}> size={size} printers={printers} relay={relay} queue={qid}",
                id=mid, sender=txn.mail_from, size=reader.size, printers=",".join(txn.printers),
                relay=",".join(txn.relay), qid=sink.queue_id,
            )
            where = f" ({result.summary()})" if result is not None and (result.refused or result.held) else ""
            self.factory.count("data", 250, "2.0.0")
            self.reply(250, "2.0.0", f"Ok: queued as {mid}{where}")

        def failed(f) -> None:
            sink.abort()
            if f.check(OSError):
                log.error("smtp {id}: commit failed: {e}", id=mid, e=f.value)
            else:
                log.failure("smtp {id}: commit failed", f, id=mid)
            refusal = store_failed(f.value if isinstance(f.value, OSError) else None)
            self.factory.count("data", refusal.code, refusal.status)
            self.reply(refusal.code, refusal.status, refusal.text)

        # The fsyncs may take milliseconds: they run in a thread while this
        # session holds its input (the client waits for this reply anyway)
        # and the other sessions go on.  The 250 still follows the commit.
        return self.factory.commit(sink).addCallbacks(committed, failed)

    def _wait_for(self, d: defer.Deferred) -> None:
        """Hold this session's input until *d* fires, then go on with it."""
        # ``d.called`` is not enough: a Deferred that fired but waits on an
        # inner one (the queue's commit in a thread) is "called" too.
        finished: list[None] = []
        d.addBoth(lambda result: finished.append(None) or result)
        if finished:  # synchronous (tests, no thread pool): no pause needed
            return
        self._busy = True

        def resume(result: object) -> None:
            self._busy = False
            if self._closed:
                return
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            self._process()
            self.flush()

        d.addBoth(resume)

    def _abort_data(self) -> None:
        if self._sink is not None:
            self._sink.abort()
        self._sink = self._reader = None

    def _reset(self) -> None:
        self.txn = None
        self._releases = {}

    # -- STARTTLS and AUTH ----------------------------------------------

    def do_STARTTLS(self, arg: str) -> None:
        options = self.factory.tls_options
        if options is None:
            self._error(502, "5.5.1", "Error: STARTTLS not available")
            return
        if self.tls:
            self._error(503, "5.5.1", "Error: TLS already active")
            return
        if arg:
            self._error(501, "5.5.4", "Syntax: STARTTLS")
            return
        start = getattr(self.transport, "startTLS", None)
        if start is None:
            self.reply(454, "4.7.0", "TLS not available due to temporary reason")
            return
        self.reply(220, "2.0.0", "Ready to start TLS")
        self.flush()
        # RFC 3207 4.2: forget everything learnt in plaintext, and throw away
        # whatever the client sent after STARTTLS before the handshake.
        self._buf = b""
        self.helo = None
        self.esmtp = False
        self.user = None
        self._reset()
        self.tls = True
        start(options)

    def do_AUTH(self, arg: str) -> None:
        if not self.tls or not self.site.users:
            if self.factory.tls_options is not None and not self.tls:
                self._error(530, "5.7.0", "Must issue a STARTTLS command first")
            else:
                self._error(502, "5.5.1", "Error: authentication not enabled")
            return
        if self.helo is None:
            self._error(503, "5.5.1", "Error: send EHLO first")
            return
        if self.user is not None:
            self._error(503, "5.5.1", "Error: already authenticated")
            return
        if self.txn is not None:
            self._error(503, "5.5.1", "Error: MAIL transaction in progress")
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        initial = initial.strip()
        if mechanism == "PLAIN":
            if initial:
                self._auth_plain(initial.encode("latin-1"))
            else:
                self._out.append(b"334 \r\n")
                self._line_handler = self._auth_plain
        elif mechanism == "LOGIN":
            if initial:
                self._auth_login_user(initial.encode("latin-1"))
            else:
                self._out.append(b"334 VXNlcm5hbWU6\r\n")
                self._line_handler = self._auth_login_user
        else:
            self._error(504, "5.5.4", "Error: unsupported authentication mechanism")

    def _decode64(self, line: bytes) -> bytes | None:
        if line.strip() == b"*":
            self._error(501, "5.0.0", "Authentication cancelled")
            return None
        try:
            return base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            self._error(501, "5.5.2", "Error: cannot decode response")
            return None

    def _auth_plain(self, line: bytes) -> None:
        decoded = self._decode64(line)
        if decoded is None:
            return
        parts = decoded.split(b"\x00")
        if len(parts) != 3:
            self._error(501, "5.5.2", "Error: bad PLAIN response")
            return
        authzid, username, password = parts
        if authzid and authzid != username:
            self._error(535, "5.7.8", "Error: authentication failed")
            return
        self._check_login(username, password)

    def _auth_login_user(self, line: bytes) -> None:
        decoded = self._decode64(line)
        if decoded is None:
            return
        self._out.append(b"334 UGFzc3dvcmQ6\r\n")
        self._line_handler = lambda l: self._auth_login_password(decoded, l)

    def _auth_login_password(self, username: bytes, line: bytes) -> None:
        decoded = self._decode64(line)
        if decoded is not None:
            self._check_login(username, decoded)

    _logins: LoginSession | None = None  # this connection's login attempts

    def _check_login(self, username: bytes, password: bytes) -> None:
        """Ask the login rules (phaserlink.trust.logins, docs/logins.md) and
        answer what they say; input is held until then."""
        name = username.decode("utf-8", "replace")
        if self._logins is None:
            self._logins = self.factory.logins.session(self.client_ip)

        def answer(verdict: LoginVerdict) -> None:
            if self._closed:
                return
            if verdict.accepted:
                self.user = name
                log.info("smtp {ip}: authenticated as {user}", ip=self.client_ip, user=name)
                self.reply(235, "2.7.0", "Authentication successful")
            elif verdict.outcome is Outcome.THROTTLED:
                self._hangup(421, "4.7.0", f"{self.factory.hostname} Error: too many failed logins from "
                             "your address, try again later")
            elif verdict.outcome is Outcome.BUSY:
                self.reply(454, "4.7.0", "Temporary authentication failure, try again later")
            else:
                log.info("smtp {ip}: AUTH failed for {user}", ip=self.client_ip, user=name)
                self._error(535, "5.7.8", "Error: authentication failed")
                if verdict.hangup and not self._closed:
                    self._hangup(421, "4.7.0", f"{self.factory.hostname} Error: too many failed logins")

        def failed(f) -> None:
            log.failure("smtp: password check failed", f)
            if not self._closed:
                self.reply(454, "4.7.0", "Temporary authentication failure")

        d = self._logins.attempt(lambda: self.factory.check_login(name, password))
        self._wait_for(d.addCallbacks(answer, failed))

    _COMMANDS: dict[str, Callable[["SMTPServer", str], None]] = {}


SMTPServer._COMMANDS = {
    name[3:]: getattr(SMTPServer, name) for name in dir(SMTPServer) if name.startswith("do_")
}


def _path(arg: str, prefix: str) -> tuple[str, list[str]] | None:
    """``FROM:<a@b> SIZE=1`` -> ("a@b", ["SIZE=1"]); None on bad syntax.

    A space after the colon is tolerated (many clients send one)."""
    if arg[: len(prefix)].upper() != prefix:
        return None
    rest = arg[len(prefix):].lstrip()
    if not rest.startswith("<"):
        return None
    end = rest.find(">")
    if end < 0:
        return None
    address = rest[1:end]
    if any(c in address for c in " <>\t") or len(address) > 254:
        return None
    if ":" in address:  # obsolete source route <@a,@b:user@c> (RFC 5321 4.1.2)
        address = address.rpartition(":")[2]
    return address, rest[end + 1 :].split()


def _printable(text: str) -> str:
    return "".join(c if 32 < ord(c) < 127 else "?" for c in text)[:255]


class SMTPFactory(ServerFactory):
    """Shared state of all sessions: config, store, queue, session count."""

    def __init__(self, site: SiteConfig, store: MaildirStore, queue: IOutboundQueue, reactor=None):
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.site = site
        self.store = store
        self.queue = queue
        self.reactor = reactor
        self.hostname = site.appliance.hostname
        self.timeout = site.appliance.smtp_timeout
        self.max_sessions = site.appliance.max_sessions
        self.sessions = 0
        #: (stage, outcome, status) -> count: messages accepted at the end
        #: of DATA, and recipients or messages refused, by their RFC 3463
        #: status (read by /metrics, docs/console.md).
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self.policy = RelayPolicy(site)
        if self.policy.postmaster is None:
            store.add_mailbox(POSTMASTER_BOX)  # postmaster mail stays here (docs/smtp.md)
        self.gate = SenderGate(site, reactor, queue=queue)  # who may print (docs/trust.md)
        pools = pools_for(reactor)
        #: Holds a new message at MAIL FROM while the durable pool is behind.
        self.inflow = InflowGate(reactor, lambda: pools.backlog("durable"), site.appliance.in_flow_delay)
        self.tls_options = None
        if site.appliance.tls is not None:
            from phaserlink.tls import server_options

            self.tls_options = server_options(site.appliance.tls)

    def buildProtocol(self, addr) -> SMTPServer:
        return SMTPServer(self)

    def stopFactory(self) -> None:
        self.inflow.stop()

    def admit(self) -> defer.Deferred | None:
        """May a new message start now?  None: yes; else a Deferred that
        fires when it may (at most ``in_flow_delay`` later; docs/smtp.md)."""
        return self.inflow.admit()

    def _thread_pool(self):
        get_pool = getattr(self.reactor, "getThreadPool", None)
        return get_pool() if get_pool is not None else None

    @property
    def logins(self) -> LoginGuard:
        """The login rules' state, one per reactor (shared with POP3)."""
        return guard_for(self.reactor)

    def check_login(self, username: str, password: bytes) -> defer.Deferred:
        """PBKDF2 (~0.05 s, slow on purpose) in the ``cpu`` pool, never in
        the ``durable`` one the commits use (docs/threads.md); inline on
        reactors without threads (tests)."""
        return pools_for(self.reactor).cpu(self.policy.check_login, username, password)

    def count(self, stage: str, code: int, status: str | None) -> None:
        """One answer at *stage* (``rcpt`` or ``data``): accepted (2xx),
        deferred (4xx) or refused (5xx), with its enhanced status."""
        outcome = "accepted" if code < 400 else ("deferred" if code < 500 else "refused")
        key = (stage, outcome, status or f"{code // 100}.0.0")
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def commit(self, sink: MessageSink) -> defer.Deferred:
        """Make a message durable without stalling other sessions.

        The mailbox part uses :meth:`Delivery.commit_async`: the file's fsync
        runs in a worker thread and the directory fsyncs are group-committed
        across sessions, so many 250s share one fsync per ``new/``; the
        store's observers (the printer side) hear of it in the reactor thread.
        The queue part does its file work in the ``durable`` pool too
        (:meth:`QueuedMessage.commit`), also for relay-only mail.
        """
        if sink.delivery is None:
            d: defer.Deferred = defer.succeed(None)
        elif not pools_for(self.reactor).threaded:
            d = defer.maybeDeferred(sink.commit_local)  # tests on a fake reactor
        else:
            d = sink.delivery.commit_async(self.reactor)
        d.addCallback(lambda _: sink.commit_queue())
        return d


def build_factory(site: SiteConfig, store: MaildirStore, queue: IOutboundQueue, reactor=None) -> SMTPFactory:
    """The SMTP server factory the appliance listens with (see service.py)."""
    return SMTPFactory(site, store, queue, reactor=reactor)

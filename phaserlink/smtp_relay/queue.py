"""The appliance's durable outbound queue: relayed mail and status mail.

Everything the appliance sends goes through here: to the configured
smarthost (``[appliance] smarthost``) when there is one, else directly to
each recipient domain's MX hosts (RFC 5321 5.1, :mod:`phaserlink.smtp_relay.mx`,
docs/outbound.md), several messages for one domain over one connection.

Every file operation of a commit, an envelope update and a removal (fsync,
rename, unlink) runs in the ``durable`` worker pool (:mod:`phaserlink.threads`),
never in the reactor thread, so :meth:`QueuedMessage.commit` returns a
Deferred that fires with the queue id once the message is durable.

On disk, under ``<spool>/queue/``::

    tmp/            files being written (removed at start: never committed)
    data/ID         the message, RFC 5322 with LF line ends, never changed
    env/ID.json     the envelope: sender, recipients still to do, times,
                    the body type (BODY=8BITMIME, RFC 6152) and wire size

The envelope is the commit record: a message exists once ``env/ID.json``
does.  :meth:`QueuedMessage.commit` fsyncs the data file, renames it into
``data/`` and fsyncs that directory, then does the same for the envelope;
only then does it return.  Every later change of the envelope (recipients
delivered or bounced, next attempt time) is a new file renamed over the old
one, so a crash leaves either the old or the new envelope, never half of
one.  Delivery is at least once: a crash after the smarthost's 250 and before
the envelope update sends that message again after the restart.

Outcomes per recipient, from the smarthost's replies:

* accepted: removed from the envelope.
* 5xx to RCPT, or to MAIL/DATA/end of data (then for all): bounced.
* 4xx, connection failures, timeouts, TLS or AUTH problems: retried after
  ``queue_retry_min``, doubling up to ``queue_retry_max``; once the message
  is ``queue_max_age`` old (one last attempt is made at that age) the rest
  is bounced with the last error.

A message whose envelope says ``8BITMIME`` (the client declared it, or the
data has 8-bit bytes) goes out with ``BODY=8BITMIME``; a smarthost that does
not offer 8BITMIME makes that a permanent failure (RFC 6152 3 allows a
bounce or a MIME downgrade; a downgrade would rewrite print jobs of any size,
so we bounce with 5.6.3).

A bounce is a DSN (RFC 3464, :mod:`phaserlink.smtp_relay.bounce`) from the
null reverse-path to the original sender, queued like any message and
committed *before* the recipients leave the envelope, so a crash may repeat
a bounce but never lose one.  A message from the null sender (a bounce,
or the printer side's status mail) is never bounced: its failures are only
logged and the message dropped, which prevents bounce loops.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from phaserlink.durable import fsync_dir
from phaserlink.net import smtp_client
from phaserlink.threads import pools_for
from phaserlink.smtp_relay import bounce, dkim_sign, mx
from phaserlink.smtp_relay.interfaces import IOutboundQueue, IQueuedMessage

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_CONCURRENT_DELIVERIES,
    QUEUE_STOP_TIMEOUT as STOP_TIMEOUT,
)

DELIVERY_TIMEOUT = smtp_client.DEFAULT_TIMEOUT  # per reply / per stalled write
ENVELOPE_VERSION = 2  # 2 adds body and size; version 1 envelopes are still read
READABLE_VERSIONS = (1, 2)
BODY_8BITMIME = "8BITMIME"
BODY_7BIT = "7BIT"
_counter = itertools.count()

# Failures at these stages say something about the message, so a 5xx there
# is final; elsewhere (greeting, EHLO, STARTTLS, AUTH) a 5xx says the
# smarthost or our configuration is wrong, which an admin can fix: retry.
_MESSAGE_STAGES = (smtp_client.STAGE_MAIL, smtp_client.STAGE_RCPT, smtp_client.STAGE_DATA, smtp_client.STAGE_MESSAGE)


def _check_address(address: str) -> str:
    if any(c in address for c in "\r\n<>\0") or address != address.strip():
        raise ValueError(f"not a usable mail address: {address!r}")
    return address


@dataclass(frozen=True)
class Envelope:
    """What the queue knows about one message, as stored in env/ID.json."""

    id: str
    mail_from: str  # '' = null reverse-path
    recipients: tuple[str, ...]  # still to deliver
    created: float  # reactor time of commit
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    body: str | None = None  # "8BITMIME", "7BIT" or None (undeclared, 7-bit data)
    size: int | None = None  # RFC 1870 size: bytes with CRLF line ends

    def to_json(self) -> bytes:
        data = asdict(self)
        data["version"] = ENVELOPE_VERSION
        data["recipients"] = list(self.recipients)
        return json.dumps(data, indent=1, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> "Envelope":
        data = json.loads(raw)
        if data.pop("version", None) not in READABLE_VERSIONS:
            raise ValueError("unknown envelope version")
        data["recipients"] = tuple(data["recipients"])
        return cls(**data)


@dataclass
class _Failure:
    """Why one recipient (or all) failed this attempt."""

    code: int | None
    enhanced: str | None
    text: str
    permanent: bool
    remote: str | None = None  # the host that said so, when not the smarthost (MX delivery)

    def diagnostic(self) -> str:
        if self.code is None:
            return f"X-PhaserLink; {self.text}"
        return f"smtp; {self.code} {self.text}"


@implementer(IQueuedMessage)
class QueuedMessage:
    """A message being written into the queue (see IQueuedMessage)."""

    def __init__(self, queue: "OutboundQueue", mail_from: str, recipients: tuple[str, ...],
                 body: str | None = None):
        self.queue = queue
        self.mail_from = mail_from
        self.recipients = recipients
        self.body = body
        self.id = queue._new_id()
        self._tmp = queue.tmp_dir / f"{self.id}.data"
        self._file = open(self._tmp, "xb")
        self._done = False
        self.size = 0  # bytes written (LF line ends)
        self.lines = 0  # LFs: each one is a CRLF on the wire
        self.eight_bit = False
        self._last = b"\n"

    def write(self, data: bytes) -> None:
        self._file.write(data)
        if data:
            self.size += len(data)
            self.lines += data.count(b"\n")
            self._last = data[-1:]
            if not self.eight_bit and not data.isascii():
                self.eight_bit = True

    def wire_size(self) -> int:
        """RFC 1870's size: CRLF line ends (a final line end is added when
        missing), no stuffing dots.  Data written with CRLF already counts
        its CRs twice: an upward approximation, which SIZE allows."""
        return self.size + self.lines + (0 if self._last == b"\n" else 2)

    def body_type(self) -> str | None:
        """What the envelope records: 8BITMIME when declared or when the data
        has 8-bit bytes (it must then be declared on the way out)."""
        if self.eight_bit or self.body == BODY_8BITMIME:
            return BODY_8BITMIME
        return self.body

    def commit(self) -> "defer.Deferred[str]":
        """Durable in the ``durable`` pool; fires with the queue id (see IQueuedMessage)."""
        if self._done:
            return defer.fail(RuntimeError("message already committed or aborted"))
        self._done = True
        queue = self.queue
        envelope = Envelope(self.id, self.mail_from, self.recipients, queue.reactor.seconds(),
                            body=self.body_type(), size=self.wire_size())
        signer = queue.signer if self.mail_from == "" else None
        d = queue._track(queue.pools.durable(self._write_files, envelope, signer))

        def committed(envelope: Envelope) -> str:
            queue._committed(envelope)
            return self.id

        return d.addCallback(committed)

    def commit_in_background(self) -> str:
        """Start :meth:`commit` and return the queue id at once, for callers
        that do not wait (status mail): a failure is logged here, and the
        partial message is removed by the commit itself."""
        queue_id = self.id

        def failed(f) -> None:
            log.error("outbound queue: {id} from <{sender}> to {rcpts} could not be committed: {why}",
                      id=queue_id, sender=self.mail_from, rcpts=", ".join(self.recipients),
                      why=f.getErrorMessage())

        self.commit().addErrback(failed)
        return queue_id

    def _write_files(self, envelope: Envelope, signer: dkim_sign.Signer | None = None) -> Envelope:
        """In a worker thread: data file fsync'd and renamed, then the
        envelope (the commit record); on any failure neither stays.  The
        appliance's own mail (null sender) is DKIM-signed first when a
        signer is configured (docs/outbound.md)."""
        queue = self.queue
        try:
            self._file.flush()
            if signer is not None:
                envelope = self._sign(signer, envelope)
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self._tmp, queue.data_dir / self.id)
            fsync_dir(queue.data_dir)
            queue._store_envelope(envelope)
            return envelope
        except BaseException:
            try:
                self._file.close()
            except OSError:
                pass
            for path in (self._tmp, queue.data_dir / self.id, queue.tmp_dir / f"{self.id}.json"):
                try:
                    path.unlink()
                except OSError:
                    pass
            raise

    def _sign(self, signer: dkim_sign.Signer, envelope: Envelope) -> Envelope:
        """Put a DKIM-Signature on top of a small message (in the worker
        thread); a message too big for dkimpy's in-memory signing, or one it
        cannot sign, goes unsigned with a log line."""
        if self.size > dkim_sign.MAX_SIGNED_SIZE:
            log.warn("outbound queue: {id} is {size} bytes, over {max}: queued without a DKIM signature",
                     id=self.id, size=self.size, max=dkim_sign.MAX_SIGNED_SIZE)
            return envelope
        data = self._tmp.read_bytes()
        try:
            field = signer.header(data)
        except Exception as e:
            log.error("outbound queue: {id}: cannot DKIM-sign ({why}); queued unsigned", id=self.id, why=e)
            return envelope
        self._file.seek(0)
        self._file.write(field + data)
        self._file.flush()
        self.size += len(field)
        self.lines += field.count(b"\n")
        return replace(envelope, size=self.wire_size())

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        except OSError:
            pass  # a full disk: the buffered tail cannot be written, nor is it wanted
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


@implementer(IOutboundQueue)
class OutboundQueue(service.Service):
    """The durable outbound queue as a service (see the module docstring)."""

    name = "outbound-queue"

    def __init__(self, site: Any, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.site = site
        self.reactor = reactor
        self.pools = pools_for(reactor)
        self.directory = Path(site.appliance.spool) / "queue"
        self.tmp_dir = self.directory / "tmp"
        self.data_dir = self.directory / "data"
        self.env_dir = self.directory / "env"
        self.max_concurrent = MAX_CONCURRENT_DELIVERIES
        # The SMTP client; tests replace it with a fake of the same signature.
        self.send: Callable[..., defer.Deferred] = smtp_client.send
        self.mx: mx.MXDelivery | None = None  # delivery by MX when there is no smarthost
        self.signer = dkim_sign.signer_for(site.appliance)  # DKIM for our own mail, or None
        self._entries: dict[str, Envelope] = {}
        self._timers: dict[str, Any] = {}
        self._ready: deque[str] = deque()
        self._active: dict[str, defer.Deferred] = {}
        self._pending: set[defer.Deferred] = set()  # commits and file work in flight
        self._make_dirs()

    # -- IOutboundQueue ---------------------------------------------------------

    def submit(self, mail_from: str, recipients: "list[str]", body: str | None = None) -> QueuedMessage:
        if mail_from:
            _check_address(mail_from)
        recipients = tuple(_check_address(r) for r in recipients)
        if not recipients:
            raise ValueError("a message needs at least one recipient")
        if body is not None:
            body = body.upper()
            if body not in (BODY_7BIT, BODY_8BITMIME):
                raise ValueError(f"BODY must be 7BIT or 8BITMIME, not {body!r}")
        return QueuedMessage(self, mail_from, recipients, body)

    # -- what is queued (for status pages and tests) ----------------------------

    def queued(self) -> list[Envelope]:
        return sorted(self._entries.values(), key=lambda e: (e.created, e.id))

    def data_path(self, queue_id: str) -> Path:
        return self.data_dir / queue_id

    # -- operator actions (the console, docs/console.md) --------------------------

    def retry_now(self, queue_id: str) -> None:
        """Try *queue_id* now rather than at its next attempt time."""
        if queue_id not in self._entries:
            raise KeyError(queue_id)
        timer = self._timers.pop(queue_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._due(queue_id)

    def delete(self, queue_id: str) -> "defer.Deferred[None]":
        """Drop *queue_id* unsent (envelope first, fsync'd, then data);
        refused (RuntimeError) while a delivery attempt of it runs."""
        if queue_id not in self._entries:
            raise KeyError(queue_id)
        if queue_id in self._active:
            raise RuntimeError(f"message {queue_id} is being delivered right now")
        log.info("outbound queue: {id} deleted by an operator", id=queue_id)
        return defer.ensureDeferred(self._remove(queue_id))

    # -- lifecycle --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._make_dirs()
        for stale in self.tmp_dir.iterdir():
            stale.unlink()
        self._recover()
        if self.site.appliance.smarthost is None:
            log.info("outbound queue: no smarthost configured; delivering by MX records (port {port})",
                     port=getattr(self.site.appliance, "mx_port", mx.DEFAULT_MX_PORT))

    def stopService(self) -> "defer.Deferred[None]":
        """Stop starting deliveries; wait for the ones running (at most
        ``STOP_TIMEOUT``, then they are cancelled and retried after the
        restart) and for commits in flight, so that their outcome is on disk
        before the spool lock is released (docs/smtp.md)."""
        super().stopService()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._ready.clear()
        active = list(self._active.values())
        waiting = active + list(self._pending)
        if self.mx is not None:
            waiting.append(self.mx.close_idle())
        if not waiting:
            return defer.succeed(None)
        timer = self.reactor.callLater(STOP_TIMEOUT, self._cancel_attempts, active)
        done = defer.DeferredList(waiting, consumeErrors=True)

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()
            # A cancelled attempt may have left file work (an envelope update)
            # running: wait for that too, it is bounded by the disk.
            if self._pending:
                return defer.DeferredList(list(self._pending), consumeErrors=True).addCallback(lambda _: None)
            return None

        return done.addCallback(finished)

    def _cancel_attempts(self, attempts: list[defer.Deferred]) -> None:
        running = [d for d in attempts if not d.called]
        if running:
            log.warn("outbound queue: {n} delivery attempt(s) still running after {t:g}s; cancelled, "
                     "retried after the restart", n=len(running), t=STOP_TIMEOUT)
        for d in running:
            d.cancel()

    def _track(self, d: defer.Deferred) -> defer.Deferred:
        """Remember *d* until it fires, so stopService can wait for it; the
        result passes through unchanged."""
        marker: defer.Deferred[None] = defer.Deferred()
        self._pending.add(marker)

        def fired(result: Any) -> Any:
            self._pending.discard(marker)
            marker.callback(None)
            return result

        return d.addBoth(fired)

    def _make_dirs(self) -> None:
        for d in (self.tmp_dir, self.data_dir, self.env_dir):
            d.mkdir(parents=True, exist_ok=True)

    def _recover(self) -> None:
        for path in sorted(self.env_dir.glob("*.json")):
            queue_id = path.name[: -len(".json")]
            try:
                envelope = Envelope.from_json(path.read_bytes())
            except (OSError, ValueError, TypeError, KeyError) as e:
                log.error("outbound queue: unreadable envelope {path} ({why}); left in place", path=str(path), why=e)
                continue
            if not (self.data_dir / queue_id).exists():
                log.error("outbound queue: {id} has an envelope but no data; dropping it", id=queue_id)
                path.unlink()
                continue
            self._entries[queue_id] = envelope
            self._schedule(envelope)
        # Data without an envelope: a commit that crashed half-way.
        for path in self.data_dir.iterdir():
            if path.name not in self._entries and not (self.env_dir / f"{path.name}.json").exists():
                path.unlink()
        if self._entries:
            log.info("outbound queue: recovered {count} message(s)", count=len(self._entries))

    # -- storage (these run in the durable pool) ---------------------------------

    def _new_id(self) -> str:
        return f"{int(self.reactor.seconds()):010d}{next(_counter) % 10000:04d}{secrets.token_hex(4)}"

    def _store_envelope(self, envelope: Envelope) -> None:
        tmp = self.tmp_dir / f"{envelope.id}.json"
        with open(tmp, "wb") as f:
            f.write(envelope.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.env_dir / f"{envelope.id}.json")
        fsync_dir(self.env_dir)

    def _remove_files(self, queue_id: str) -> None:
        """Envelope first (the commit record), then the data."""
        try:
            (self.env_dir / f"{queue_id}.json").unlink()
            fsync_dir(self.env_dir)
        except FileNotFoundError:
            pass
        try:
            (self.data_dir / queue_id).unlink()
        except FileNotFoundError:
            pass

    async def _remove(self, queue_id: str) -> None:
        """Forget a finished message."""
        self._entries.pop(queue_id, None)
        timer = self._timers.pop(queue_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        try:
            await self._track(self.pools.durable(self._remove_files, queue_id))
        except OSError as e:
            log.error("outbound queue: {id}: cannot remove its files: {why}", id=queue_id, why=e)

    # -- scheduling -------------------------------------------------------------

    def _committed(self, envelope: Envelope) -> None:
        self._entries[envelope.id] = envelope
        log.info(
            "outbound queue: {id} queued from <{sender}> to {rcpts}",
            id=envelope.id, sender=envelope.mail_from, rcpts=", ".join(envelope.recipients),
        )
        if self.running:
            self._schedule(envelope)

    def deadline(self, envelope: Envelope) -> float:
        """When the queue gives up on *envelope* (reactor time)."""
        return envelope.created + self.site.appliance.queue_max_age

    def _schedule(self, envelope: Envelope) -> None:
        old = self._timers.pop(envelope.id, None)
        if old is not None and old.active():
            old.cancel()
        when = envelope.next_attempt
        delay = max(0.0, when - self.reactor.seconds())
        self._timers[envelope.id] = self.reactor.callLater(delay, self._due, envelope.id)

    def _due(self, queue_id: str) -> None:
        self._timers.pop(queue_id, None)
        if queue_id in self._entries and queue_id not in self._active and queue_id not in self._ready:
            self._ready.append(queue_id)
        self._pump()

    def _pump(self) -> None:
        while self.running and self._ready and len(self._active) < self.max_concurrent:
            queue_id = self._ready.popleft()
            if queue_id not in self._entries:
                continue
            d = defer.Deferred.fromCoroutine(self._attempt(queue_id))
            self._active[queue_id] = d
            d.addErrback(self._attempt_failed, queue_id)
            d.addBoth(self._attempt_done, queue_id)

    def _attempt_failed(self, f, queue_id: str) -> None:
        if f.check(defer.CancelledError):
            log.info("outbound queue: {id}: attempt interrupted by shutdown; retried after the restart", id=queue_id)
        else:
            log.failure("outbound queue: {id}: attempt crashed", f, id=queue_id)

    def _attempt_done(self, _: Any, queue_id: str) -> None:
        self._active.pop(queue_id, None)
        self._pump()

    # -- one delivery attempt ---------------------------------------------------

    def retry_delay(self, attempts: int) -> float:
        """Seconds before attempt number *attempts* + 1 (after *attempts* failures)."""
        a = self.site.appliance
        return min(a.queue_retry_min * (2 ** max(0, attempts - 1)), a.queue_retry_max)

    async def _attempt(self, queue_id: str) -> None:
        envelope = self._entries[queue_id]
        smarthost = self.site.appliance.smarthost
        failures: dict[str, _Failure] = {}
        delivered: list[str] = []
        if smarthost is None:
            await self._attempt_by_mx(envelope, delivered, failures)
            return
        password = None
        try:
            if smarthost.username is not None and smarthost.password_file is not None:
                password = Path(smarthost.password_file).read_text(encoding="utf-8").strip()
            result = await self.send(
                self.reactor, smarthost.host, smarthost.port, envelope.mail_from, list(envelope.recipients),
                str(self.data_dir / queue_id),
                helo=self.site.appliance.hostname, tls=smarthost.tls, implicit_tls=smarthost.implicit_tls,
                ca_file=smarthost.ca_file, username=smarthost.username, password=password,
                timeout=DELIVERY_TIMEOUT, size=envelope.size, body=envelope.body, tls_setting="smarthost_tls",
            )
        except smtp_client.RecipientsRefused as e:
            for r in e.recipients:
                failures[r.address] = _Failure(r.reply.code, r.reply.enhanced, r.reply.text, r.reply.permanent)
        except smtp_client.SMTPError as e:
            permanent = e.permanent and e.stage in _MESSAGE_STAGES
            for rcpt in envelope.recipients:
                failures[rcpt] = _Failure(e.code, e.enhanced, e.text, permanent)
        except OSError as e:
            for rcpt in envelope.recipients:
                failures[rcpt] = _Failure(None, None, f"local error: {e}", False)
        else:
            for r in result.recipients:
                if r.accepted:
                    delivered.append(r.address)
                else:
                    failures[r.address] = _Failure(r.reply.code, r.reply.enhanced, r.reply.text, r.reply.permanent)
        await self._record(envelope, delivered, failures, smarthost.host)

    def mx_delivery(self) -> mx.MXDelivery:
        """The MX deliverer (made on first use; tests may set ``self.mx``)."""
        if self.mx is None:
            a = self.site.appliance
            self.mx = mx.MXDelivery(
                self.reactor, helo=a.hostname, port=getattr(a, "mx_port", mx.DEFAULT_MX_PORT),
                tls=getattr(a, "outbound_tls", "may"), ca_file=getattr(a, "outbound_tls_ca", None),
                dns_servers=getattr(a, "dns_servers", ()), timeout=DELIVERY_TIMEOUT,
            )
        return self.mx

    async def _attempt_by_mx(self, envelope: Envelope, delivered: list[str], failures: dict[str, _Failure]) -> None:
        """No smarthost: each recipient domain by its MX hosts, the domains
        side by side (docs/outbound.md)."""
        by_domain: dict[str, list[str]] = {}
        for rcpt in envelope.recipients:
            by_domain.setdefault(mx.domain_of(rcpt), []).append(rcpt)
        deliverer = self.mx_delivery()
        path = str(self.data_dir / envelope.id)
        attempts = [
            defer.Deferred.fromCoroutine(deliverer.deliver(domain, envelope.mail_from, rcpts, path,
                                                           size=envelope.size, body=envelope.body))
            for domain, rcpts in by_domain.items()
        ]
        results = await defer.DeferredList(attempts, consumeErrors=True)
        hosts: list[str] = []
        for (ok, outcome), rcpts in zip(results, by_domain.values()):
            if not ok:
                log.failure("outbound queue: {id}: MX delivery crashed", outcome, id=envelope.id)
                for rcpt in rcpts:
                    failures[rcpt] = _Failure(None, None, f"local error: {outcome.getErrorMessage()}", False)
                continue
            for o in outcome:
                if o.accepted:
                    delivered.append(o.address)
                    if o.host and o.host not in hosts:
                        hosts.append(o.host)
                else:
                    failures[o.address] = _Failure(o.code, o.enhanced, o.text, o.permanent, o.host)
        await self._record(envelope, delivered, failures, ", ".join(hosts) or "MX")

    async def _record(self, envelope: Envelope, delivered: list[str], failures: dict[str, _Failure],
                      remote: str | None) -> None:
        now = self.reactor.seconds()
        if delivered:
            log.info("outbound queue: {id} delivered to {rcpts} via {host}", id=envelope.id, rcpts=", ".join(delivered), host=remote)
        deadline = self.deadline(envelope)
        expired = now >= deadline
        give_up = {a: f for a, f in failures.items() if f.permanent or expired}
        retry = [a for a in envelope.recipients if a in failures and a not in give_up]
        for address, f in failures.items():
            log.info(
                "outbound queue: {id} to <{rcpt}>: {what}: {why}",
                id=envelope.id, rcpt=address, why=f.diagnostic(),
                what="failed" if address in give_up else "deferred",
            )
        if give_up:
            try:
                await self._bounce(envelope, give_up, remote, expired)
            except OSError as e:
                # No bounce on disk: keep the recipients, so it is tried again.
                log.error("outbound queue: {id}: cannot queue the bounce: {why}", id=envelope.id, why=e)
                retry = [a for a in envelope.recipients if a in failures]
        if not retry:
            await self._remove(envelope.id)
            return
        last = next(iter(failures[a] for a in retry))
        attempts = envelope.attempts + 1
        next_attempt = now + self.retry_delay(attempts)
        if now < deadline:
            next_attempt = min(next_attempt, deadline)  # one last try at the deadline
        updated = replace(
            envelope, recipients=tuple(retry), attempts=attempts, next_attempt=next_attempt,
            last_error=last.diagnostic(),
        )
        try:
            await self._track(self.pools.durable(self._store_envelope, updated))
        except OSError as e:
            # The old envelope stays: delivered recipients may get it twice.
            log.error("outbound queue: {id}: cannot update envelope: {why}", id=envelope.id, why=e)
        self._entries[envelope.id] = updated
        if self.running:
            self._schedule(updated)

    async def _bounce(self, envelope: Envelope, failed: dict[str, _Failure], remote: str | None,
                      expired: bool) -> None:
        if envelope.mail_from == "":
            log.warn(
                "outbound queue: {id} from the null sender failed for {rcpts}; dropped (never bounced)",
                id=envelope.id, rcpts=", ".join(failed),
            )
            return
        items = [
            bounce.FailedRecipient(
                address,
                bounce.status_for(f.code, f.enhanced),
                f.diagnostic() if not (expired and not f.permanent) else f"{f.diagnostic()} (gave up after "
                f"{self.site.appliance.queue_max_age:g}s in the queue)",
                (f.remote or remote) if f.code is not None else None,
            )
            for address, f in failed.items()
        ]
        message = self.submit("", [envelope.mail_from])
        try:
            bounce.write_dsn(
                message,
                reporting_mta=self.site.appliance.hostname,
                from_address=self.site.appliance.status_sender,
                to_address=envelope.mail_from,
                arrival=envelope.created,
                now=self.reactor.seconds(),
                failed=items,
                headers=bounce.original_headers(self.data_dir / envelope.id),
                queue_id=envelope.id,
            )
        except BaseException:
            message.abort()
            raise
        bounce_id = await message.commit()
        log.info("outbound queue: {id} bounced to <{sender}> as {bounce}", id=envelope.id, sender=envelope.mail_from, bounce=bounce_id)

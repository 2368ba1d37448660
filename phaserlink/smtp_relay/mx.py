"""Direct delivery by MX records (RFC 5321 5.1), used when no smarthost is set.

Why our own and not ``twisted.mail.relaymanager.MXCalculator``: that class
only picks one "best" exchange and remembers bad ones; RFC 5321 wants every
host tried in order within one attempt, the implicit MX (the domain's own
address records) when there is no MX, a null MX (RFC 7505) or NXDOMAIN
refused for good and a DNS failure retried later.  So this module asks
``twisted.names.client`` itself (docs/outbound.md).

For one domain and a list of its recipients, :meth:`MXDelivery.deliver`:

1. looks up MX, sorts by preference (equal preferences shuffled), and for
   each exchange its A and AAAA records; no MX at all: the domain's own
   A/AAAA (the implicit MX).  NXDOMAIN or a null MX: permanent failure
   (5.1.2 / 5.1.10); a DNS error or time-out: temporary;
2. tries the hosts in turn.  A connection failure, a failure before MAIL
   (greeting, EHLO, STARTTLS), any 421, or a 4xx to MAIL, DATA or the final
   dot moves to the next host; recipients that got a 4xx to RCPT are tried
   at the next host too.  A 5xx to MAIL, RCPT, DATA or the final dot is
   final (the queue bounces it, never to the null sender).  Whatever is
   left after the last host fails temporarily: the queue's back-off;
3. reuses connections: a session that carried one message is parked for
   ``IDLE_SESSION_TIME`` and the next message for the same domain goes over
   it after ``RSET`` (one connection carries several messages in turn).
   At most ``MAX_SESSIONS_PER_DOMAIN`` transactions per domain and
   ``MAX_SESSIONS_TOTAL`` overall run at once.

TLS (``[appliance] outbound_tls``): ``may`` (default) uses STARTTLS when
offered, without checking the certificate (as Postfix's ``may``: an MX
host's certificate is rarely one a client could verify), and when the
handshake or the STARTTLS command fails it reconnects to the same host in
plaintext; ``verify`` requires STARTTLS and a certificate valid for the MX
host name (``outbound_tls_ca`` or the system CAs), otherwise the host
counts as failed; ``none`` never uses STARTTLS.  8-bit mail is sent with
``BODY=8BITMIME``; a host that does not offer 8BITMIME refuses it for good
(5.6.3, as with a smarthost).
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from typing import IO, Any, Sequence

from twisted.internet import defer, ssl
from twisted.logger import Logger

from phaserlink.net import smtp_client
from phaserlink.net.smtp_client import (
    STAGE_DATA, STAGE_GREETING, STAGE_MAIL, STAGE_MESSAGE, STAGE_RCPT, STAGE_STARTTLS,
    RecipientResult, SMTPError,
)

log = Logger()

DEFAULT_MX_PORT = 25
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MX_MAX_SESSIONS_PER_DOMAIN as MAX_SESSIONS_PER_DOMAIN,
    MX_MAX_SESSIONS_TOTAL as MAX_SESSIONS_TOTAL,
    IDLE_SESSION_TIME,
    MAX_MESSAGES_PER_SESSION,
    MAX_HOSTS,
    DNS_TIMEOUTS,
)

OUTBOUND_TLS = ("may", "verify", "none")

_FINAL_STAGES = (STAGE_MAIL, STAGE_RCPT, STAGE_DATA, STAGE_MESSAGE)


@dataclass
class Outcome:
    """What happened to one recipient in this attempt."""

    address: str
    accepted: bool
    code: int | None = None
    enhanced: str | None = None
    text: str = ""
    permanent: bool = False
    host: str | None = None  # the MX host that answered (DSN Remote-MTA)


class DNSFailure(Exception):
    def __init__(self, text: str, permanent: bool, enhanced: str):
        super().__init__(text)
        self.text, self.permanent, self.enhanced = text, permanent, enhanced


@dataclass(frozen=True)
class Host:
    name: str  # the MX host name (TLS verification, logs)
    address: str  # the IP address connected to


def _address_of(record: Any) -> str | None:
    from twisted.names import dns

    if record.type == dns.A:
        return record.payload.dottedQuad()
    if record.type == dns.AAAA:
        return socket.inet_ntop(socket.AF_INET6, record.payload.address)
    return None


class MXResolver:
    """MX and address look-ups on ``twisted.names.client``.

    ``twisted.names`` is imported, and the client made (reading
    ``/etc/resolv.conf`` when no servers are given), by the first look-up:
    an appliance with a smarthost, or without mail to send, never loads it."""

    def __init__(self, reactor: Any, servers: Sequence[tuple[str, int]] = (),
                 timeouts: tuple[float, ...] = DNS_TIMEOUTS):
        self.timeouts = timeouts
        self.reactor = reactor
        self.servers = list(servers)
        self._resolver: Any = None

    @property
    def resolver(self) -> Any:
        """The ``twisted.names.client.Resolver`` (made on first use)."""
        if self._resolver is None:
            from twisted.names import client

            if self.servers:
                self._resolver = client.Resolver(servers=self.servers, reactor=self.reactor)
            else:
                self._resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=self.reactor)
        return self._resolver

    async def addresses(self, name: str) -> list[str]:
        from twisted.names import error as dns_error

        found: list[str] = []
        for lookup in (self.resolver.lookupAddress, self.resolver.lookupIPV6Address):
            try:
                answers, _auth, _extra = await lookup(name, timeout=self.timeouts)
            except (dns_error.DomainError, dns_error.DNSNameError):
                continue
            except defer.CancelledError:
                raise
            except Exception:
                if lookup is self.resolver.lookupAddress:
                    raise
                continue  # AAAA trouble does not hide a working A
            found += [a for a in (_address_of(r) for r in answers) if a and a not in found]
        return found

    async def hosts(self, domain: str) -> list[Host]:
        """The hosts to try for *domain*, in order (RFC 5321 5.1)."""
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1].removeprefix("IPv6:")
            return [Host(literal, literal)]
        from twisted.names import dns, error as dns_error

        try:
            answers, _auth, _extra = await self.resolver.lookupMailExchange(domain, timeout=self.timeouts)
        except (dns_error.DomainError, dns_error.DNSNameError):
            raise DNSFailure(f"the domain {domain} does not exist (DNS NXDOMAIN)", True, "5.1.2")
        except defer.CancelledError:
            raise
        except Exception as e:
            raise DNSFailure(f"MX lookup for {domain} failed: {e.__class__.__name__} {e}", False, "4.4.3")
        mx = [(r.payload.preference, str(r.payload.name)) for r in answers if r.type == dns.MX]
        if len(mx) == 1 and mx[0][1] in ("", "."):
            raise DNSFailure(f"{domain} accepts no mail (null MX, RFC 7505)", True, "5.1.10")
        if not mx:
            names = [domain]  # the implicit MX
        else:
            random.shuffle(mx)
            names = [name for _pref, name in sorted(mx, key=lambda m: m[0]) if name not in ("", ".")]
        hosts: list[Host] = []
        trouble: Exception | None = None
        for name in names:
            try:
                hosts += [Host(name, a) for a in await self.addresses(name)]
            except defer.CancelledError:
                raise
            except Exception as e:
                trouble = e
        if not hosts:
            if trouble is not None or mx:
                raise DNSFailure(f"no address for the mail hosts of {domain} ({', '.join(names)})", False, "4.4.3")
            raise DNSFailure(f"{domain} has neither MX nor address records", True, "5.1.2")
        return hosts[:MAX_HOSTS]


@dataclass(eq=False)
class _Session:
    """One open, greeted connection to one host, between transactions."""

    proto: smtp_client.SMTPClientProtocol
    info: smtp_client.ServerInfo
    host: Host
    messages: int = 0
    timer: Any = field(default=None, repr=False)
    parked_at: float = 0.0


class MXDelivery:
    """Delivers the recipients of one domain by its MX hosts (module docstring)."""

    def __init__(self, reactor: Any, *, helo: str, port: int = DEFAULT_MX_PORT, tls: str = "may",
                 ca_file: Any = None, dns_servers: Sequence[tuple[str, int]] = (),
                 timeout: float = smtp_client.DEFAULT_TIMEOUT, resolver: MXResolver | None = None):
        if tls not in OUTBOUND_TLS:
            raise ValueError(f"outbound_tls must be one of {OUTBOUND_TLS}, not {tls!r}")
        self.reactor = reactor
        self.helo = helo
        self.port = port
        self.tls = tls
        self.ca_file = ca_file
        self.timeout = timeout
        self.resolver = resolver or MXResolver(reactor, dns_servers)
        self._total = defer.DeferredSemaphore(MAX_SESSIONS_TOTAL)
        self._per_domain: dict[str, defer.DeferredSemaphore] = {}
        self._idle: dict[str, list[_Session]] = {}
        self.connections_opened = 0  # for tests and the status page
        self._closing = False

    # -- connections ----------------------------------------------------------

    async def _open(self, host: Host, tls: str) -> _Session:
        proto = await smtp_client._connect(self.reactor, host.address, self.port, False, None, None, self.timeout)
        self.connections_opened += 1
        try:
            greeting = await smtp_client._expect(proto, STAGE_GREETING, None, (220,))
            info = await smtp_client._hello(proto, self.helo, greeting.text)
            if tls != "none":
                if "STARTTLS" in info.extensions:
                    await smtp_client._expect(proto, STAGE_STARTTLS, "STARTTLS", (220,))
                    if tls == "verify":
                        from phaserlink.tls import client_options

                        options = client_options(host.name.rstrip("."), self.ca_file)
                    else:
                        options = ssl.CertificateOptions()  # encrypted, not authenticated ("may")
                    proto.start_tls(options)
                    info = await smtp_client._hello(proto, self.helo, greeting.text, STAGE_STARTTLS)
                elif tls == "verify":
                    why = f"{host.name} does not offer STARTTLS and outbound_tls = verify"
                    raise SMTPError(why, text=why, stage=STAGE_STARTTLS)
        except BaseException as e:
            polite = isinstance(e, SMTPError) and e.code is not None and e.code != 421
            await smtp_client._quit(proto, polite)
            raise
        return _Session(proto, info, host)

    async def _connect(self, host: Host) -> _Session:
        try:
            return await self._open(host, self.tls)
        except SMTPError as e:
            if self.tls != "may" or e.stage != STAGE_STARTTLS:
                raise
            log.info("MX {host} [{addr}]: STARTTLS failed ({why}); trying again in plaintext",
                     host=host.name, addr=host.address, why=e.text)
            return await self._open(host, "none")

    def _take_idle(self, domain: str) -> _Session | None:
        while self._idle.get(domain):
            session = self._idle[domain].pop()
            if session.timer is not None and session.timer.active():
                session.timer.cancel()
            if session.proto.connected_:
                return session
        return None

    def _park(self, domain: str, session: _Session) -> None:
        if self._closing or not session.proto.connected_ or session.messages >= MAX_MESSAGES_PER_SESSION:
            defer.ensureDeferred(smtp_client._quit(session.proto, session.proto.connected_))
            return
        session.timer = self.reactor.callLater(IDLE_SESSION_TIME, self._expire, domain, session)
        session.parked_at = self.reactor.seconds()
        self._idle.setdefault(domain, []).append(session)

    async def _make_room(self) -> None:
        """Before a new connection: open sockets (transactions running, this
        one included, plus parked sessions) stay within MAX_SESSIONS_TOTAL,
        so the longest-parked sessions of other domains say QUIT first.
        Without this the bound held for transactions only, and mail to many
        domains left one parked connection per domain open for
        IDLE_SESSION_TIME each: fds and remote slots without bound."""
        running = self._total.limit - self._total.tokens
        while self._idle and sum(map(len, self._idle.values())) + running > MAX_SESSIONS_TOTAL:
            domain, session = min(((d, s) for d, parked in self._idle.items() for s in parked),
                                  key=lambda pair: pair[1].parked_at)
            parked = self._idle[domain]
            parked.remove(session)
            if not parked:
                self._idle.pop(domain, None)
            if session.timer is not None and session.timer.active():
                session.timer.cancel()
            session.timer = None
            await smtp_client._quit(session.proto, session.proto.connected_)

    def _expire(self, domain: str, session: _Session) -> None:
        session.timer = None
        idle = self._idle.get(domain, [])
        if session in idle:
            idle.remove(session)
            if not idle:
                self._idle.pop(domain, None)
            defer.ensureDeferred(smtp_client._quit(session.proto, True))

    def close_idle(self) -> "defer.Deferred[Any]":
        """Say QUIT on every parked session, park no more (on shutdown)."""
        self._closing = True
        waits = []
        for domain in list(self._idle):
            for session in self._idle.pop(domain):
                if session.timer is not None and session.timer.active():
                    session.timer.cancel()
                waits.append(defer.ensureDeferred(smtp_client._quit(session.proto, True)))
        return defer.DeferredList(waits, consumeErrors=True)

    # -- one transaction --------------------------------------------------------

    async def _transaction(self, session: _Session, mail_from: str, recipients: list[str],
                           source: IO[bytes], size: int | None, body: str | None) -> list[RecipientResult]:
        """MAIL, RCPT..., DATA, body; the RCPT replies.  Raises SMTPError
        when the message as a whole was not taken."""
        proto = session.proto
        params = smtp_client._mail_parameters(session.info, size, body)
        await smtp_client._expect(proto, STAGE_MAIL, f"MAIL FROM:<{mail_from}>{params}", (250,))
        results = []
        for rcpt in recipients:
            proto.stage = STAGE_RCPT
            results.append(RecipientResult(rcpt, await proto.command(f"RCPT TO:<{rcpt}>")))
        if not any(r.accepted for r in results):
            await smtp_client._expect(proto, STAGE_MAIL, "RSET", (250,))
            return results
        await smtp_client._expect(proto, STAGE_DATA, "DATA", (354,))
        proto.stage = STAGE_MESSAGE
        await proto.send_body(source)
        final = await proto.next_reply()
        if final.code != 250:
            raise SMTPError.from_reply(STAGE_MESSAGE, "end of data", final)
        return results

    async def _on_host(self, domain: str, host: Host | None, session: _Session | None, mail_from: str,
                       recipients: list[str], path: str, size: int | None,
                       body: str | None) -> tuple[list[RecipientResult], Host]:
        """One transaction over a parked *session* (after RSET) or a new
        connection to *host*; the session is parked again if still sane."""
        if session is not None:
            try:
                await smtp_client._expect(session.proto, STAGE_MAIL, "RSET", (250,))
            except SMTPError as e:
                await smtp_client._quit(session.proto, False)
                e.host = session.host  # type: ignore[attr-defined]
                e.permanent = False  # a stale parked session says nothing about the message
                raise
        else:
            assert host is not None
            await self._make_room()
            session = await self._connect(host)
        healthy = False
        try:
            with open(path, "rb") as source:
                results = await self._transaction(session, mail_from, recipients, source, size, body)
            healthy = True
            session.messages += 1
            return results, session.host
        except SMTPError as e:
            healthy = e.code is not None and e.code != 421 and session.proto.connected_
            if healthy:
                try:
                    await smtp_client._expect(session.proto, STAGE_MAIL, "RSET", (250,))
                except SMTPError:
                    healthy = False
            e.host = session.host  # type: ignore[attr-defined]
            raise
        finally:
            if healthy:
                self._park(domain, session)
            else:
                await smtp_client._quit(session.proto, False)

    # -- the whole attempt for one domain --------------------------------------------

    async def deliver(self, domain: str, mail_from: str, recipients: Sequence[str], path: str, *,
                      size: int | None = None, body: str | None = None) -> list[Outcome]:
        """Try *recipients* (all at *domain*) by MX; one :class:`Outcome` each."""
        domain = domain.lower().rstrip(".")
        limit = self._per_domain.setdefault(domain, defer.DeferredSemaphore(MAX_SESSIONS_PER_DOMAIN))
        await limit.acquire()
        try:
            await self._total.acquire()
            try:
                return await self._deliver(domain, mail_from, list(recipients), path, size, body)
            finally:
                self._total.release()
        finally:
            limit.release()
            if not limit.waiting and limit.tokens == limit.limit:
                self._per_domain.pop(domain, None)

    async def _deliver(self, domain: str, mail_from: str, remaining: list[str], path: str,
                       size: int | None, body: str | None) -> list[Outcome]:
        """A parked session first (no DNS needed when it takes the message),
        then the MX hosts in order, until no recipient is left to try."""
        attempt = _Attempt(domain, remaining)
        parked = self._take_idle(domain)
        if parked is not None:
            await self._try(attempt, None, parked, mail_from, path, size, body)
        if attempt.remaining:
            try:
                hosts = await self.resolver.hosts(domain)
            except DNSFailure as e:
                hosts = []
                attempt.last = Outcome("", False, None, e.enhanced, e.text, e.permanent)
            for host in hosts:
                if not attempt.remaining:
                    break
                if not await self._try(attempt, host, None, mail_from, path, size, body):
                    break
        return attempt.outcomes()

    async def _try(self, attempt: "_Attempt", host: Host | None, session: _Session | None, mail_from: str,
                   path: str, size: int | None, body: str | None) -> bool:
        """One host (or parked session) for the recipients still to try;
        False when there is no point trying further hosts (a local error)."""
        where = f"{host.name} [{host.address}]:{self.port}" if host is not None else "a reused session"
        try:
            results, used = await self._on_host(attempt.domain, host, session, mail_from, attempt.remaining,
                                                 path, size, body)
        except SMTPError as e:
            used = getattr(e, "host", host)
            name = used.name if used is not None else None
            final = e.permanent and e.stage in _FINAL_STAGES
            log.info("MX {domain}: {where}: {what} ({stage}: {why})", domain=attempt.domain, where=where,
                     stage=e.stage, why=e.text, what="refused for good" if final else "next host")
            if final:
                for r in attempt.remaining:
                    attempt.done[r] = Outcome(r, False, e.code, e.enhanced, e.text, True, name)
                attempt.remaining = []
            else:
                attempt.last = Outcome("", False, e.code, e.enhanced, e.text, False, name)
            return True
        except OSError as e:
            attempt.last = Outcome("", False, text=f"local error: {e}")
            return False
        still: list[str] = []
        for r in results:
            reply = r.reply
            if r.accepted or reply.permanent:
                attempt.done[r.address] = Outcome(r.address, r.accepted, reply.code, reply.enhanced, reply.text,
                                                  reply.permanent, used.name)
            else:
                still.append(r.address)
                attempt.last = Outcome("", False, reply.code, reply.enhanced, reply.text, False, used.name)
        attempt.remaining = still
        if still:  # a 4xx to RCPT (or to DATA): said like a refused connection, so the log shows every host tried
            log.info("MX {domain}: {where}: next host for {n} recipient(s) ({code} {why})", domain=attempt.domain,
                     where=where, n=len(still), code=attempt.last.code if attempt.last else None,
                     why=attempt.last.text if attempt.last else "")
        return True


@dataclass
class _Attempt:
    """The state of one domain's attempt: who is done, who is left, the
    last temporary reason (given to those left at the end)."""

    domain: str
    remaining: list[str]
    done: dict[str, Outcome] = field(default_factory=dict)
    last: Outcome | None = None

    def outcomes(self) -> list[Outcome]:
        last = self.last or Outcome("", False, text=f"no MX host of {self.domain} could be reached")
        for r in self.remaining:
            self.done[r] = Outcome(r, False, last.code, last.enhanced, last.text, last.permanent, last.host)
        self.remaining = []
        return list(self.done.values())


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


__all__ = ["DEFAULT_MX_PORT", "MXDelivery", "MXResolver", "OUTBOUND_TLS", "Outcome", "domain_of"]

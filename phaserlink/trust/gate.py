"""The SMTP session's one question: who may print, decided once (docs/trust.md).

:class:`SenderGate` is what the SMTP server asks, twice per transaction:

- at RCPT (:meth:`Checkpoint.rcpt`), with what is known then: the envelope
  (a null reverse-path is a bounce: refused), the quotas (``452 4.7.0``),
  and for ``sender_auth = spf`` printers SPF and ``allowed_senders``
  against MAIL FROM.  Printers that read SPF only with the message
  (``dmarc``, or ``spf`` among other rules) get it checked at the end of
  DATA in the same trip to the verifier as DKIM: one request per message
  instead of two, and DNS answers are cached for their TTL;
- at the end of DATA (:meth:`Checkpoint.message`), with the message: From:,
  Auto-Submitted, DKIM, DMARC, the login's addresses and the trusted
  upstream results.  The stored message gets our Authentication-Results
  first and loses any that carry our authserv-id.  Each printer gets its
  own verdict; the message goes to those that accept it.

Every blocking step (DNS, RSA, reading and rewriting the stored file) runs
in a verifier (:mod:`phaserlink.trust.verifier`): worker processes by
default, else the ``lookup`` pool, so the reactor never waits for DNS and
does not share its GIL with dkimpy.  The verifier only finds facts and
stamps them; the verdicts are made here, in the reactor, by the pure
functions of :mod:`phaserlink.trust.decision`.  The printer side decides
nothing about senders any more: what got a 250 prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import PrinterConfig, SiteConfig
from phaserlink.threads import pools_for
from phaserlink.trust import decision as D
from phaserlink.trust import facts as V  # what the verifier found: plain data, no verification library
from phaserlink.trust import headers as H
from phaserlink.trust import hold
from phaserlink.trust.facts import Stamped
from phaserlink.trust.quota import Quotas
from phaserlink.trust.verifier import IVerifier, verifier_for

if TYPE_CHECKING:
    from phaserlink.trust.dns import Resolver

log = Logger()


@dataclass(frozen=True)
class RcptResult:
    """The printers an address delivers to, and the RCPT reply."""

    printers: tuple[str, ...]
    verdict: D.Verdict  # the reply when printers is empty
    refused: dict[str, D.Verdict] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageResult:
    """The printers that print the message; the end-of-DATA reply if none."""

    printers: tuple[str, ...]
    verdict: D.Verdict
    refused: dict[str, D.Verdict]
    evidence: V.Evidence | None
    held: dict[str, D.Verdict] = field(default_factory=dict)  # printers holding it for a release
    token: str | None = None  # the release token of the held printers
    subject: str = ""

    def summary(self) -> str:
        """For the 250 text: where it prints and where not, and why."""
        printing = [n for n in self.printers if n not in self.held]
        text = f"prints on {', '.join(printing)}" if printing else ""
        if self.held:
            text += ("; " if text else "") + (f"held for a release on {', '.join(self.held)}: "
                                              "see the mail sent to the From: address")
        if self.refused:
            text += "; not on " + "; ".join(f"{n} ({v.text})" for n, v in self.refused.items())
        return text


def _wait(seconds: float) -> str:
    minutes = max(1, int(seconds // 60) + (1 if seconds % 60 else 0))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class SenderGate:
    """Sender verification for one site (one per SMTP factory)."""

    def __init__(self, site: SiteConfig, reactor, resolver: "Resolver | None" = None, queue=None,
                 verifier: IVerifier | None = None):
        self.site = site
        self.reactor = reactor
        self.pools = pools_for(reactor)
        # No resolver of our own: worker processes have theirs, and the
        # lookup pool makes one (importing dnspython) with its first request.
        self.verifier = verifier or verifier_for(site, reactor, resolver)
        self.hostname = site.appliance.hostname
        self.trusted = frozenset(site.appliance.trusted_authserv_ids) - {self.hostname.lower()}
        self.quotas = Quotas(site.appliance.spool / "trust" / "quotas.json", reactor,
                             self.pools.durable if self.pools.threaded else None)
        self.release_mailer = hold.ReleaseMailer(queue, self.hostname, site.appliance.status_sender, reactor)
        #: Who holds and releases jobs (the printer side: PrinterService);
        #: without one, ``unauthenticated = hold`` refuses as ``refuse`` does.
        self.releaser = None

    def release_token(self, address: str) -> str | None:
        """The token if *address* is one of our release addresses."""
        return hold.token_of(address, self.hostname)

    def transaction(self, client_ip: str, helo: str, mail_from: str, user: str | None,
                    from_relay: bool) -> "Checkpoint":
        return Checkpoint(self, client_ip, helo, mail_from, user, from_relay)


class Checkpoint:
    """One MAIL transaction's verification state."""

    def __init__(self, gate: SenderGate, client_ip: str, helo: str, mail_from: str, user: str | None,
                 from_relay: bool):
        self.gate = gate
        self.client_ip = client_ip
        self.helo = helo
        self.mail_from = mail_from
        self.user = user
        self.from_relay = from_relay
        self._spf: V.SPFResult | None = None
        self._spf_started = False
        self._spf_wanted = False  # a printer decided at the end of DATA reads SPF
        self._spf_waiters: list[defer.Deferred] = []

    # -- SPF, once per transaction ---------------------------------------------------

    def _start_spf(self) -> None:
        if self._spf_started:
            return
        self._spf_started = True
        gate = self.gate

        def done(result: V.SPFResult) -> None:
            self._spf = result
            waiters, self._spf_waiters = self._spf_waiters, []
            for w in waiters:
                w.callback(result)

        def failed(f) -> None:
            log.failure("spf check of <{sender}> failed", f, sender=self.mail_from)
            done(V.SPFResult(V.TEMPERROR, V.domain_of(self.mail_from or self.helo), "mailfrom",
                             self.mail_from, "SPF check failed"))

        gate.verifier.spf(self.client_ip, self.mail_from, self.helo).addCallbacks(done, failed)

    def spf(self) -> "defer.Deferred[V.SPFResult | None]":
        if not self._spf_started:
            return defer.succeed(None)
        if self._spf is not None:
            return defer.succeed(self._spf)
        d: defer.Deferred = defer.Deferred()
        self._spf_waiters.append(d)
        return d

    # -- RCPT -------------------------------------------------------------------------

    def rcpt(self, printers: tuple[PrinterConfig, ...]) -> "defer.Deferred[RcptResult]":
        gate = self.gate
        refused: dict[str, D.Verdict] = {}
        pending: list[PrinterConfig] = []
        accepted: list[str] = []
        for p in printers:
            verdict = D.loop_check(p, self.mail_from) or self._quota(p)
            if verdict is not None:
                refused[p.name] = verdict
                continue
            if D.needs_spf(p) and self.mail_from:
                if D.needs_message(p):
                    self._spf_wanted = True  # checked with the message, in the same trip
                else:
                    self._start_spf()  # decided now
            if D.needs_message(p):
                accepted.append(p.name)
            else:
                pending.append(p)
        if not pending:
            return defer.succeed(self._rcpt_result(accepted, refused))

        def decided(spf: V.SPFResult | None) -> RcptResult:
            for p in pending:
                verdict = D.at_rcpt(p, self.mail_from, spf)
                if verdict.accepted:
                    accepted.append(p.name)
                else:
                    refused[p.name] = verdict
            return self._rcpt_result(accepted, refused)

        del gate
        return self.spf().addCallback(decided)

    def _quota(self, p: PrinterConfig) -> D.Verdict | None:
        quotas, limit = self.gate.quotas, self.gate.site.appliance.max_jobs_per_hour
        wait = quotas.over_site(limit)
        if wait is not None:
            return D.Verdict(452, "4.7.0", f"this site prints at most {limit} jobs per hour; "
                                           f"try again in {_wait(wait)}")
        wait = quotas.over_sender(p.name, self.mail_from, p.max_jobs_per_sender)
        if wait is not None:
            assert p.max_jobs_per_sender is not None
            jobs, _window = p.max_jobs_per_sender
            return D.Verdict(452, "4.7.0", f"<{self.mail_from}> has sent its {jobs} jobs to {p.name} for now; "
                                           f"try again in {_wait(wait)}")
        return None

    @staticmethod
    def _rcpt_result(accepted: list[str], refused: dict[str, D.Verdict]) -> RcptResult:
        if accepted:
            return RcptResult(tuple(accepted), D.ACCEPT, refused)
        return RcptResult((), _worst(refused), refused)

    # -- end of DATA -------------------------------------------------------------------

    def message(self, printers: tuple[str, ...], delivery, skip: int) -> "defer.Deferred[MessageResult]":
        """Verify the message being written by *delivery* (its first *skip*
        bytes are our Received line), decide per printer, and stamp our
        Authentication-Results into the stored copy."""
        gate = self.gate
        configs = [gate.site.printers[n] for n in printers]
        checks = V.Checks(
            dkim=any(D.needs_dkim(p) for p in configs),
            dmarc=any("dmarc" in p.sender_auth for p in configs),
            upstream=self.from_relay and bool(gate.trusted),
            arc=bool(gate.trusted),
        )

        session = D.Session(self.mail_from, self.user)
        path = delivery.flushed_path()

        def examine(spf: V.SPFResult | None):
            query = (self.client_ip, self.mail_from, self.helo) if spf is None and self._spf_wanted else None
            return gate.verifier.examine(path, skip, spf, checks, gate.trusted, gate.hostname, query)

        def stamped(found: Stamped):
            delivery.rewritten(found.size, found.lines_delta)
            result = _decide(gate, found, configs, session)
            if result.token is None:
                return result

            def inserted(changed: tuple[int, int]) -> MessageResult:
                delivery.rewritten(*changed)
                return result

            field = hold.hold_field(result.token, list(result.held))
            return gate.verifier.insert(path, found.hold_at, field).addCallback(inserted)

        def decided(result: MessageResult) -> MessageResult:
            log.info("smtp <{sender}> from {ip}: prints on {ok}{held}{not_ok}",
                     sender=self.mail_from, ip=self.client_ip, ok=",".join(result.printers) or "none",
                     held=f" (held for a release: {','.join(result.held)})" if result.held else "",
                     not_ok="".join(f"; not {n}: {v.code} {v.status} {v.text}" for n, v in result.refused.items()))
            return result

        return self.spf().addCallback(examine).addCallback(stamped).addCallback(decided)

    def committed(self, result: MessageResult) -> "defer.Deferred[None]":
        """The message is durable: count it against the quotas; ask the
        author to release what is held.  The 250 waits for the Deferred
        (the counts on disk), so a kill -9 right after it loses no count."""
        gate = self.gate
        counted = []
        for name in result.printers:
            p = gate.site.printers[name]
            counted.append(gate.quotas.count(name, self.mail_from, p.max_jobs_per_sender,
                                             gate.site.appliance.max_jobs_per_hour))
        authenticated = [n for n in result.printers if n not in result.held
                         and gate.site.printers[n].sender_auth != ("none",)]
        if result.refused and authenticated and result.evidence is not None and result.evidence.author:
            gate.release_mailer.send_refusals(result.evidence.author, result.subject, list(result.printers),
                                              {n: v.text for n, v in result.refused.items()})
        if result.held and result.token and result.evidence is not None and result.evidence.author:
            first = gate.site.printers[next(iter(result.held))]
            why = next(iter(result.held.values())).text.split(": ", 1)[-1]
            gate.release_mailer.send(result.evidence.author, result.token, list(result.held), result.subject,
                                     why, _human(first.hold_timeout))
        return defer.DeferredList(counted, consumeErrors=True).addCallback(lambda _: None)

    # -- releases (docs/trust.md) -------------------------------------------------------

    def release_rcpt(self, token: str) -> D.Verdict:
        """RCPT TO:<release+TOKEN@hostname>."""
        releaser = self.gate.releaser
        if not self.mail_from:
            return D.Verdict(550, "5.7.1", "a bounce or notification (null reverse-path) releases nothing")
        if releaser is None or not releaser.is_held(token):
            return D.Verdict(550, "5.1.1", "no held print job with this release address (released, or expired)")
        return D.Verdict(250, "2.1.5", "Ok, this releases your held print job")

    @staticmethod
    def is_automatic(head: bytes) -> str | None:
        """Why a message to a release address is a machine's (an auto-reply
        to the release mail), or None: it must not release the job."""
        keyword = H.auto_submitted(H.split_head(head.replace(b"\r\n", b"\n"))[1])
        return f"an automatic message (Auto-Submitted: {keyword})" if keyword else None

    def release(self, token: str) -> None:
        releaser = self.gate.releaser
        if releaser is not None:
            releaser.release(token)


def _decide(gate: SenderGate, found: Stamped, configs: list[PrinterConfig],
            session: D.Session) -> MessageResult:
    """The verdict of each printer on what the verifier found (pure
    functions of frozen config, in the reactor: microseconds)."""
    evidence = found.evidence
    accepted, refused, held = [], {}, {}
    for p in configs:
        verdict = D.at_message(p, session, evidence, gate.site.users)
        if verdict.accepted:
            accepted.append(p.name)
        elif verdict.holdable and p.unauthenticated == "hold" and gate.releaser is not None:
            accepted.append(p.name)
            held[p.name] = verdict
        else:
            refused[p.name] = verdict
    token = hold.new_token() if held else None
    return MessageResult(tuple(accepted), D.ACCEPT if accepted else _worst(refused), refused, evidence,
                         held, token, found.subject)


def _human(seconds: float) -> str:
    hours = seconds / 3600
    if hours >= 1 and hours == int(hours):
        return f"{int(hours)} hour{'s' if hours != 1 else ''}"
    return f"{int(seconds // 60)} minutes"


def _worst(refused: dict[str, D.Verdict]) -> D.Verdict:
    """The reply when no printer takes the message: a temporary refusal
    wins (a retry may print), else the first printer's."""
    verdicts = list(refused.values())
    temporary = [v for v in verdicts if v.temporary]
    return (temporary or verdicts)[0]

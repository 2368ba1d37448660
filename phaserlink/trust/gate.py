"""The SMTP session's one question: who may print, decided once (docs/trust.md).

:class:`SenderGate` is what the SMTP server asks, twice per transaction:

- at RCPT (:meth:`Checkpoint.rcpt`), with what is known then: the envelope
  (a null reverse-path is a bounce: refused), the quotas (``452 4.7.0``),
  and for ``sender_auth = spf`` printers SPF and ``allowed_senders``
  against MAIL FROM.  SPF is started here for every printer that may need
  it, so its DNS look-ups overlap the DATA transfer;
- at the end of DATA (:meth:`Checkpoint.message`), with the message: From:,
  Auto-Submitted, DKIM, DMARC, the login's addresses and the trusted
  upstream results.  The stored message gets our Authentication-Results
  first and loses any that carry our authserv-id.  Each printer gets its
  own verdict; the message goes to those that accept it.

Every blocking step runs in a pool of :mod:`phaserlink.threads` (DNS and
RSA and the header rewrite in ``lookup``), so the reactor never
waits for DNS.  The printer side decides nothing about senders any more:
what got a 250 prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import PrinterConfig, SiteConfig
from phaserlink.threads import pools_for
from phaserlink.trust import decision as D
from phaserlink.trust import headers as H
from phaserlink.trust import verify as V
from phaserlink.trust.dns import Resolver
from phaserlink.trust.quota import Quotas

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

    def summary(self) -> str:
        """For the 250 text: where it prints and where not, and why."""
        text = f"prints on {', '.join(self.printers)}"
        if self.refused:
            text += "; not on " + "; ".join(f"{n} ({v.text})" for n, v in self.refused.items())
        return text


def _wait(seconds: float) -> str:
    minutes = max(1, int(seconds // 60) + (1 if seconds % 60 else 0))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class SenderGate:
    """Sender verification for one site (one per SMTP factory)."""

    def __init__(self, site: SiteConfig, reactor, resolver: Resolver | None = None):
        self.site = site
        self.reactor = reactor
        self.pools = pools_for(reactor)
        self.resolver = resolver or Resolver(site.appliance.dns_servers)
        self.hostname = site.appliance.hostname
        self.trusted = frozenset(site.appliance.trusted_authserv_ids) - {self.hostname.lower()}
        self.quotas = Quotas(site.appliance.spool / "trust" / "quotas.json", reactor,
                             self.pools.durable if self.pools.threaded else None)

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

        gate.pools.lookup(V.check_spf, gate.resolver, self.client_ip, self.mail_from, self.helo) \
            .addCallbacks(done, failed)

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
                self._start_spf()
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

        def examine(spf: V.SPFResult | None):
            return gate.pools.lookup(_examine, gate, delivery, skip, spf, checks)

        def decide(found):
            examined, results_text = found
            evidence = examined.evidence
            session = D.Session(self.mail_from, self.user)
            accepted, refused = [], {}
            for p in configs:
                verdict = D.at_message(p, session, evidence, gate.site.users)
                if verdict.accepted:
                    accepted.append(p.name)
                else:
                    refused[p.name] = verdict
            log.info("smtp <{sender}> from {ip}: {results}; prints on {ok}{not_ok}",
                     sender=self.mail_from, ip=self.client_ip, results=results_text,
                     ok=",".join(accepted) or "none",
                     not_ok="".join(f"; not {n}: {v.code} {v.status} {v.text}" for n, v in refused.items()))
            return MessageResult(tuple(accepted), D.ACCEPT if accepted else _worst(refused), refused, evidence)

        return self.spf().addCallback(examine).addCallback(decide)

    def committed(self, printers: tuple[str, ...]) -> None:
        """The message got its 250: count it against the quotas."""
        gate = self.gate
        for name in printers:
            p = gate.site.printers[name]
            gate.quotas.count(name, self.mail_from, p.max_jobs_per_sender, gate.site.appliance.max_jobs_per_hour)


def _examine(gate: SenderGate, delivery, skip: int, spf: V.SPFResult | None, checks: V.Checks):
    """In a lookup thread: read the stored message back, verify it, and
    rewrite its header block (ours first, forged ones of our id removed).
    The rewrite does not depend on the decision, so it is done here, in the
    same thread hop; a refused message's file is thrown away anyway."""
    data = delivery.read_back()
    examined = V.examine(gate.resolver, data, skip, spf, checks, gate.trusted, gate.hostname)
    ours = len(H.split_head(data[:skip])[1]) if skip else 0  # Return-Path, Received
    field = V.results_field(gate.hostname, examined.evidence)
    delivery.replace_head(examined.head_len, H.rewrite_head(examined.fields, gate.hostname, field, keep_first=ours),
                          data)
    return examined, field.decode("utf-8", "replace").split(":", 1)[1].strip().replace("\n\t", " ")


def _worst(refused: dict[str, D.Verdict]) -> D.Verdict:
    """The reply when no printer takes the message: a temporary refusal
    wins (a retry may print), else the first printer's."""
    verdicts = list(refused.values())
    temporary = [v for v in verdicts if v.temporary]
    return (temporary or verdicts)[0]

"""Who may print: the one decision, per printer, with its SMTP reply (docs/trust.md).

A printer's ``sender_auth`` lists what makes a sender authentic, any one
being enough:

``dmarc``
    the From: domain is authenticated by a passing DKIM signature or a
    passing SPF check aligned with it (relaxed unless the domain's DMARC
    record says ``adkim=s`` / ``aspf=s``), whatever policy (even ``p=none``,
    even no record) the domain publishes;
``dkim``
    a passing DKIM signature whose ``d=`` is the From: domain;
``spf``
    the MAIL FROM domain passes SPF for the client's IP address (then
    ``allowed_senders`` is matched against MAIL FROM, and the decision is
    made at RCPT);
``login``
    the session is SMTP-AUTH authenticated as a ``[user:NAME]`` whose
    ``addresses`` include the From: address;
``none``
    no verification (today's behaviour; for trusted networks only).

``allowed_senders`` is matched against the From: address (the one a person
sees, the one DMARC authenticates), except for ``sender_auth = spf`` alone.

The replies (RFC 3463 / RFC 7372 codes):

- not an allowed sender, no single From: address, a bounce (null
  reverse-path) or an automatic reply (Auto-Submitted): ``550 5.7.1``;
- a DKIM rule failed: ``550 5.7.20`` (no passing signature) or ``5.7.22``
  (none by the author's domain); SPF: ``550 5.7.23``; DMARC, or several
  rules: ``550 5.7.26``; login: ``550 5.7.1``;
- DNS did not answer when its answer could have made the sender authentic:
  ``451 4.7.24`` (SPF) or ``451 4.7.0``: the sender's MTA tries again, and
  the same message prints once DNS is back.  Never a 250, never a 5xx.

The functions here are pure: the facts come from
:mod:`phaserlink.trust.verify`, the SMTP session only maps the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from phaserlink.config import PrinterConfig, UserConfig, sender_matches
from phaserlink.trust.facts import PASS, TEMPERROR, Evidence, SPFResult, domain_of


@dataclass(frozen=True)
class Verdict:
    """One printer's answer for one message."""

    code: int
    status: str
    text: str
    holdable: bool = False  # an allowed sender not authenticated: ``unauthenticated = hold`` may hold it

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


ACCEPT = Verdict(250, "2.1.5", "Ok")


def needs_message(printer: PrinterConfig) -> bool:
    """False when the decision can be made at RCPT (``sender_auth = spf``)."""
    return tuple(printer.sender_auth) != ("spf",)


def needs_spf(printer: PrinterConfig) -> bool:
    return "spf" in printer.sender_auth or "dmarc" in printer.sender_auth


def needs_dkim(printer: PrinterConfig) -> bool:
    return "dkim" in printer.sender_auth or "dmarc" in printer.sender_auth


# -- at RCPT -----------------------------------------------------------------------------


def loop_check(printer: PrinterConfig, mail_from: str) -> Verdict | None:
    """A bounce to a printer address: never printed, never answered.

    Not for ``output = pull`` mailboxes: the appliance does not print
    those, their own client reads them (the status mail a sender's
    ``phaserlink send --wait`` reads back comes from the null sender)."""
    if not mail_from and printer.output != "pull":
        return Verdict(550, "5.7.1", f"a bounce or notification (null reverse-path) is never printed "
                                     f"on {printer.name}")
    return None


def at_rcpt(printer: PrinterConfig, mail_from: str, spf: SPFResult | None) -> Verdict:
    """The RCPT decision of a ``sender_auth = spf`` printer (others: ACCEPT,
    decided at the end of DATA)."""
    if needs_message(printer):
        return ACCEPT
    if not sender_matches(mail_from, printer.allowed_senders):
        return _not_allowed(printer, mail_from)
    assert spf is not None
    return _first([_spf_rule(spf, None)], printer, mail_from) or ACCEPT


# -- at the end of DATA ---------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """What the SMTP session knows about its client."""

    mail_from: str
    user: str | None  # the SMTP AUTH login, if any


def at_message(printer: PrinterConfig, session: Session, evidence: Evidence,
               users: Mapping[str, UserConfig]) -> Verdict:
    """The end-of-DATA decision for one printer."""
    if evidence.auto_submitted is not None and printer.output != "pull":
        return Verdict(550, "5.7.1", f"an automatic message (Auto-Submitted: {evidence.auto_submitted}) "
                                     f"is never printed on {printer.name}")
    rules = tuple(printer.sender_auth)
    if rules == ("spf",):
        return ACCEPT  # decided at RCPT, against MAIL FROM
    author = evidence.author
    if rules == ("none",):
        identity = author or session.mail_from
        if not sender_matches(identity, printer.allowed_senders):
            return _not_allowed(printer, identity)
        return ACCEPT
    if author is None or "@" not in author:
        n = len(evidence.from_addresses)
        return Verdict(550, "5.7.1", f"a message to {printer.name} needs exactly one From: address "
                                     f"(this one has {n})")
    if not sender_matches(author, printer.allowed_senders):
        return _not_allowed(printer, author)
    outcomes = []
    for rule in rules:
        if rule == "dmarc":
            outcomes.append(_dmarc_rule(evidence, author))
        elif rule == "dkim":
            outcomes.append(_dkim_rule(evidence, author))
        elif rule == "spf":
            outcomes.append(_spf_rule(evidence.spf, evidence))
        elif rule == "login":
            outcomes.append(_login_rule(session, author, users))
    return _first(outcomes, printer, author) or ACCEPT


# -- the rules --------------------------------------------------------------------------------

# An outcome: None = the rule passed; else (temporary, status, reason).
Outcome = "tuple[bool, str, str] | None"


def _dmarc_rule(evidence: Evidence, author: str):
    domain = domain_of(author)
    if any(domain in u.dmarc_pass or domain in u.dkim_pass for u in evidence.upstream):
        return None
    dmarc = evidence.dmarc
    if dmarc is not None and dmarc.aligned and dmarc.result in (PASS, "none"):
        return None
    spf_temp = evidence.spf is not None and evidence.spf.result == TEMPERROR
    if (dmarc is not None and dmarc.result == TEMPERROR) or evidence.dkim_temperror() or spf_temp:
        why = dmarc.comment if dmarc is not None and dmarc.result == TEMPERROR else "DNS did not answer"
        return (True, "4.7.0", f"DMARC check of {domain} could not be completed ({why})")
    policy = f" (its policy: p={dmarc.policy})" if dmarc is not None and dmarc.policy else ""
    return (False, "5.7.26", f"DMARC: no DKIM signature or SPF pass aligned with {domain}{policy}")


def _dkim_rule(evidence: Evidence, author: str):
    domain = domain_of(author)
    if any(domain in u.dkim_pass for u in evidence.upstream):
        return None
    if any(r.result == PASS and r.domain == domain for r in evidence.dkim):
        return None
    if evidence.dkim_temperror():
        return (True, "4.7.0", "a DKIM key could not be looked up (DNS did not answer)")
    if not evidence.dkim:
        return (False, "5.7.20", "no DKIM signature")
    passing = [r.domain for r in evidence.dkim if r.result == PASS]
    if passing:
        return (False, "5.7.22", f"no valid DKIM signature by {domain} (signed by {', '.join(passing)})")
    return (False, "5.7.20", f"no passing DKIM signature ({evidence.dkim[0].comment or 'did not verify'})")


def _spf_rule(spf: SPFResult | None, evidence: Evidence | None):
    if spf is None:
        return (False, "5.7.23", "SPF was not checked")
    if evidence is not None and any(spf.domain in u.spf_pass for u in evidence.upstream):
        return None
    if spf.result == PASS and spf.identity == "mailfrom":
        return None
    if spf.result == TEMPERROR:
        return (True, "4.7.24", f"SPF check of {spf.domain} could not be completed: {spf.explanation}")
    return (False, "5.7.23", f"SPF {spf.result} for {spf.domain}" + (f" ({spf.explanation})" if spf.explanation else ""))


def _login_rule(session: Session, author: str, users: Mapping[str, UserConfig]):
    user = users.get(session.user) if session.user else None
    if user is not None and author.lower() in user.addresses:
        return None
    if session.user:
        return (False, "5.7.1", f"login {session.user} may not send as {author}")
    return (False, "5.7.1", "not logged in (SMTP AUTH)")


def _first(outcomes: list, printer: PrinterConfig, identity: str) -> Verdict | None:
    """None if any rule passed; else the refusal (temporary wins: a retry may pass)."""
    if any(o is None for o in outcomes):
        return None
    temps = [o for o in outcomes if o[0]]
    reasons = "; ".join(o[2] for o in outcomes)
    if temps:
        return Verdict(451, temps[0][1], f"<{identity}> cannot be verified for printer {printer.name} now, "
                                         f"try again later: {reasons}")
    status = outcomes[0][1] if len(outcomes) == 1 else "5.7.26"
    return Verdict(550, status, f"<{identity}> is not authenticated for printer {printer.name}: {reasons}",
                   holdable=True)


def _not_allowed(printer: PrinterConfig, identity: str) -> Verdict:
    return Verdict(550, "5.7.1", f"sender <{identity}> is not allowed to print on {printer.name}")

"""What can be proved about a message's sender: SPF, DKIM, DMARC, ARC (docs/trust.md).

This module only finds facts; :mod:`phaserlink.trust.decision` decides with
them.  Everything here blocks (DNS, RSA) and runs in a verifier worker
process (:mod:`phaserlink.trust.verifier`; the ``lookup`` pool of
:mod:`phaserlink.threads` with ``verify_processes = 0``), never in the
reactor thread; the evaluation itself is left to the libraries
the mail world uses, so there is no crypto and no DNS parsing of our own:

- SPF (RFC 7208): pyspf, for the client's IP, the MAIL FROM (or the HELO
  name for the null sender) and the HELO name;
- DKIM (RFC 6376) and ARC (RFC 8617): dkimpy, each signature on its own;
- DMARC (RFC 7489): authheaders finds the policy record (at the From:
  domain or its organizational domain, the Public Suffix List telling which
  that is); alignment of the passing identifiers is checked here, with the
  record's ``adkim`` / ``aspf`` modes (relaxed when no record says);
- Authentication-Results (RFC 8601): authres writes ours and reads those of
  the upstream verifiers a site trusts.

A DNS failure is never a "fail": it is recorded as ``temperror`` and the
decision answers ``451`` so that the sender's MTA tries again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import authheaders
import authres
import authres.arc
import authres.dmarc
import dkim
import spf

from phaserlink.trust import headers as H
from phaserlink.trust.dns import DNSTempError, Resolver, using
# The facts found here, kept where the SMTP process can read them without
# these libraries (phaserlink/trust/facts.py); the names stay importable here.
from phaserlink.trust.facts import (  # noqa: F401
    FAIL, NEUTRAL, NONE, PASS, PERMERROR, SOFTFAIL, TEMPERROR,
    Checks, DKIMResult, DMARCResult, Evidence, SPFResult, Upstream, domain_of,
)

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    SPF_TIME_LIMIT,
    MAX_SIGNATURES,
    DKIM_PARSED_KEYS as MAX_PARSED_KEYS,
)

#: RSA keys shorter than this do not verify (RFC 8301: 1024 at least).
MIN_KEY_BITS = 1024


def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 3.2), from the Public Suffix List."""
    try:
        return authheaders.get_org_domain(domain) or domain
    except Exception:
        return domain


def aligned(a: str, b: str, mode: str) -> bool:
    """Identifier alignment: equal (strict) or same organizational domain (relaxed)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if mode == "s":
        return a == b
    return a == b or org_domain(a) == org_domain(b)


# -- SPF ----------------------------------------------------------------------------


def check_spf(resolver: Resolver, client_ip: str, mail_from: str, helo: str) -> SPFResult:
    """RFC 7208 check_host() for the client, MAIL FROM (or HELO for <>)."""
    identity = "mailfrom" if mail_from else "helo"
    sender = mail_from or f"postmaster@{helo}"
    domain = domain_of(sender)
    try:
        with using(resolver):
            q = spf.query(i=client_ip, s=sender, h=helo or domain, timeout=resolver.timeout,
                          querytime=SPF_TIME_LIMIT)
            result, _code, explanation = q.check()
    except DNSTempError as e:
        return SPFResult(TEMPERROR, domain, identity, mail_from, str(e))
    except Exception as e:  # pyspf's own errors are results; anything else is not a pass
        return SPFResult(PERMERROR, domain, identity, mail_from, f"SPF check failed: {e}")
    return SPFResult(result, domain, identity, mail_from, explanation or "")


# -- DKIM ---------------------------------------------------------------------------

# dkimpy parses the key record (base64, then ASN.1 in Python) for every
# signature it checks: ~50 us, the same work for every message of a domain.
# The parse is a pure function of the record's text, and the text is fetched
# for each signature through the resolver's TTL cache; so parsed keys are
# kept by that text: a record seen before is not parsed again, and a key
# rotated under the same selector is seen as soon as its old record's TTL
# ends.  dkimpy looks ``evaluate_pk`` up as a module global at each call
# (as pyspf does ``DNSLookup``, see trust/dns.py); errors are not kept.
_evaluate_pk = dkim.evaluate_pk
_parsed_keys: dict[bytes, tuple] = {}


def _cached_evaluate_pk(name, s):
    if not isinstance(s, (bytes, str)) or not s:
        return _evaluate_pk(name, s)
    text = s if isinstance(s, bytes) else s.encode("ascii", "replace")
    parsed = _parsed_keys.get(text)
    if parsed is None:
        parsed = _evaluate_pk(name, s)
        if len(_parsed_keys) >= MAX_PARSED_KEYS:
            _parsed_keys.clear()  # bounded; refilled by the next messages
        _parsed_keys[text] = parsed
    return parsed


dkim.evaluate_pk = _cached_evaluate_pk


def _tags(value: bytes) -> dict[bytes, bytes]:
    out = {}
    for part in value.split(b";"):
        key, eq, val = part.partition(b"=")
        if eq:
            out[key.strip()] = re.sub(rb"\s+", b"", val)
    return out


def check_dkim(resolver: Resolver, message: bytes) -> tuple[DKIMResult, ...]:
    """Every DKIM-Signature (up to MAX_SIGNATURES), each verified on its own."""
    try:
        d = dkim.DKIM(message, minkey=MIN_KEY_BITS, timeout=resolver.timeout)
    except Exception:
        return ()
    sigs = [value for name, value in d.headers if name.lower() == b"dkim-signature"][:MAX_SIGNATURES]
    results = []
    for idx, value in enumerate(sigs):
        tags = _tags(value)
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        try:
            ok = d.verify(idx=idx, dnsfunc=resolver.dkim_txt)
        except DNSTempError as e:
            results.append(DKIMResult(TEMPERROR, domain, selector, str(e)))
            continue
        except dkim.DKIMException as e:
            results.append(DKIMResult(PERMERROR if "key" in str(e).lower() else FAIL, domain, selector, str(e)))
            continue
        except Exception as e:
            results.append(DKIMResult(PERMERROR, domain, selector, f"cannot verify: {e}"))
            continue
        if ok:
            results.append(DKIMResult(PASS, domain, selector))
        else:
            results.append(DKIMResult(FAIL, domain, selector, "signature did not verify"))
    return tuple(results)


# -- DMARC --------------------------------------------------------------------------


def check_dmarc(resolver: Resolver, from_domain: str, spf_result: SPFResult | None,
                dkim_results: tuple[DKIMResult, ...]) -> DMARCResult:
    """The From: domain's DMARC result, and whether an aligned identifier passed."""
    try:
        record, _org = authheaders.receiver_record(from_domain, dnsfunc=resolver.dmarc_txt)
    except DNSTempError as e:
        return DMARCResult(TEMPERROR, from_domain, "", False, str(e))
    except Exception as e:
        return DMARCResult(PERMERROR, from_domain, "", False, f"unreadable DMARC record: {e}")
    record = record or {}
    policy = (record.get("p") or "").rstrip("\\")
    adkim = (record.get("adkim") or "r")[:1].lower()
    aspf = (record.get("aspf") or "r")[:1].lower()
    how = ""
    for r in dkim_results:
        if r.passed and aligned(r.domain, from_domain, adkim):
            how = f"DKIM signature of {r.domain}"
            break
    if not how and spf_result is not None and spf_result.passed and spf_result.identity == "mailfrom" \
            and aligned(spf_result.domain, from_domain, aspf):
        how = f"SPF pass of {spf_result.domain}"
    if not policy:
        return DMARCResult(NONE, from_domain, "", bool(how), how or "no DMARC record")
    return DMARCResult(PASS if how else FAIL, from_domain, policy, bool(how),
                       how or f"no aligned DKIM signature or SPF pass for {from_domain}")


# -- upstream verifiers --------------------------------------------------------------


def _upstream_of(parsed: "authres.AuthenticationResultsHeader", ident: str, via: str) -> Upstream:
    dmarc, dkim_, spf_ = set(), set(), set()
    for r in parsed.results:
        if r.result != PASS:
            continue
        props = {(p.type, p.name): (p.value or "").lower() for p in r.properties}
        if r.method == "dmarc" and props.get(("header", "from")):
            dmarc.add(domain_of(props[("header", "from")]))
        elif r.method == "dkim" and (props.get(("header", "d")) or props.get(("header", "i"))):
            dkim_.add(domain_of(props.get(("header", "d")) or props[("header", "i")]))
        elif r.method == "spf" and props.get(("smtp", "mailfrom")):
            spf_.add(domain_of(props[("smtp", "mailfrom")]))
    return Upstream(ident, via, frozenset(dmarc), frozenset(dkim_), frozenset(spf_))


def trusted_results(fields: list[H.Field], trusted: frozenset[str]) -> list[Upstream]:
    """The Authentication-Results of trusted authserv-ids (the caller has
    made sure the client is one of the site's relays)."""
    out = []
    for f in fields:
        if f.name == H.AUTH_RESULTS:
            ident = H.authserv_id(f)
            if ident in trusted:
                parsed = H.parse_results(f)
                if parsed is not None:
                    out.append(_upstream_of(parsed, ident, "Authentication-Results"))
    return out


def check_arc(resolver: Resolver, message: bytes, fields: list[H.Field],
              trusted: frozenset[str]) -> tuple[str, list[Upstream]]:
    """ARC (RFC 8617): a valid chain whose newest ARC-Authentication-Results
    is by a trusted authserv-id vouches for what that hop verified.

    The authserv-id is only text; what the seal proves is its ``d=`` domain.
    So the newest seal must be by the authserv-id's own domain (the id or a
    parent of it: ``mx.example.com`` sealed by ``d=example.com``), else
    anyone could seal with their own key and write a trusted id.  Then the
    chain is believed from any client (a mailing list on the Internet)."""
    sets = [f for f in fields if f.name == "arc-authentication-results"]
    if not sets:
        return NONE, []
    try:
        cv, results, _comment = dkim.arc_verify(message, dnsfunc=resolver.dkim_txt,
                                                 timeout=resolver.timeout, minkey=MIN_KEY_BITS)
    except DNSTempError:
        return TEMPERROR, []
    except Exception:
        return FAIL, []
    cv = cv.decode() if isinstance(cv, bytes) else str(cv)
    if cv != PASS or not trusted:
        return cv, []

    def instance(f: H.Field) -> int:
        m = re.match(r"\s*i\s*=\s*(\d+)", f.value)
        return int(m.group(1)) if m else 0

    newest = max(sets, key=instance)
    ident = H.authserv_id(newest)
    parsed = H.parse_results(newest)
    if ident not in trusted or parsed is None:
        return cv, []
    seals = [r for r in results or () if r.get("instance") == instance(newest)]
    sealer = (seals[0].get("as-domain") or b"").decode("ascii", "replace").lower() if seals else ""
    if not sealer or not (ident == sealer or ident.endswith("." + sealer)):
        return cv, []
    return cv, [_upstream_of(parsed, ident, "ARC")]


# -- the whole message ---------------------------------------------------------------


@dataclass
class Examined:
    """A stored message's header block and what was found in it."""

    head_len: int
    fields: list[H.Field]
    evidence: Evidence
    ours: int = 0  # how many of the fields are our own (Return-Path, Received)
    notes: list[str] = field(default_factory=list)


def examine(resolver: Resolver, data: bytes, skip: int, spf_result: SPFResult | None, checks: Checks,
            trusted: frozenset[str], our_id: str, whole: Callable[[], bytes] | None = None) -> Examined:
    """Verify the stored message *data* (LF line ends; its first *skip*
    bytes are our Received line, which the sender never signed).

    *data* may be only the message's beginning, through its header block
    (:func:`phaserlink.trust.stamp.read_head`), when *whole* reads all of
    it: only a DKIM signature to verify or an ARC set to check needs the
    body (dkimpy takes the message as one bytes object), so an unsigned
    mail of 100 MB of photos is never read into memory."""
    head_len, fields = H.split_head(data)
    ours = len(H.split_head(data[:skip])[1]) if skip else 0  # Return-Path, Received: whole fields
    message_fields = fields[ours:]
    authors = tuple(H.from_addresses(message_fields))
    auto = H.auto_submitted(message_fields)
    trusted = trusted - {our_id.lower()}  # our own id is never trusted from outside (RFC 8601 5)
    names = {f.name for f in message_fields}
    uncertain = head_len >= H.MAX_HEADER_BLOCK  # the end of the header block was not seen
    needs_dkim = (checks.dkim or checks.dmarc) and ("dkim-signature" in names or uncertain)
    needs_arc = checks.arc and bool(trusted) and "arc-authentication-results" in names
    wire = None
    if needs_dkim or needs_arc:
        if whole is not None:
            data = whole()
        wire = re.sub(rb"\r?\n", b"\r\n", data[skip:])
    dkim_results: tuple[DKIMResult, ...] = ()
    if wire is not None and needs_dkim:
        dkim_results = check_dkim(resolver, wire)
    dmarc = None
    if checks.dmarc and len(authors) == 1 and "@" in authors[0]:
        dmarc = check_dmarc(resolver, domain_of(authors[0]), spf_result, dkim_results)
    upstream: list[Upstream] = []
    arc = ""
    if checks.upstream and trusted:
        upstream = trusted_results(message_fields, trusted)
    if checks.arc and trusted:  # without an ARC set it answers "none" before reading the message
        arc, sealed = check_arc(resolver, wire or b"", message_fields, trusted)
        upstream += sealed
    evidence = Evidence(authors, auto, spf_result, dkim_results, dmarc, tuple(upstream), arc)
    return Examined(head_len, fields, evidence, ours)


def results_field(our_id: str, evidence: Evidence | None) -> bytes:
    """Our ``Authentication-Results:`` field (RFC 8601), folded."""
    results: list = []
    if evidence is not None:
        if evidence.spf is not None:
            s = evidence.spf
            if s.identity == "mailfrom":
                results.append(authres.SPFAuthenticationResult(result=s.result, smtp_mailfrom=s.mail_from))
            else:
                results.append(authres.SPFAuthenticationResult(result=s.result, smtp_helo=s.domain))
        for r in evidence.dkim:
            results.append(authres.DKIMAuthenticationResult(
                result=r.result, header_d=r.domain or None, header_s=r.selector or None,
                result_comment=_comment(r.comment)))
        if evidence.dmarc is not None:
            m = evidence.dmarc
            results.append(authres.dmarc.DMARCAuthenticationResult(
                result=m.result, header_from=m.from_domain, policy=m.policy or None,
                result_comment=_comment(m.comment) if m.result != PASS else None))
        if evidence.arc:
            results.append(authres.arc.ARCAuthenticationResult(result=evidence.arc))
    header = authres.AuthenticationResultsHeader(authserv_id=our_id, results=results)
    return H.fold(str(header))


def _comment(text: str) -> str | None:
    """A result comment without the characters that would end it."""
    text = re.sub(r"[()\\\r\n]", " ", text or "").strip()
    return text[:120] or None

"""What sender verification finds, as plain data (docs/trust.md).

:mod:`phaserlink.trust.verify` finds these facts with pyspf, dkimpy and
authheaders, in a verifier worker process (or the ``lookup`` pool with
``verify_processes = 0``); :mod:`phaserlink.trust.decision` and
:mod:`phaserlink.trust.gate` decide with them in the SMTP process.  They
live here, apart from the code that finds them, so that the SMTP process can
read them (and unpickle a worker's answer) without importing those
libraries and dnspython: with worker processes it never does (about 3.5 MB
of the appliance's resident memory).
"""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, NONE, TEMPERROR, PERMERROR, NEUTRAL, SOFTFAIL = (
    "pass", "fail", "none", "temperror", "permerror", "neutral", "softfail")


@dataclass(frozen=True)
class SPFResult:
    result: str  # pass, fail, softfail, neutral, none, temperror, permerror
    domain: str  # the domain checked (of MAIL FROM, or the HELO name)
    identity: str  # mailfrom or helo
    mail_from: str
    explanation: str = ""

    @property
    def passed(self) -> bool:
        return self.result == PASS


@dataclass(frozen=True)
class DKIMResult:
    result: str  # pass, fail, temperror, permerror
    domain: str  # d=
    selector: str  # s=
    comment: str = ""

    @property
    def passed(self) -> bool:
        return self.result == PASS


@dataclass(frozen=True)
class DMARCResult:
    result: str  # pass, fail, none (no record), temperror, permerror
    from_domain: str
    policy: str  # p= of the record that applied, '' without one
    aligned: bool  # an aligned identifier passed (relaxed unless the record says strict)
    comment: str = ""


@dataclass(frozen=True)
class Upstream:
    """Results believed from a trusted verifier in front of us."""

    authserv_id: str
    via: str  # "Authentication-Results" or "ARC"
    dmarc_pass: frozenset[str] = frozenset()  # header.from domains with dmarc=pass
    dkim_pass: frozenset[str] = frozenset()  # header.d domains with dkim=pass
    spf_pass: frozenset[str] = frozenset()  # smtp.mailfrom domains with spf=pass


@dataclass(frozen=True)
class Evidence:
    """Everything found about one message; what the decision reads."""

    from_addresses: tuple[str, ...]
    auto_submitted: str | None
    spf: SPFResult | None
    dkim: tuple[DKIMResult, ...] = ()
    dmarc: DMARCResult | None = None
    upstream: tuple[Upstream, ...] = ()
    arc: str = ""  # the chain's cv= (pass, fail, none) when ARC was checked

    @property
    def author(self) -> str | None:
        return self.from_addresses[0] if len(self.from_addresses) == 1 else None

    @property
    def author_domain(self) -> str | None:
        author = self.author
        return author.rpartition("@")[2] if author and "@" in author else None

    def dkim_temperror(self) -> bool:
        return any(r.result == TEMPERROR for r in self.dkim)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


@dataclass(frozen=True)
class Checks:
    """Which checks a message needs (the union over its printers' rules)."""

    dkim: bool = False
    dmarc: bool = False
    upstream: bool = False  # the client is a relay: believe trusted Authentication-Results
    arc: bool = False  # trusted ids are configured: check ARC chains


@dataclass(frozen=True)
class Stamped:
    """What :func:`phaserlink.trust.stamp.examine_file` found and how it
    changed the file."""

    evidence: Evidence
    size: int  # the file's size after the rewrite
    lines_delta: int  # line ends added (negative: removed) by the rewrite
    hold_at: int  # the offset just after our Authentication-Results (where a hold field goes)
    subject: str

"""DNS for sender verification: one resolver, a time-out, answers cached (docs/trust.md).

SPF, DKIM and DMARC all ask DNS (TXT records, and A/MX/PTR for SPF).  The
libraries that evaluate them (pyspf, dkimpy, authheaders) only do blocking
look-ups, so the whole check runs in a verifier worker process (or the
``lookup`` pool of :mod:`phaserlink.threads`), never in the reactor thread;
this module gives those libraries the same :class:`Resolver`:

- pointed at ``[appliance] dns_servers`` (``HOST[:PORT] ...``), or the
  system resolver (``/etc/resolv.conf``) when that is not set, so that tests
  and sites can use their own DNS server;
- with :data:`QUERY_TIMEOUT` per query, so a silent server costs seconds,
  not the 20-30 s the libraries default to;
- with dnspython's cache, which keeps each answer (also "no such name") for
  its TTL, so a burst of mail from one domain asks DNS once;
- raising :class:`DNSTempError` for what RFC 7208 calls a temperror
  (SERVFAIL, time-out, no server answering), which the decision turns into a
  ``451 4.7.x`` (try again later) rather than a refusal.  "No such name" and
  "no record" are answers, not errors.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import spf

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    QUERY_TIMEOUT,
    MAX_CACHE_TTL,
    DNS_FAST_ANSWERS as MAX_FAST_ANSWERS,
)

class DNSTempError(Exception):
    """DNS did not answer (time-out, SERVFAIL, refused): try again later."""


class _TTLCache(dns.resolver.Cache):
    """dnspython's thread-safe cache, with answers kept at most MAX_CACHE_TTL."""

    def put(self, key, value) -> None:  # type: ignore[override]
        value.expiration = min(value.expiration, time.time() + MAX_CACHE_TTL)
        super().put(key, value)


class Resolver:
    """The look-ups the verifiers need, with time-out and TTL cache.

    *servers* are ``(ip, port)`` pairs; empty means the system resolver.
    Thread-safe: a worker's (or the lookup pool's) threads share one instance.
    """

    def __init__(self, servers: Iterable[tuple[str, int]] = (), timeout: float = QUERY_TIMEOUT):
        servers = tuple(servers)
        if servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [host for host, _ in servers]
            resolver.nameserver_ports = {host: port for host, port in servers}
            resolver.port = servers[0][1]
        else:
            resolver = dns.resolver.Resolver()
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = _TTLCache()
        self.resolver = resolver
        self.timeout = timeout
        self._answers: dict[tuple[str, str], dns.resolver.Answer] = {}

    def query(self, name: str | bytes, rdtype: str) -> "dns.resolver.Answer | None":
        """The answer, None for NXDOMAIN / no data, DNSTempError otherwise."""
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        # Answers still within their TTL, by the name as asked: a hit in
        # dnspython's cache still parses the name and builds a resolution
        # (about 70 us, three or four times per message); this is a dict look-up.
        key = (name.lower(), rdtype)
        hit = self._answers.get(key)
        if hit is not None and hit.expiration > time.time():
            return hit
        try:
            answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False,
                                           lifetime=self.timeout)
            if len(self._answers) >= MAX_FAST_ANSWERS:
                self._answers.clear()  # bounded; the next look-ups fill it again from dnspython's cache
            self._answers[key] = answer
            return answer
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as e:
            raise DNSTempError(f"DNS lookup of {name} {rdtype} failed: {e}") from None
        except dns.exception.DNSException as e:  # a malformed name or answer: not an answer
            raise DNSTempError(f"DNS lookup of {name} {rdtype} failed: {e}") from None

    def txt(self, name: str | bytes) -> list[bytes]:
        """Every TXT record at *name*, each one's strings joined."""
        answer = self.query(name, "TXT")
        if answer is None or answer.rrset is None:
            return []
        return [b"".join(r.strings) for r in answer]

    # -- the call shapes the libraries want ------------------------------------------

    def dkim_txt(self, name: bytes, timeout: float = QUERY_TIMEOUT) -> bytes | None:
        """dkimpy's ``dnsfunc``: the first TXT record at *name* (a key)."""
        records = self.txt(name)
        return records[0] if records else None

    def dmarc_txt(self, name: str) -> str | None:
        """authheaders' ``dnsfunc``: the DMARC record at *name*, as text."""
        for record in self.txt(name):
            text = record.decode("utf-8", "replace")
            if text.lower().startswith("v=dmarc1"):
                return text
        return None

    def spf_lookup(self, name: str, qtype: str, strict=True, timeout: float = QUERY_TIMEOUT) -> list:
        """pyspf's ``DNSLookup``: ``[((name, type), data), ...]``; TempError on failure."""
        try:
            answer = self.query(name, qtype)
        except DNSTempError as e:
            raise spf.TempError(str(e)) from None
        out: list = []
        if answer is None or answer.rrset is None:
            return out
        for rdata in answer:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
        return out


# pyspf looks its DNS function up as a module global at each query; the
# resolver of the check running in this thread answers it (the lookup pool's
# threads may serve different resolvers in tests).
_current = threading.local()
_system: Resolver | None = None


def _spf_dispatch(name, qtype, strict=True, timeout=QUERY_TIMEOUT):
    resolver = getattr(_current, "resolver", None)
    if resolver is None:
        global _system
        if _system is None:
            _system = Resolver()
        resolver = _system
    return resolver.spf_lookup(name, qtype, strict, timeout)


spf.DNSLookup = _spf_dispatch


class using:
    """``with using(resolver):`` makes pyspf in this thread ask *resolver*."""

    def __init__(self, resolver: Resolver):
        self.resolver = resolver

    def __enter__(self) -> Resolver:
        self.previous = getattr(_current, "resolver", None)
        _current.resolver = self.resolver
        return self.resolver

    def __exit__(self, *exc) -> None:
        _current.resolver = self.previous


def parse_server(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (ip, port): :func:`phaserlink.values.parse_dns_server`."""
    from phaserlink.values import parse_dns_server

    return parse_dns_server(text)

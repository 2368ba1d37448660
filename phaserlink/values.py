"""Parsers for the values a person writes, shared by the client and the appliance.

Sizes (``10M``), durations (``5m``), lists (``a, b c``) and ``HOST[:PORT]``
(``[v6]:PORT`` for IPv6) are written the same way in site.ini, in
destinations.ini and on the ``phaserlink`` command line, so they are read
by the same code.  This module imports nothing of the appliance: the client
uses it without loading :mod:`phaserlink.config` (and so without Twisted's
reactor or the password hashing the appliance's config pulls in).

Every parser raises :class:`ValueError` whose text says what is wrong with
the value; the caller adds where it was (site.ini: file, section and key;
destinations.ini: file and section; argparse: the option).
"""

from __future__ import annotations

import ipaddress
import re

KIB = 1024
"""Size suffixes are powers of 1024: ``K`` = 1024 bytes."""

_SIZE_UNITS = {"": 1, "k": KIB, "m": KIB**2, "g": KIB**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*$", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_PORT = re.compile(r"^\d{1,5}$")

MAX_PORT = 65535


def parse_size(text: str) -> int:
    """``10M`` -> 10485760.  Bytes, or a K, M, G suffix (powers of 1024;
    ``10MB``, ``10MiB`` and ``10 m`` mean the same)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (use bytes or a K, M, G suffix)")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]


def parse_duration(text: str) -> float:
    """``90s``, ``5m``, ``4h``, ``5d``, ``250ms`` or plain seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 5m, 4h, 5d)")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def parse_positive_int(text: str) -> int:
    """``3`` -> 3: a whole number of 1 or more (counts: copies, sessions...)."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"{text!r} is not a whole number")
    if int(text) < 1:
        raise ValueError(f"{text!r} must be 1 or more")
    return int(text)


def split_list(text: str) -> list[str]:
    """``a, b c`` -> ``["a", "b", "c"]``: commas and white space both separate."""
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]


def split_host_port(text: str) -> tuple[str, str]:
    """``host:25`` / ``[::1]:25`` / ``host`` / ``::1`` -> (host, port text or "").

    A bare IPv6 address (more than one colon, no brackets) is all host: its
    port, if any, needs the brackets.  Only splits; :func:`parse_host_port`
    checks.
    """
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.removeprefix(":")
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, ""


def parse_port(text: str) -> int:
    """``25`` -> 25; 1..65535 only."""
    text = text.strip()
    if not _PORT.match(text) or not 0 < int(text) <= MAX_PORT:
        raise ValueError(f"{text!r} is not a port number (1-{MAX_PORT})")
    return int(text)


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[IPv6]:PORT`` -> (host, port), *default_port*
    when none is given.  Refuses an empty host, an empty port after the
    colon, an unclosed ``[``, text after ``]`` that is not ``:PORT``, and
    characters no host name or address has (``/``, ``@``, white space)."""
    text = text.strip()
    if text.startswith("["):
        _inside, closed, rest = text[1:].partition("]")
        if not closed:
            raise ValueError(f"{text!r}: '[' without ']' (write [IPv6]:PORT)")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: after ']' only :PORT may follow")
        colon = bool(rest)
    else:
        colon = text.count(":") == 1
    host, port_text = split_host_port(text)
    if not host or any(c in host for c in "/@[] \t"):
        raise ValueError(f"{text!r} is not HOST[:PORT] (IPv6 as [ADDRESS]:PORT)")
    if colon and not port_text:
        raise ValueError(f"{text!r}: the port after ':' is missing")
    if not port_text:
        return host, default_port
    try:
        return host, parse_port(port_text)
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None


def parse_dns_server(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT`` -> (ip, port), port 53 by default;
    the host must be an IP address (a resolver needs an address to ask, not
    a name to resolve).  Here, not with the resolver: reading the config
    must not import dnspython."""
    host, port = parse_host_port(text, 53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: a DNS server is given by its IP address") from None
    return host, port

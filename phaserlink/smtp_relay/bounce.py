"""Delivery status notifications (RFC 3464) for mail the queue gave up on.

A bounce is an ordinary message, ``multipart/report;
report-type=delivery-status`` (RFC 6522): a text part for people, a
``message/delivery-status`` part for programs, and the original message's
headers (``text/rfc822-headers``; never the whole message, which may be a
500 MB print job).  It is written straight into a queue file, line by line,
so building it costs no memory beyond the original's header block.

A bounce is always 7-bit: original headers with 8-bit bytes (a UTF-8
Subject) are quoted-printable encoded, so the bounce can go through any
smarthost, also one without 8BITMIME (the very reason of some bounces).
"""

from __future__ import annotations

import email.utils
import quopri
import re
import secrets
from dataclasses import dataclass
from typing import IO, Iterable

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    BOUNCE_MAX_HEADER_BYTES as MAX_HEADER_BYTES,
)

_UNSAFE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class FailedRecipient:
    address: str
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str  # "smtp; 550 5.1.1 no such user" or a local reason
    remote_mta: str | None = None


def ascii_line(text: str) -> str:
    """One printable ASCII line (header-safe): no CR, LF or 8-bit."""
    return _UNSAFE.sub("?", " ".join(text.split()))


def status_for(code: int | None, enhanced: str | None) -> str:
    """The RFC 3463 status for a failure: the server's own, else derived
    from the reply code; 4.4.7 (delivery time expired) when there was no
    reply at all (connection failures until the queue gave up)."""
    if enhanced:
        return enhanced
    if code is not None and 500 <= code < 600:
        return "5.0.0"
    if code is not None and 400 <= code < 500:
        return "4.0.0"
    return "4.4.7"


def original_headers(path) -> bytes:
    """The header block of a queued message (LF ends), at most MAX_HEADER_BYTES."""
    out = bytearray()
    with open(path, "rb") as f:
        for line in f:
            if line in (b"\n", b"\r\n"):
                break
            if len(out) + len(line) > MAX_HEADER_BYTES:
                break
            out += line.rstrip(b"\r\n") + b"\n"
    return bytes(out)


def write_dsn(
    out: IO[bytes] | "object",
    *,
    reporting_mta: str,
    from_address: str,
    to_address: str,
    arrival: float,
    now: float,
    failed: Iterable[FailedRecipient],
    headers: bytes,
    queue_id: str,
) -> None:
    """Write a complete DSN message to *out* (anything with ``write(bytes)``)."""
    failed = list(failed)
    boundary = f"=_phaserlink_{secrets.token_hex(12)}"
    reporting_mta = ascii_line(reporting_mta)
    lines = [
        f"From: Mail Delivery System <{ascii_line(from_address)}>",
        f"To: <{ascii_line(to_address)}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: {email.utils.make_msgid('dsn', domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "",
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "It has been given up; the reasons are below.",
        "",
    ]
    for r in failed:
        lines.append(f"<{ascii_line(r.address)}>: {ascii_line(r.diagnostic)}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-PhaserLink-Queue-ID: {ascii_line(queue_id)}",
        f"Arrival-Date: {email.utils.formatdate(arrival)}",
    ]
    for r in failed:
        lines += [
            "",
            f"Final-Recipient: rfc822; {ascii_line(r.address)}",
            "Action: failed",
            f"Status: {r.status}",
        ]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {ascii_line(r.remote_mta)}")
        lines += [
            f"Diagnostic-Code: {ascii_line(r.diagnostic)}",
            f"Last-Attempt-Date: {email.utils.formatdate(now)}",
        ]
    eight_bit = not headers.isascii()
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered Message Headers",
    ]
    if eight_bit:
        lines.append("Content-Transfer-Encoding: quoted-printable")
        headers = quopri.encodestring(headers)
    lines.append("")
    out.write(("\n".join(lines) + "\n").encode("ascii"))
    out.write(headers)
    if headers and not headers.endswith(b"\n"):
        out.write(b"\n")
    out.write(f"\n--{boundary}--\n".encode("ascii"))

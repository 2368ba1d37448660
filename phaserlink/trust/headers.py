"""The header fields sender verification reads and writes (docs/trust.md).

Reads: the From: address (the author a person sees, the identity DMARC
authenticates and ``allowed_senders`` is matched against), Auto-Submitted
(RFC 3834: a machine's reply must never be printed, that starts loops) and
the Authentication-Results fields (RFC 8601) that arrived with the message.

Writes: the message's header block with our own ``Authentication-Results:``
first and every Authentication-Results field that carries *our* authserv-id
removed: a sender who writes ``Authentication-Results: <our hostname>;
dmarc=pass`` into its message must not be believed by anyone downstream
(RFC 8601 5).  Fields of other authserv-ids stay: they are only believed
when the site lists them in ``trusted_authserv_ids``.

Messages are handled as stored: LF line ends, header block ending at the
first empty line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import getaddresses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import authres

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    HEADERS_MAX_HEADER_BLOCK as MAX_HEADER_BLOCK,
)

AUTH_RESULTS = "authentication-results"
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


@dataclass(frozen=True)
class Field:
    name: str  # lower case
    raw: bytes  # the whole field, continuation lines and the final LF included

    @property
    def value(self) -> str:
        text = self.raw.decode("utf-8", "replace")
        return re.sub(r"\r?\n[ \t]", " ", text.partition(":")[2]).strip()


def split_head(data: bytes) -> tuple[int, list[Field]]:
    """(length of the header block without the empty line, its fields).

    Lines that are neither a field nor a continuation (garbage) are kept
    with the field before them, so a rewrite never loses a byte of them."""
    end = data.find(b"\n\n", 0, MAX_HEADER_BLOCK)
    if data.startswith(b"\n"):
        end = -1
        head_len = 0
    elif end < 0:
        head_len = min(len(data), MAX_HEADER_BLOCK)
    else:
        head_len = end + 1
    fields: list[Field] = []
    start = 0
    head = data[:head_len]
    for m in re.finditer(rb"[^\n]*\n|[^\n]+$", head):
        line = m.group(0)
        match = _FIELD_NAME.match(line)
        if match is None and fields:
            last = fields[-1]
            fields[-1] = Field(last.name, last.raw + line)
        else:
            name = match.group(1).decode("ascii").lower() if match else ""
            fields.append(Field(name, line))
        start = m.end()
    del start
    return head_len, fields


def from_addresses(fields: list[Field]) -> list[str]:
    """Every address in every From: field (DMARC wants exactly one)."""
    values = [f.value for f in fields if f.name == "from"]
    return [addr.lower() for _, addr in getaddresses(values) if addr]


def auto_submitted(fields: list[Field]) -> str | None:
    """The Auto-Submitted keyword unless it is ``no`` (RFC 3834 5)."""
    for f in fields:
        if f.name == "auto-submitted":
            keyword = f.value.split(";")[0].strip().lower()
            if keyword and keyword != "no":
                return keyword
    return None


def authserv_id(field: Field) -> str | None:
    """The authserv-id of an Authentication-Results or ARC-Authentication-Results field."""
    value = field.value
    if field.name.startswith("arc-"):
        value = value.partition(";")[2].strip()  # after "i=N;"
    ident = value.split(";")[0].strip().split()
    return ident[0].lower() if ident else None


def parse_results(field: Field) -> "authres.AuthenticationResultsHeader | None":
    """An Authentication-Results field (or an ARC-A-R one) parsed by authres; None if unreadable."""
    import authres  # here: the SMTP process reads headers with this module, and only a verifier parses them

    value = field.value
    if field.name.startswith("arc-"):
        value = value.partition(";")[2].strip()
    try:
        return authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {value}")
    except Exception:
        return None


def rewrite_head(fields: list[Field], our_id: str, results_field: bytes, keep_first: int = 0) -> bytes:
    """The new header block: *results_field* first, then the old fields
    without any Authentication-Results of *our_id*.  *keep_first* fields
    (what we wrote ourselves: Return-Path, Received) are not inspected.

    A leading ``Return-Path:`` (the mailbox copy's, RFC 5321 4.4) stays
    above ours: it is the trace of the final delivery, which comes after
    the verification, as a local delivery agent behind Postfix and
    OpenDMARC would write it."""
    out = []
    ours = our_id.lower()
    for i, f in enumerate(fields):
        if i == 0 and f.name == "return-path" and keep_first:
            out.append(f.raw)
            out.append(results_field)
            continue
        if i == 0:
            out.append(results_field)
        if i >= keep_first and f.name == AUTH_RESULTS and authserv_id(f) == ours:
            continue
        out.append(f.raw if f.raw.endswith(b"\n") else f.raw + b"\n")
    if not fields:
        out.append(results_field)
    return b"".join(out)


def fold(text: str, width: int = 78) -> bytes:
    """An ``Authentication-Results: ...`` line folded at its ``;`` (RFC 5322 2.2.3)."""
    name, _, rest = text.partition(": ")
    parts = rest.split("; ")
    lines = [f"{name}: {parts[0]}"]
    for part in parts[1:]:
        lines[-1] += ";"
        lines.append(f"\t{part}")
    return ("\n".join(lines) + "\n").encode("utf-8", "replace")

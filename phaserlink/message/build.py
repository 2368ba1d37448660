"""The client's job message: print data as one base64 MIME part, streamed.

The message is a single-part MIME entity (RFC 2045) whose body is the print
data in base64 with 76-character lines, so it is 7-bit clean for any relay
and can be split into message/partial fragments (which must be 7bit).  It is
labelled with the document's MIME type and an ``attachment`` disposition with
its file name, so mail clients show it as a file and the printer side's
extraction rule ("print the attachments") picks it.  Our X-PhaserLink-*
fields (see fields.py) carry title, copies, notification wishes and the job
id in the top-level header, where reassembly keeps them.

The output file gets LF line ends (the Maildir/spool convention); the SMTP
writer turns them into CRLF (wire.DotStuffer).  Header values supplied by the
caller have CR/LF removed, so a title cannot inject header fields.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
from datetime import datetime, timezone
from email.header import Header
from email.utils import format_datetime
from typing import BinaryIO, Callable, Iterable

from . import events, fields
from .formats import CONTENT_TYPES

B64_LINE_BYTES = 57
"""Raw bytes per 76-character base64 line (RFC 2045 6.8 limit)."""

READ_CHUNK = B64_LINE_BYTES * 16384
"""Bytes read from the data file per step (a multiple of 57, ~0.9 MB)."""

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    BUILD_MAX_HEADER_LINE as MAX_HEADER_LINE,
)

"""Fold point for header lines we generate (RFC 5322 2.1.1 SHOULD)."""

_CRLF = re.compile(r"[\r\n]+")


def make_message_id(domain: str) -> str:
    """A new globally unique Message-ID ``<time.random@domain>``."""
    domain = re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost"
    return f"<{int(time.time() * 1000)}.{secrets.token_hex(8)}@{domain}>"


def header_line(name: str, value: str) -> bytes:
    """``Name: value\\n``, RFC 2047-encoded and folded if needed (LF ends)."""
    value = _CRLF.sub(" ", value).strip()
    if value.isascii() and len(name) + 2 + len(value) <= MAX_HEADER_LINE:
        text = value
    elif value.isascii():  # already ASCII (maybe encoded-words): fold only
        text = _fold_ascii(name, value)
    else:
        text = Header(value, "utf-8", header_name=name).encode(linesep="\n")
    return f"{name}: {text}\n".encode("ascii")


def _fold_ascii(name: str, value: str) -> str:
    """Fold at spaces to keep lines short (long words stay whole)."""
    lines: list[str] = []
    cur = ""
    width = MAX_HEADER_LINE - len(name) - 2
    for word in value.split(" "):
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur, width = word, MAX_HEADER_LINE - 1
        else:
            cur = f"{cur} {word}" if cur else word
    lines.append(cur)
    return "\n ".join(lines)


def quote_param(name: str, value: str) -> str:
    """``name="value"``; RFC 2231 ``name*=utf-8''...`` when not plain ASCII."""
    value = _CRLF.sub(" ", value)
    if value.isascii() and all(0x20 <= ord(c) < 0x7F for c in value):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}="{escaped}"'
    encoded = "".join(
        chr(b) if b < 0x80 and (chr(b).isalnum() or chr(b) in "!#$&+-.^_`|~") else f"%{b:02X}"
        for b in value.encode("utf-8")
    )
    return f"{name}*=utf-8''{encoded}"


def _address(value: str) -> str:
    value = _CRLF.sub(" ", value).strip()
    if not value:
        raise ValueError("an address is empty")
    return value


def write_job_message(
    out: BinaryIO,
    data_path: str | os.PathLike[str],
    *,
    sender: str,
    recipient: str,
    title: str,
    format: str,
    filename: str,
    copies: int = 1,
    notify: Iterable[str] | None = None,
    job_id: str,
    message_id: str | None = None,
    date: datetime | None = None,
    on_read: Callable[[int], None] | None = None,
) -> None:
    """Write a complete job message for the file *data_path* to *out*.

    *format* is one of formats.FORMATS; *notify* None leaves the choice to
    the printer's policy, an empty iterable asks for no status mail; its
    words are read by :func:`events.header_value` (old words expanded).
    Reads the data in READ_CHUNK pieces: memory does not grow with the file;
    *on_read* hears how many bytes each piece had (for a progress bar).
    """
    if format not in CONTENT_TYPES:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(CONTENT_TYPES)}")
    if not 1 <= copies <= fields.MAX_COPIES:
        raise ValueError(f"copies must be 1..{fields.MAX_COPIES}, not {copies}")
    if not re.fullmatch(r"[A-Za-z0-9._@+-]{1,64}", job_id):
        raise ValueError(f"job id {job_id!r} must be 1-64 of A-Z a-z 0-9 . _ @ + -")
    sender = _address(sender)
    recipient = _address(recipient)
    if message_id is None:
        message_id = make_message_id(sender.rpartition("@")[2].strip(">") or "localhost")
    when = date or datetime.now(timezone.utc)
    # One vocabulary on the wire: whatever words the caller used (old
    # site.ini words included), the header carries events.EVENTS names.
    try:
        notify_value = None if notify is None else events.header_value(notify)
    except events.UnknownEvent as e:
        raise ValueError(f"unknown notify event: {e}") from None
    content_type = CONTENT_TYPES[format]
    if format == "text":
        content_type += "; charset=utf-8"
    head = [
        header_line("From", sender),
        header_line("To", recipient),
        header_line("Date", format_datetime(when)),
        header_line(fields.JOB_ID, job_id),
        header_line(fields.TITLE, title),
        header_line(fields.COPIES, str(copies)),
    ]
    if notify_value is not None:
        head.append(header_line(fields.NOTIFY, notify_value))
    # Subject, Message-ID, MIME-Version, Content-* last: RFC 2046 5.2.2.1
    # reassembly puts exactly these after the rest, so a split job
    # reassembles byte for byte.
    head += [
        header_line("Subject", title),
        header_line("Message-ID", message_id),
        b"MIME-Version: 1.0\n",
        header_line("Content-Type", content_type),
        b"Content-Transfer-Encoding: base64\n",
        header_line("Content-Disposition", "attachment; " + quote_param("filename", filename)),
        b"\n",
    ]
    out.write(b"".join(head))
    with open(data_path, "rb") as data:
        while True:
            chunk = data.read(READ_CHUNK)
            if not chunk:
                break
            # encodebytes makes 76-char lines with LF for each 57 input bytes
            out.write(base64.encodebytes(chunk))
            if on_read is not None:
                on_read(len(chunk))

"""Status mail: what happened to a job, for people and for programs.

The format is a standard one so that mail clients show it sensibly and
programs can read it without knowing us: a multipart/report (RFC 6522) with
``report-type=disposition-notification``, whose first part is the
human-readable text and whose second part is a message/disposition-
notification (RFC 8098) that says the job message was processed (or
processed with an error), plus our X-PhaserLink-* fields (job id, printer,
IPP job state and reasons, pages, event).  The header has
``Auto-Submitted: auto-replied`` (RFC 3834) so vacation responders and
other robots do not answer it, and In-Reply-To/References to the job
message so clients thread it under the job.

``parse_status_report`` reads one back for ``phaserlink status``; it returns
None for any mail that is not one of ours.
"""

from __future__ import annotations

import binascii
import io
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime, getaddresses
from typing import BinaryIO, Mapping

from . import events, fields
from .build import header_line, make_message_id
from .mime import Headers, MimeError, iter_decoded, iter_parts_file, read_headers

REPORT_TYPE = "disposition-notification"
PRODUCT = "PhaserLink"
SUBJECT_PREFIX = "[PhaserLink]"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_REPORT_PART,
)

"""Largest text or notification part read back (ours are a few hundred bytes)."""

ERROR_STATES = ("aborted", "canceled")
"""Job states reported as ``processed/error``."""


@dataclass(frozen=True)
class StatusReport:
    """A status mail read back (see write_status_report for the meaning)."""

    job_id: str
    printer: str | None
    state: str | None
    reasons: tuple[str, ...]
    event: str | None
    pages: int | None
    original_message_id: str | None
    human_text: str
    disposition: str | None
    final_recipient: str | None
    subject: str | None
    message_id: str | None
    date: str | None
    extra: Mapping[str, str] = field(default_factory=dict)


def status_subject(job_id: str, printer: str, event: str) -> str:
    return f"{SUBJECT_PREFIX} job {job_id} on printer {printer}: {event}"


def write_status_report(
    out: BinaryIO,
    *,
    from_: str,
    to: str,
    printer: str,
    job_id: str,
    state: str,
    reasons: tuple[str, ...] | list[str] = (),
    event: str,
    pages: int | None = None,
    original_message_id: str | None = None,
    human_text: str = "",
    date: datetime | None = None,
    message_id: str | None = None,
    extra_fields: Mapping[str, str] | None = None,
    printer_address: str | None = None,
) -> None:
    """Write a complete status mail (LF line ends) to *out*.

    *state* is an IPP job state (pending, pending-held, processing,
    completed, aborted, canceled); *reasons* IPP job-state-reasons keywords;
    *event* one of events.EVENTS (an old word for one of them is written as
    its new name; anything else is a ValueError).  *printer_address* (Final-Recipient)
    defaults to the address in *from_*.  *extra_fields* are added to the
    notification part; their names must be header field names.
    """
    event = events.report_event(event)
    addr = printer_address or _addr(from_) or from_
    domain = addr.rpartition("@")[2] or "localhost"
    message_id = message_id or make_message_id(domain)
    when = date or datetime.now(timezone.utc)
    boundary = f"=_phaserlink_{secrets.token_hex(12)}"
    head = [
        header_line("From", from_),
        header_line("To", to),
        header_line("Date", format_datetime(when)),
        header_line("Subject", status_subject(job_id, printer, event)),
        header_line("Message-ID", message_id),
    ]
    if original_message_id:
        head.append(header_line("In-Reply-To", original_message_id))
        head.append(header_line("References", original_message_id))
    head += [
        b"Auto-Submitted: auto-replied\n",
        header_line(fields.JOB_ID, job_id),
        b"MIME-Version: 1.0\n",
        f'Content-Type: multipart/report; report-type={REPORT_TYPE};\n'
        f' boundary="{boundary}"\n'.encode("ascii"),
        b"\n",
        b"This is a PhaserLink status report (RFC 6522 multipart/report).\n",
    ]
    text = human_text if human_text.endswith("\n") or not human_text else human_text + "\n"
    body = text.encode("utf-8")
    if body.isascii():
        text_head = b"Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n"
    else:
        text_head = (
            b"Content-Type: text/plain; charset=utf-8\n"
            b"Content-Transfer-Encoding: quoted-printable\n"
        )
        body = binascii.b2a_qp(body, istext=True)
    disposition = "processed/error" if state in ERROR_STATES or event == events.FAILED else "processed"
    notification = [
        header_line("Reporting-UA", f"{printer}; {PRODUCT}"),
        header_line("Final-Recipient", f"rfc822; {addr}"),
    ]
    if original_message_id:
        notification.append(header_line("Original-Message-ID", original_message_id))
    notification += [
        header_line("Disposition", f"automatic-action/MDN-sent-automatically; {disposition}"),
        header_line(fields.JOB_ID, job_id),
        header_line(fields.PRINTER, printer),
        header_line(fields.JOB_STATE, state),
        header_line(fields.JOB_STATE_REASONS, ", ".join(reasons) if reasons else "none"),
    ]
    if pages is not None:
        notification.append(header_line(fields.PAGES, str(int(pages))))
    notification.append(header_line(fields.EVENT, event))
    for name, value in (extra_fields or {}).items():
        if not name or not all(33 <= ord(c) <= 126 and c != ":" for c in name):
            raise ValueError(f"extra field name {name!r} is not a header field name")
        notification.append(header_line(name, str(value)))
    delim = f"--{boundary}\n".encode("ascii")
    out.write(b"".join(head))
    out.write(delim + text_head + b"\n" + body)
    out.write(b"\n" + delim + b"Content-Type: message/disposition-notification\n\n")
    out.write(b"".join(notification))
    out.write(f"\n--{boundary}--\n".encode("ascii"))


def _addr(value: str) -> str | None:
    for _name, addr in getaddresses([value]):
        if "@" in addr:
            return addr
    return None


def _read_event(value: str | None) -> str | None:
    """An event as read back: an old word for one event becomes its new
    name (reports from older appliances); anything else is kept as written."""
    if value is None:
        return None
    try:
        return events.report_event(value)
    except events.UnknownEvent:
        return value


def parse_status_report(source: str | os.PathLike[str] | bytes) -> StatusReport | None:
    """Read a status mail written by write_status_report; None if not ours."""
    if isinstance(source, (bytes, bytearray)):
        return _parse(io.BytesIO(bytes(source)))
    with open(source, "rb") as f:
        return _parse(f)


def _parse(f: BinaryIO) -> StatusReport | None:
    try:
        top = read_headers(f)
        ctype, params = top.content_type()
        if ctype != "multipart/report" or params.get("report-type", "").lower() != REPORT_TYPE:
            return None
        f.seek(0)
        human = None
        notification: Headers | None = None
        for part in iter_parts_file(f):
            if part.depth != 1 or part.size > MAX_REPORT_PART * 2:
                continue
            if part.content_type == "text/plain" and human is None:
                data = b"".join(iter_decoded(f, part))
                charset = part.params.get("charset") or "us-ascii"
                try:
                    human = data.decode(charset)
                except (LookupError, UnicodeDecodeError):
                    human = data.decode("latin-1")
            elif part.content_type == "message/disposition-notification" and notification is None:
                data = b"".join(iter_decoded(f, part))
                notification = read_headers(io.BytesIO(data))
    except MimeError:
        return None
    if notification is None:
        return None
    job_id = notification.get(fields.JOB_ID)
    if not job_id:
        return None
    pages = notification.get(fields.PAGES)
    reasons = notification.get(fields.JOB_STATE_REASONS) or ""
    known = {
        "reporting-ua", "final-recipient", "original-message-id", "disposition",
        *(n.lower() for n in (fields.JOB_ID, fields.PRINTER, fields.JOB_STATE,
                              fields.JOB_STATE_REASONS, fields.PAGES, fields.EVENT)),
    }
    final = notification.get("Final-Recipient")
    return StatusReport(
        job_id=job_id,
        printer=notification.display(fields.PRINTER),
        state=notification.get(fields.JOB_STATE),
        reasons=tuple(r for r in (x.strip() for x in reasons.split(",")) if r and r != "none"),
        event=_read_event(notification.get(fields.EVENT)),
        pages=int(pages) if pages and pages.isdigit() else None,
        original_message_id=notification.get("Original-Message-ID"),
        human_text=(human or "").rstrip("\n") + ("\n" if human else ""),
        disposition=notification.get("Disposition"),
        final_recipient=final.partition(";")[2].strip() if final and ";" in final else final,
        subject=top.display("Subject"),
        message_id=top.get("Message-ID"),
        date=top.get("Date"),
        extra={
            fl.name: notification.display(fl.name) or ""
            for fl in notification
            if fl.name.lower() not in known
        },
    )

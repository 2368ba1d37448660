"""What the printer side needs from the message and conversion modules.

One small seam, so that the spool's state machine can be tested with fakes
on a :class:`task.Clock` and so that the mail parsing stays in
:mod:`phaserlink.message` (docs/README.md: code that parses mail lives once).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from phaserlink.printer.status import parse_notify


@dataclass(frozen=True)
class MessageFacts:
    """What the intake reads from a message's top-level header."""

    sender: str | None
    message_id: str | None
    title: str | None
    copies: int
    notify: list[str] | None  # the sender's wish, in site.ini keywords
    partial: tuple[str, int, int | None] | None  # message/partial (id, number, total)
    client_job_id: str | None = None  # X-PhaserLink-Job-Id: the id `phaserlink send` printed
    options: str | None = None  # X-PhaserLink-Options (sides, media, color, pages)
    subject: str | None = None  # the Subject on one line: options in it when the printer has subject_options
    copies_given: bool = False  # X-PhaserLink-Copies was in the header (it wins over the Subject)
    auth: str | None = None  # our own Authentication-Results (its results, after the authserv-id), for the console
    automatic: str | None = None  # why it is a bounce or an auto-reply (never printed from a remote mailbox)


# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    SENDER_SCAN_BYTES,
)

def sender_from_prefix(path: Path, limit: int = SENDER_SCAN_BYTES) -> str | None:
    """The first From: (or else Return-Path:) address in the first *limit*
    bytes of *path*, so that the sender of a message whose header is too
    large to read can still be told why it was not printed."""
    import io

    from phaserlink.message.extract import job_request
    from phaserlink.message.mime import MimeError, read_headers

    with open(path, "rb") as f:
        prefix = f.read(limit)
    end = prefix.rfind(b"\n")
    prefix = prefix[:end + 1] if end >= 0 else b""
    blank = prefix.find(b"\n\n")
    if blank >= 0:
        prefix = prefix[:blank + 1]
    try:
        headers = read_headers(io.BytesIO(prefix))
    except MimeError:
        return None
    sender = job_request(headers).sender
    if sender is None:
        from email.utils import getaddresses

        for value in headers.get_all("Return-Path"):
            for _name, addr in getaddresses([value]):
                if "@" in addr and addr.isprintable() and " " not in addr:
                    return addr
    return sender


@dataclass
class Toolkit:
    inspect: Callable[[Path], MessageFacts]
    extract: Callable[[Path, Path], list[Any]]  # -> documents with path, format, content_type, filename, size
    reassemble: Callable[[list[Path], Path], Any]
    needs_conversion: Callable[[str, tuple[str, ...]], str | None]
    convert: Callable[..., Any]  # (reactor, src, dst, from, to) -> Deferred
    unprintable: tuple[type[BaseException], ...]  # errors with .reason and .ipp_reason
    write_report: Callable[..., None]  # phaserlink.message.report.write_status_report
    count_pages: Callable[..., Any] | None = None  # (reactor, path, format) -> Deferred[int | None]
    select_pages: Callable[..., Any] | None = None  # (reactor, src, dst, format, "1-3,7") -> Deferred (pages=)


def notify_words(value: str | None) -> list[str] | None:
    """The X-PhaserLink-Notify header -> the events the sender asked for
    (old words included, unknown ones ignored), [] for ``none``, None for
    nothing usable: :func:`phaserlink.message.events.read_events`."""
    return parse_notify(value)


def our_results(values: list[str], authserv_id: str | None) -> str | None:
    """The results of the first Authentication-Results whose authserv-id
    is ours (the SMTP session wrote it first and removed forged ones of our
    id), unfolded, without the id: what the console shows as a job's
    ``auth``.  None when we wrote none (``sender_auth = none``) or the id
    is not known: another verifier's claim is not shown as ours."""
    if not authserv_id:
        return None
    for value in values:
        ident, sep, results = value.partition(";")
        words = ident.split()  # the id, and an optional version (RFC 8601 2.2)
        if sep and words and words[0].lower() == authserv_id.lower():
            return " ".join(results.split()) or None
    return None


def automatic_reason(headers) -> str | None:
    """Why the message is a bounce (``Return-Path: <>``) or an automatic
    message (``Auto-Submitted`` other than ``no``, RFC 3834), or None.

    The SMTP session refuses such mail to a printer (phaserlink.trust);
    this is for a remote mailbox, whose mail never passed that session:
    printing it and answering with a status mail would start a loop."""
    from types import SimpleNamespace

    from phaserlink.trust.headers import auto_submitted

    keyword = auto_submitted([SimpleNamespace(name=f.name.lower(), value=f.value) for f in headers])
    if keyword is not None:
        return f"Auto-Submitted: {keyword}"
    if any(value.strip() == "<>" for value in headers.get_all("Return-Path")):
        return "a null reverse-path (Return-Path: <>)"
    return None


def inspect_message(path: Path, authserv_id: str | None = None) -> MessageFacts:
    from phaserlink.message import fields
    from phaserlink.message.extract import job_request
    from phaserlink.message.mime import read_headers

    with open(path, "rb") as f:
        headers = read_headers(f)
    request = job_request(headers)
    return MessageFacts(
        sender=request.sender,
        message_id=request.message_id,
        title=request.title,
        copies=request.copies,
        notify=notify_words(headers.get(fields.NOTIFY)),
        partial=_partial_of(headers),
        client_job_id=request.job_id,
        options=request.options,
        subject=request.subject,
        copies_given=request.copies_given,
        auth=our_results(headers.get_all("Authentication-Results"), authserv_id),
        automatic=automatic_reason(headers),
    )


def _partial_of(headers) -> tuple[str, int, int | None] | None:
    """message/partial (id, number, total) as the fragment says them, even
    when they are impossible (number 0, total 0, number > total): the
    intake fails such a set with a status mail instead of taking the
    fragment for a whole message or waiting for parts that cannot come."""
    import re

    from phaserlink.message.partial import MAX_ID

    ctype, params = headers.content_type()
    if ctype != "message/partial":
        return None
    pid = params.get("id", "")
    if not pid or len(pid) > MAX_ID:
        return None  # no set to put it in: extraction says what it is

    def number(value: str | None) -> int | None:
        if value is None:
            return None
        m = re.fullmatch(r"\s*(\d{1,12})\s*", value)
        return int(m.group(1)) if m else -1

    n = number(params.get("number"))
    if n is None:
        n = -1
    return (pid, n, number(params.get("total")))


def default_toolkit(authserv_id: str | None = None) -> Toolkit:
    from phaserlink.message.extract import ExtractError, extract_documents
    from phaserlink.printer.convert import ConversionError, convert, count_pages, needs_conversion, select_pages

    def reassemble(paths: list[Path], out: Path) -> Any:
        from phaserlink.message.partial import reassemble as _reassemble

        return _reassemble(paths, out)

    def write_report(out, **fields) -> None:
        from phaserlink.message.report import write_status_report

        write_status_report(out, **fields)

    return Toolkit(
        inspect=functools.partial(inspect_message, authserv_id=authserv_id),
        extract=extract_documents,
        reassemble=reassemble,
        needs_conversion=needs_conversion,
        convert=convert,
        unprintable=(ExtractError, ConversionError),
        write_report=write_report,
        count_pages=count_pages,
        select_pages=select_pages,
    )

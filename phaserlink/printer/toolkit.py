"""What the printer side needs from the message and conversion modules.

One small seam, so that the spool's state machine can be tested with fakes
on a :class:`task.Clock` and so that the mail parsing stays in
:mod:`phaserlink.message` (docs/README.md: code that parses mail lives once).
"""

from __future__ import annotations

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


@dataclass
class Toolkit:
    inspect: Callable[[Path], MessageFacts]
    extract: Callable[[Path, Path], list[Any]]  # -> documents with path, format, content_type, filename, size
    reassemble: Callable[[list[Path], Path], Any]
    needs_conversion: Callable[[str, tuple[str, ...]], str | None]
    convert: Callable[..., Any]  # (reactor, src, dst, from, to) -> Deferred
    unprintable: tuple[type[BaseException], ...]  # errors with .reason and .ipp_reason
    write_report: Callable[..., None]  # phaserlink.message.report.write_status_report


def notify_words(value: str | None) -> list[str] | None:
    """The X-PhaserLink-Notify header -> the events the sender asked for
    (old words included, unknown ones ignored), [] for ``none``, None for
    nothing usable: :func:`phaserlink.message.events.read_events`."""
    return parse_notify(value)


def inspect_message(path: Path) -> MessageFacts:
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
    )


def _partial_of(headers) -> tuple[str, int, int | None] | None:
    from phaserlink.message.partial import PartialInfo

    info = PartialInfo.from_headers(headers)
    if info is None:
        return None
    if isinstance(info, tuple):
        return info
    return (info.id, info.number, info.total)


def default_toolkit() -> Toolkit:
    from phaserlink.message.extract import ExtractError, extract_documents
    from phaserlink.printer.convert import ConversionError, convert, needs_conversion

    def reassemble(paths: list[Path], out: Path) -> Any:
        from phaserlink.message.partial import reassemble as _reassemble

        return _reassemble(paths, out)

    def write_report(out, **fields) -> None:
        from phaserlink.message.report import write_status_report

        write_status_report(out, **fields)

    return Toolkit(
        inspect=inspect_message,
        extract=extract_documents,
        reassemble=reassemble,
        needs_conversion=needs_conversion,
        convert=convert,
        unprintable=(ExtractError, ConversionError),
        write_report=write_report,
    )

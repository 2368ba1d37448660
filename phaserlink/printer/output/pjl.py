"""PJL (HP Printer Job Language) job wrapping and USTATUS parsing.

Wrapping a job in ``@PJL JOB`` / ``@PJL EOJ`` with ``USTATUS JOB=ON`` makes
a PJL printer report, unasked, when the job started and when it finished
printing, with the page count::

    @PJL USTATUS JOB\\r\\nEND\\r\\nNAME="phaserlink-42"\\r\\nPAGES=3\\r\\n\\x0c

Messages from the printer end with a form feed.  The parser keeps at most
MAX_MESSAGE bytes of an unfinished message, so a printer streaming junk
cannot grow our memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phaserlink.message.job_options import MEDIA, JobOptions

UEL = b"\x1b%-12345X"  # Universal Exit Language: back to PJL from any language
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_MESSAGE,
    NAME_MAX,
)


def job_name(job_id: str) -> str:
    """A PJL job name: printable ASCII without quotes, bounded."""
    clean = "".join(c for c in job_id if " " <= c <= "~" and c != '"')
    return ("phaserlink-" + clean)[:NAME_MAX]


#: PJL PAPER values (HP PJL Technical Reference, environment variables) for
#: the short media names of job_options.MEDIA.
PAPER = {"a3": "A3", "a4": "A4", "a5": "A5", "letter": "LETTER", "legal": "LEGAL", "tabloid": "LEDGER"}
_PAPER_BY_PWG = {pwg: PAPER[short] for short, pwg in MEDIA.items() if short in PAPER}
#: sides= -> the PJL DUPLEX and BINDING settings.
SIDES = {
    "one-sided": (b"@PJL SET DUPLEX=OFF",),
    "two-sided-long-edge": (b"@PJL SET DUPLEX=ON", b"@PJL SET BINDING=LONGEDGE"),
    "two-sided-short-edge": (b"@PJL SET DUPLEX=ON", b"@PJL SET BINDING=SHORTEDGE"),
}
#: color= -> RENDERMODE.
RENDERMODE = {"color": b"@PJL SET RENDERMODE=COLOR", "monochrome": b"@PJL SET RENDERMODE=GRAYSCALE"}


def job_settings(options: JobOptions) -> tuple[list[bytes], list[str]]:
    """The ``@PJL SET`` lines for the job options sides, media and color
    (copies are QTY, in :func:`header`), and what PJL cannot say here (a
    PWG media name without a PJL PAPER value) for the status mail."""
    lines: list[bytes] = []
    notes: list[str] = []
    if options.sides:
        lines += SIDES[options.sides]
    if options.media:
        paper = PAPER.get(options.media) or _PAPER_BY_PWG.get(options.media)
        if paper:
            lines.append(b"@PJL SET PAPER=" + paper.encode("ascii"))
        else:
            notes.append(f"media={options.media} has no PJL paper name; printed on the printer's default paper")
    if options.color:
        lines.append(RENDERMODE[options.color])
    return lines, notes


def header(name: str, copies: int = 1, settings: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    """The PJL job start: name, status reports, then copies and *settings*
    (``@PJL SET`` lines: inside a PJL job they last until its EOJ)."""
    lines = [b'@PJL JOB NAME="%s"' % name.encode("ascii"), b"@PJL USTATUS JOB=ON"]
    if copies > 1:
        lines.append(b"@PJL SET QTY=%d" % copies)  # collated copies of the job
    lines += settings
    return UEL + b"".join(line + b"\r\n" for line in lines)


def trailer(name: str) -> bytes:
    return UEL + b'@PJL EOJ NAME="%s"\r\n' % name.encode("ascii") + UEL


@dataclass
class StatusMessage:
    """One unsolicited status message: ``@PJL USTATUS <category>`` then an
    event word (START, END, ...) and KEY=VALUE fields."""

    category: str
    event: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def name(self) -> str | None:
        value = self.fields.get("NAME")
        return None if value is None else value.strip('"')

    @property
    def pages(self) -> int | None:
        try:
            return int(self.fields["PAGES"])
        except (KeyError, ValueError):
            return None


def parse_message(raw: bytes) -> StatusMessage | None:
    """Parse one message (without its form feed); None if not USTATUS."""
    text = raw.decode("latin-1")
    start = text.upper().find("@PJL USTATUS")  # skip junk before it (resync)
    if start < 0:
        return None
    text = text[start:]
    lines = [line.strip() for line in text.replace("\r", "").split("\n") if line.strip()]
    if not lines or not lines[0].upper().startswith("@PJL USTATUS"):
        return None
    head = lines[0].split(None, 2)
    message = StatusMessage(category=head[2].upper() if len(head) > 2 else "", text=" | ".join(lines))
    for line in lines[1:]:
        key, eq, value = line.partition("=")
        if eq:
            message.fields[key.strip().upper()] = value.strip()
        elif not message.event:
            message.event = line.upper()
    return message


class StatusParser:
    """Feed bytes from the printer; get complete USTATUS messages back."""

    def __init__(self) -> None:
        self._buffer = b""
        self.discarded = 0

    def feed(self, data: bytes) -> list[StatusMessage]:
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\x0c")
        if len(self._buffer) > MAX_MESSAGE:
            self.discarded += len(self._buffer)
            self._buffer = b""
        messages = []
        for raw in complete:
            message = parse_message(raw)
            if message is not None:
                messages.append(message)
        return messages

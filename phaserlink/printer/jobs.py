"""Job states and the record the spool keeps for each job.

States and reasons are the IPP job model (RFC 8011 5.3.7 and 5.3.8) as
plain strings, so that a status report can carry them as they are.  A
:class:`Job` is what the spool writes to ``state.json`` before anything is
done about a change; after a crash, the record alone says where to resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# -- job-state (RFC 8011 5.3.7) ----------------------------------------------
PENDING = "pending"
PENDING_HELD = "pending-held"
PROCESSING = "processing"
COMPLETED = "completed"
ABORTED = "aborted"
CANCELED = "canceled"

STATES = (PENDING, PENDING_HELD, PROCESSING, COMPLETED, ABORTED, CANCELED)
TERMINAL_STATES = frozenset({COMPLETED, ABORTED, CANCELED})

# -- job-state-reasons (RFC 8011 5.3.8) --------------------------------------
JOB_INCOMING = "job-incoming"  # a message/partial set is still arriving
JOB_QUEUED = "job-queued"  # spooled, waiting for its turn
JOB_PRINTING = "job-printing"  # being sent to the printer
JOB_RESTARTABLE = "job-restartable"  # was processing when the appliance stopped
PRINTER_STOPPED = "printer-stopped"  # the printer is down; held for a retry
DOCUMENT_FORMAT_ERROR = "document-format-error"  # nothing printable / conversion failed
JOB_COMPLETED_SUCCESSFULLY = "job-completed-successfully"
ABORTED_BY_SYSTEM = "aborted-by-system"  # gave up (timeouts, retries exhausted, a bug)
JOB_DATA_INSUFFICIENT = "job-data-insufficient"  # incomplete message/partial set
UNSUPPORTED_DOCUMENT_FORMAT = "unsupported-document-format"
PRINTER_REJECTED = "job-canceled-at-device"  # the printer refused the job
SENDER_NOT_ALLOWED = "job-canceled-by-operator"  # not on allowed_senders (no status mail)
JOB_HOLD_UNTIL_SPECIFIED = "job-hold-until-specified"  # unauthenticated sender: waits for its release


@dataclass
class PartialSet:
    """The fragments of one message/partial id collected so far.

    *parts* maps the fragment number (as a string: JSON keys) to the UIDL
    it came with.  *total* is only known once the fragment carrying it
    (RFC 2046 requires it on the last one) arrived.
    """

    id: str
    total: int | None = None
    parts: dict[str, str] = field(default_factory=dict)

    def numbers(self) -> list[int]:
        return sorted(int(n) for n in self.parts)

    def complete(self) -> bool:
        return self.total is not None and set(self.numbers()) == set(range(1, self.total + 1))


@dataclass
class Document:
    """One printable file of a job, relative to the job directory."""

    file: str
    format: str  # postscript, pdf, pcl, text
    content_type: str = "application/octet-stream"
    filename: str | None = None
    size: int = 0
    pages: int | None = None  # counted before it is sent (None: unknown)
    pages_by: str | None = None  # pages= applied by: "ghostscript" (before), "printer" (IPP), "none" (cannot)


@dataclass
class Job:
    """Everything the spool knows about one job (its ``state.json``)."""

    job_id: str
    printer: str
    state: str
    reasons: list[str]
    created: float
    changed: float
    source: str = ""
    uidls: list[str] = field(default_factory=list)
    message_id: str | None = None
    sender: str | None = None
    client_job_id: str | None = None  # the sender's own id for the job, echoed in status mail
    title: str = ""
    copies: int = 1
    notify: list[str] | None = None  # what the sender asked for (X-PhaserLink-Notify)
    options: str = ""  # X-PhaserLink-Options: sides, media, color, pages (message/job_options.py)
    partial: PartialSet | None = None
    documents: list[Document] | None = None  # None until extracted
    printed_documents: int = 0  # how many documents the printer acknowledged
    printer_job: str | None = None  # the printer's id for the document being sent (IPP), asked about after a crash
    pages: int | None = None
    attempts: int = 0  # failed sends in a row (back-off)
    delayed_notified: bool = False
    detail: str = ""  # human text: the last error, or what the printer said
    acknowledged: str = ""
    hold_token: str | None = None  # held until released by this token (docs/trust.md)
    auth: str | None = None  # our Authentication-Results for the message (the console's job "auth")
    option_notes: list[str] = field(default_factory=list)  # options not applied as asked, for the status mail

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_json(self) -> dict[str, Any]:
        """The state as JSON-ready values (what ``asdict`` gives, copied).

        Written out field by field: ``dataclasses.asdict`` deep-copies
        recursively and was 4% of the reactor's time at site scale
        (bench/scale.py), for a record written three times per job."""
        out = {name: getattr(self, name) for name in _JOB_FIELDS}
        out["reasons"] = list(self.reasons)
        out["uidls"] = list(self.uidls)
        if self.notify is not None:
            out["notify"] = list(self.notify)
        if self.partial is not None:
            p = self.partial
            out["partial"] = {"id": p.id, "total": p.total, "parts": dict(p.parts)}
        if self.documents is not None:
            out["documents"] = [{name: getattr(d, name) for name in _DOCUMENT_FIELDS} for d in self.documents]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Job":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("partial") is not None:
            values["partial"] = PartialSet(**values["partial"])
        if values.get("documents") is not None:
            values["documents"] = [Document(**d) for d in values["documents"]]
        job = cls(**values)
        if job.state not in STATES:
            raise ValueError(f"unknown job state {job.state!r}")
        return job


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_DOCUMENT_FIELDS = tuple(f.name for f in fields(Document))


def describe_numbers(numbers: list[int]) -> str:
    """``[1, 2, 4, 5]`` -> ``"1, 2, 4 and 5"``; runs of three or more are
    shortened, ``[1, 2, 3, 5]`` -> ``"1-3 and 5"``, so a 100-part set stays short."""
    items: list[str] = []
    ordered = sorted(set(numbers))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            items.append(f"{ordered[i]}-{ordered[j]}")
        else:
            items.extend(str(n) for n in ordered[i:j + 1])
        i = j + 1
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _parts_word(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"part {numbers[0]}"
    return f"parts {describe_numbers(numbers)}"


def describe_partial(partial: PartialSet) -> str:
    """Which fragments of a set arrived and which did not, for a human.

    ``parts 1, 2 and 4 of 5 arrived; parts 3 and 5 are missing``.  When the
    last fragment (the one that says how many there are) never came, the
    count is unknown and the text says so rather than guessing.
    """
    have = partial.numbers()
    if partial.total is not None:
        missing = [n for n in range(1, partial.total + 1) if n not in set(have)]
        text = f"{_parts_word(have)} of {partial.total} arrived" if have else f"none of {partial.total} parts arrived"
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            text += f"; {_parts_word(missing)} {verb} missing"
        return text
    if not have:
        return "no part arrived"
    highest = max(have)
    gaps = [n for n in range(1, highest) if n not in set(have)]
    text = f"{_parts_word(have)} arrived, but not the last part, which says how many parts there are"
    if gaps:
        verb = "is" if len(gaps) == 1 else "are"
        text += f"; {_parts_word(gaps)} {verb} missing too"
    return text

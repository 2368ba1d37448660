"""The seam between the job spool and the printers it feeds.

The spool owns a job until an output says the printer has it (guarantee 2
in docs/README.md).  So an output's single promise is: the Deferred from
``send`` fires with an :class:`OutputResult` only when the printer side
acknowledged *all* of the job; otherwise it fails with
:class:`PrinterUnavailable` (try again later, the job stays spooled) or
:class:`PrinterRejected` (retrying will not help; abort the job and tell
the sender).  Any other exception is a bug and the spool treats it as
temporary (``phaserlink.printer.faults.classify``, docs/faults.md): the
job is set aside and tried again, and given up after ``max_retry_time``.
An output that cannot tell (an LPD refusal byte without a clear meaning)
says PrinterUnavailable: only a refusal for good may cost the job.

Cancelling the Deferred aborts the transfer (the connection is dropped)
and fails it with ``CancelledError``; the job stays with the spool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

# IPP printer-state-reasons (RFC 8011 5.4.12, PWG 5100.x) an output uses to
# explain a failure.  Strings, so that status mail can carry them as is.
REASON_CONNECTING = "connecting-to-device"  # refused, unreachable, timed out connecting
REASON_TIMED_OUT = "timed-out"  # connected, then the printer stopped taking data / answering
REASON_STOPPED = "printer-stopped"  # the printer (queue) says it is not accepting jobs
REASON_SPOOL_FULL = "spool-area-full"  # LPD: no room for the job
REASON_DOCUMENT_FORMAT = "document-format-error"  # the printer refused the data itself
REASON_NOT_FOUND = "destination-uri-failed"  # no such queue / bad URI
REASON_OTHER = "other"


@dataclass(frozen=True)
class OutputJob:
    """One job ready to print: its data is a complete file on disk.

    *path* is read while sending, never loaded whole; it must stay in place
    until the Deferred fires.  *format* is a MIME type such as
    ``application/postscript`` (the file output uses it for the extension;
    network outputs send the bytes as they are).  *job_id* is the spool's
    id (safe as a file name: letters, digits, ``-``, ``_``, ``.``).
    """

    path: Path
    job_id: str
    title: str
    user: str
    host: str
    copies: int = 1
    format: str = "application/octet-stream"
    options: str = ""  # the sender's X-PhaserLink-Options (an output says what it cannot do)


@dataclass(frozen=True)
class OutputResult:
    """What the printer side acknowledged, for the job's status report.

    *acknowledged* is human text ("spooled at lpd queue raw on
    127.0.0.1:5515 as job 042", "all bytes written, connection closed").
    *pages* is the printer's page count when it reported one (PJL USTATUS),
    else None.  *detail* is extra text worth logging (bytes sent, PJL
    status lines, the file written).
    """

    acknowledged: str
    pages: int | None = None
    detail: str = ""
    #: Job options this output could not apply as asked, each a sentence
    #: for the sender's status mail (docs/options.md): never silently ignored.
    notes: tuple[str, ...] = ()


class PrinterOutputError(Exception):
    """A job did not reach the printer.  *reason* is text for a human,
    *ipp_reason* one of the ``REASON_*`` strings above."""

    def __init__(self, reason: str, ipp_reason: str = REASON_OTHER) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ipp_reason = ipp_reason

    def __str__(self) -> str:
        return f"{self.reason} ({self.ipp_reason})"


class PrinterUnavailable(PrinterOutputError):
    """Temporary: refused, unreachable, timed out, reset mid-job.  The job
    stays spooled and will be sent again (from the start)."""


class PrinterRejected(PrinterOutputError):
    """Permanent: the printer answered and refused this job (no such LPD
    queue, job refused, data rejected).  Retrying will not help."""


class IPageSelecting(Interface):
    """An output whose printer may print only some pages of a document
    itself (IPP page-ranges).  Every other output gets the pages chosen by
    Ghostscript before it is sent (docs/options.md)."""

    def selects_pages() -> "Deferred[bool]":  # noqa: F821
        """Whether this printer selects pages (it may ask the printer)."""


class IPrinterOutput(Interface):
    """A way to hand complete jobs to one printer."""

    uri = Attribute("The output URI this was made from (str), for logs and status mail.")

    def send(job: OutputJob) -> "Deferred[OutputResult]":  # noqa: F821
        """Send *job*; fire when the printer acknowledged all of it.

        Fails with PrinterUnavailable or PrinterRejected.  One call per
        job; calls may overlap (each gets its own connection), though a
        spool normally sends one job at a time per printer.
        """


class IDescribingOutput(Interface):
    """An output whose printer says what it takes (IPP Get-Printer-Attributes):
    the dispatcher asks before it converts a job, and converts to that
    (phaserlink/printer/target.py holds the policy, not the output)."""

    capabilities = Attribute("The printer's last answer (a PrinterStatus), or None before one.")

    def probe() -> "Deferred":  # noqa: F821
        """Ask the printer now; fire with its answer (and keep it as
        ``capabilities``), or fail with PrinterUnavailable / PrinterRejected."""


#: The spool's hook for an exactly-once output: write the printer's job id
#: (its argument) durably.  Here with the interface, not with the IPP
#: output, so that the dispatcher names both without importing the IPP
#: client (twisted.web.client and the codec: about 3 MB resident) for a
#: site that has no IPP printer.
RecordHook = Callable[[str], "Awaitable[object] | object"]


class IExactlyOnceOutput(Interface):
    """An output that can tell the spool the printer's own job id before the
    document is sent, and ask the printer about it after a crash."""

    def send(job: OutputJob, record: RecordHook | None = None,
             previous: str | None = None) -> "Deferred[OutputResult]":  # noqa: F821
        """As IPrinterOutput.send.  *record(token)* is called (and its
        Deferred awaited) once the printer gave the job an id and before
        any document byte is sent; the spool must write *token* durably.
        *previous* is a token recorded by an earlier attempt: the printer
        is asked about that job first."""

    capabilities = Attribute("The printer's last Get-Printer-Attributes answer (PrinterStatus) or None.")

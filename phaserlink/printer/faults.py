"""Every failure between the spool and the printer, classified once.

A job that failed is either *held and tried again* or *aborted*, and which
one must never depend on where in the code the failure surfaced.  So every
exception the dispatcher meets goes through :func:`classify`, once, and
comes out as one of three kinds (docs/faults.md):

- :class:`TemporaryFault`: the print server or the printer is not able to
  print right now (a full disk, any other ``OSError``, a converter that
  cannot start, is killed or times out, output a converter left incomplete,
  an LPD or SMTP temporary refusal, a DNS failure, an unexpected exception
  in our own code).  The job is held (``pending-held``, with the reason)
  and tried again with back-off until ``max_retry_time``; never aborted
  before that.
- :class:`DocumentFault`: the document itself cannot be printed (the
  converter ran and rejected it, nothing printable in the message, a format
  the printer cannot take).  Aborted at once with ``document-format-error``
  and the converter's own words in the status mail.
- :class:`PermanentFault`: the printer answered and refused the job for
  good (no such LPD queue).  Aborted with ``aborted-by-system``.

A temporary fault also says how far it reaches (:attr:`TemporaryFault.scope`):
``printer`` (the printer is down: the whole queue waits, in order),
``server`` (this machine cannot print anything now, e.g. its disk is full:
the whole queue waits too) or ``job`` (only this job is in trouble, e.g. its
conversion was killed or timed out, or it crashes our code: it is set aside
with its own back-off and the printer goes on with the next job).
"""

from __future__ import annotations

import errno
from typing import Iterable

# -- IPP job-state-reasons (RFC 8011 5.3.8) a held job carries --------------
PRINTER_STOPPED = "printer-stopped"  # the printer is down
RESOURCES_NOT_READY = "resources-are-not-ready"  # the print server is (disk, converter)
DOCUMENT_FORMAT_ERROR = "document-format-error"
DOCUMENT_ACCESS_ERROR = "document-access-error"
ABORTED_BY_SYSTEM = "aborted-by-system"

#: Where a temporary fault is.
SCOPE_PRINTER = "printer"
SCOPE_SERVER = "server"
SCOPE_JOB = "job"
SCOPES = (SCOPE_PRINTER, SCOPE_SERVER, SCOPE_JOB)

#: errno values that mean "no room" (the disk or a quota).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class Fault(Exception):
    """A classified failure.  *reason* is text for the status mail (no
    trailing full stop), *ipp_reason* an RFC 8011 job-state-reason."""

    def __init__(self, reason: str, ipp_reason: str = ABORTED_BY_SYSTEM) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ipp_reason = ipp_reason

    def __str__(self) -> str:
        return self.reason


class TemporaryFault(Fault):
    """Not now: hold the job, try again later (see the module docstring)."""

    def __init__(self, reason: str, scope: str = SCOPE_SERVER, ipp_reason: str | None = None,
                 *, internal: bool = False) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
        if ipp_reason is None:
            ipp_reason = PRINTER_STOPPED if scope == SCOPE_PRINTER else RESOURCES_NOT_READY
        super().__init__(reason, ipp_reason)
        self.scope = scope
        self.internal = internal  # a bug of ours, not a resource: said so when given up

    @property
    def holds_queue(self) -> bool:
        """True when the jobs behind this one would fail the same way."""
        return self.scope != SCOPE_JOB


class DocumentFault(Fault):
    """The document cannot be printed: abort with document-format-error.
    *details* keeps a converter's full (capped) messages for the log."""

    def __init__(self, reason: str, ipp_reason: str = DOCUMENT_FORMAT_ERROR, details: str = "") -> None:
        super().__init__(reason, ipp_reason)
        self.details = details

    @property
    def reasons(self) -> list[str]:
        """The job-state-reasons of the aborted job."""
        if self.ipp_reason == DOCUMENT_FORMAT_ERROR:
            return [DOCUMENT_FORMAT_ERROR]
        return [DOCUMENT_FORMAT_ERROR, self.ipp_reason]


class PermanentFault(Fault):
    """Refused for good by the other side: abort with aborted-by-system."""

    @property
    def reasons(self) -> list[str]:
        if self.ipp_reason == ABORTED_BY_SYSTEM:
            return [ABORTED_BY_SYSTEM]
        return [ABORTED_BY_SYSTEM, self.ipp_reason]


def describe_os_error(e: OSError, what: str = "") -> str:
    """``no space left on the print server's disk (/var/spool/x)``, or the
    error's own words; *what* says what was being done."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    doing = f" while {what}" if what else ""
    if e.errno in NO_SPACE_ERRNOS:
        return f"no space left on the print server's disk{where}{doing}"
    return f"{e.strerror or e}{where}{doing}"


def _caused_by_os_error(e: BaseException) -> OSError | None:
    seen = 0
    cause: BaseException | None = e
    while cause is not None and seen < 8:
        if isinstance(cause, OSError):
            return cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


def classify(e: BaseException, document_errors: Iterable[type[BaseException]] = ()) -> Fault:
    """The one decision: what kind of failure *e* is.

    *document_errors* are the exception types of the message tools
    (extraction, conversion) that mean "this document cannot be printed";
    each has ``.reason`` and ``.ipp_reason``.  An unknown exception is a
    bug of ours: temporary, scope ``job``, marked internal.
    """
    if isinstance(e, Fault):
        return e
    from twisted.internet import error as net_error

    from phaserlink.printer.output.interfaces import PrinterRejected, PrinterUnavailable

    if isinstance(e, PrinterUnavailable):
        return TemporaryFault(e.reason, SCOPE_PRINTER, PRINTER_STOPPED)
    if isinstance(e, PrinterRejected):
        if e.ipp_reason == DOCUMENT_FORMAT_ERROR:
            return DocumentFault(f"the printer refused the job: {e.reason}")
        return PermanentFault(f"the printer refused the job: {e.reason}", e.ipp_reason)
    if isinstance(e, (net_error.DNSLookupError, net_error.ConnectError, net_error.TimeoutError)):
        return TemporaryFault(str(e) or type(e).__name__, SCOPE_PRINTER, PRINTER_STOPPED)
    smtp = _smtp_fault(e)
    if smtp is not None:
        return smtp
    document_errors = tuple(document_errors)
    if document_errors and isinstance(e, document_errors):
        reason = getattr(e, "reason", str(e))
        ipp = getattr(e, "ipp_reason", DOCUMENT_FORMAT_ERROR)
        # A tool that could not read or write the spool is the disk's
        # trouble, not the document's (extraction on a full disk).
        os_error = _caused_by_os_error(e)
        if ipp == DOCUMENT_ACCESS_ERROR or os_error is not None:
            if os_error is not None and os_error.errno in NO_SPACE_ERRNOS:
                reason = describe_os_error(os_error, "preparing the document")
            return TemporaryFault(reason, SCOPE_SERVER)
        return DocumentFault(reason, ipp, getattr(e, "details", ""))
    if isinstance(e, OSError):
        return TemporaryFault(describe_os_error(e), SCOPE_SERVER)
    return TemporaryFault(f"an internal error happened in PhaserLink ({type(e).__name__}: {e})",
                          SCOPE_JOB, RESOURCES_NOT_READY, internal=True)


def _smtp_fault(e: BaseException) -> Fault | None:
    try:
        from phaserlink.net.smtp_client import SMTPError
    except ImportError:  # pragma: no cover - the client is part of the package
        return None
    if not isinstance(e, SMTPError):
        return None
    if e.permanent:
        return PermanentFault(f"the mail server refused: {e}")
    return TemporaryFault(f"the mail server answered: {e}", SCOPE_SERVER)

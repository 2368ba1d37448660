"""What the printer side offers an operator: the read views and the job
and printer operations, as one interface (docs/console.md).

The console's web page, its JSON API and the ``phaserlink-admin`` CLI all
reach the printer side through :class:`IPrinterControl` only, so each
operation is written once (in :mod:`phaserlink.printer.operations`) and
none of them touches a spool file itself.

Views are plain dicts with the JSON names the API promises (a printer:
``name``, ``state``, ``state_reasons``, ``jobs_waiting``, ``output``,
``last_error``; a job: ``id``, ``printer``, ``sender``, ``title``,
``state``, ``state_reasons``, ``size``, ``pages``, ``fragments``, ``auth``,
``created``, ``changed``, ``detail`` and, for one job, ``timeline``), so
that the API passes them on as they are and a script can rely on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

# -- printer-state (RFC 8011 5.4.11) and the reasons the console shows --------
PRINTER_IDLE = "idle"
PRINTER_PROCESSING = "processing"
PRINTER_STOPPED = "stopped"
PAUSED = "paused"  # printer-state-reasons "paused": an operator paused it
#: job-state-reasons of a job an operator held (RFC 8011 5.3.8).
JOB_HOLD_UNTIL_SPECIFIED = "job-hold-until-specified"
#: job-state-reasons of a job an operator canceled.
JOB_CANCELED_BY_OPERATOR = "job-canceled-by-operator"

#: The most jobs one page of a job list holds.
MAX_PAGE = 500
#: Jobs on one page unless the caller asks for another size.
DEFAULT_PAGE = 50


class UnknownJob(KeyError):
    """No job with this id (neither in a spool nor in the history)."""


class UnknownPrinter(KeyError):
    """No printer of that name that the appliance prints for."""


class NotAllowed(Exception):
    """The job's or printer's state does not allow the operation (HTTP 409).

    *view* is the job or printer as it is, so the caller can show why.
    """

    def __init__(self, why: str, view: dict[str, Any] | None = None):
        super().__init__(why)
        self.why = why
        self.view = view


@dataclass(frozen=True)
class JobFilter:
    """The filters of a job list; None means any."""

    printer: str | None = None
    state: str | None = None
    sender: str | None = None
    since: float | None = None  # created at or after (epoch seconds)


class IPrinterControl(Interface):
    """The printer side as an operator sees and drives it.

    Every operation fires only once its change is on disk (the job's state
    in the spool, a printer's pause in its spool directory), so what the
    caller is told survives a crash.  Each takes *by*, the operator's name,
    for the log and the job's timeline.
    """

    def printers() -> "list[dict[str, Any]]":
        """Every printer the appliance prints for, in configuration order."""

    def printer(name: str) -> "dict[str, Any]":
        """One printer's view; raises UnknownPrinter."""

    def jobs(filter: JobFilter, cursor: str | None, limit: int) -> "Deferred[tuple[list[dict[str, Any]], str | None]]":
        """A page of jobs, newest first, and the cursor of the next page
        (None on the last).  Finished jobs stay for ``history_days``."""

    def job(job_id: str) -> "Deferred[dict[str, Any]]":
        """One job with its timeline; fails with UnknownJob."""

    def cancel(job_id: str, by: str) -> "Deferred[dict[str, Any]]":
        """pending, pending-held or processing -> canceled, never printed
        after; a send under way is cut.  Fails with NotAllowed, UnknownJob."""

    def hold(job_id: str, by: str) -> "Deferred[dict[str, Any]]":
        """pending -> pending-held (job-hold-until-specified)."""

    def release(job_id: str, by: str) -> "Deferred[dict[str, Any]]":
        """A job held by an operator (or for its sender's release) -> pending."""

    def retry(job_id: str, by: str) -> "Deferred[dict[str, Any]]":
        """A job waiting for its printer (printer-stopped): try now."""

    def pause(name: str, by: str) -> "Deferred[dict[str, Any]]":
        """Stop sending to printer *name*; mail is still accepted and its
        jobs wait ``pending``.  Fires with the printer's view."""

    def resume(name: str, by: str) -> "Deferred[dict[str, Any]]":
        """Undo :meth:`pause`."""


class IQueueControl(Interface):
    """The outbound queue as an operator sees and drives it."""

    def messages() -> "list[dict[str, Any]]":
        """Each queued message: ``id``, ``sender``, ``recipients``,
        ``attempts``, ``next_attempt``, ``last_reply``, ``created``, ``size``."""

    def retry(queue_id: str, by: str) -> "Deferred[dict[str, Any]]":
        """Try this message now; fails with KeyError if it is not queued."""

    def delete(queue_id: str, by: str) -> "Deferred[None]":
        """Drop this message from the queue, on disk first."""


def allowed_operations(job: dict[str, Any]) -> tuple[str, ...]:
    """The operations a job's state allows, in the order the console shows
    them (the page's buttons; the operations check the same rules)."""
    state, reasons = job["state"], job.get("state_reasons") or []
    if state == "pending":
        return ("cancel", "hold")
    if state == "pending-held":
        if JOB_HOLD_UNTIL_SPECIFIED in reasons or SENDER_RELEASE in reasons:
            return ("release", "cancel")
        if "printer-stopped" in reasons:
            return ("retry", "cancel")
        return ("cancel",)
    if state == "processing":
        return ("cancel",)
    return ()


#: job-state-reasons of a job held until its sender releases it (the
#: sender-authentication hold; release works on it like an operator hold).
SENDER_RELEASE = "job-hold-until-release"

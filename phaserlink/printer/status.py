"""Status mail: telling the sender what happened to a job.

What is sent is the intersection of what the printer's ``notify`` allows
and what the sender asked for in ``X-PhaserLink-Notify`` (all the printer
allows when the sender asked for nothing).  ``trace`` means every event,
including each fragment of a split job and the set being complete.

Status mail goes only to senders allowed to print on the printer: a job
from anybody else (possible with a remote mailbox) is dropped without a
word, because answering it would be backscatter to a forged address.  It
is queued with the null reverse-path (RFC 3834, RFC 5321 4.5.5) so that no
bounce of a status mail ever comes back, and its body is the
multipart/report of :func:`phaserlink.message.report.write_status_report`.
"""

from __future__ import annotations

from typing import Callable, Iterable

from twisted.logger import Logger

from phaserlink.config import NOTIFY_EVENTS, PrinterConfig, SiteConfig
from phaserlink.message import fields
from phaserlink.printer.jobs import Job

log = Logger()

# Events a job goes through; the first four are notify keywords themselves.
RECEIVED = "received"
PRINTED = "printed"
ERRORS = "errors"
DELAYED = "delayed"
FRAGMENT = "fragment"  # trace only: one message/partial fragment arrived
SET_COMPLETE = "set-complete"  # trace only: all fragments arrived
TRACE = "trace"

# The event names of the report format (phaserlink.message.fields.EVENTS).
REPORT_EVENTS = {RECEIVED: "received", PRINTED: "printed", ERRORS: "failed", DELAYED: "delayed",
                 FRAGMENT: "fragment", SET_COMPLETE: "fragment"}

_EVENT_NEEDS = {RECEIVED: RECEIVED, PRINTED: PRINTED, ERRORS: ERRORS, DELAYED: DELAYED,
                FRAGMENT: TRACE, SET_COMPLETE: TRACE}


def parse_notify(value: str | Iterable[str] | None) -> list[str] | None:
    """The sender's request (header text or a list) -> known keywords, or
    None when nothing usable was asked for.  ``none`` asks for silence."""
    if value is None:
        return None
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    words = [w.strip().lower() for w in items if w.strip()]
    if not words:
        return None
    if "none" in words:
        return []
    known = [w for w in words if w in NOTIFY_EVENTS]
    return known if known else None


def effective_notify(printer_notify: Iterable[str], requested: Iterable[str] | None) -> frozenset[str]:
    """What will be sent: the printer's policy, narrowed by the request."""
    allowed = frozenset(printer_notify)
    if requested is None:
        return allowed
    return allowed & frozenset(requested)


def wants(effective: frozenset[str], event: str) -> bool:
    """True if *event* is reported under *effective* (``trace`` = all)."""
    return TRACE in effective or _EVENT_NEEDS.get(event, event) in effective


class StatusMailer:
    """Queues status reports for one printer's jobs."""

    def __init__(self, site: SiteConfig, printer: PrinterConfig, queue, write_report: Callable[..., None]):
        self.site = site
        self.printer = printer
        self.queue = queue
        self.write_report = write_report

    def may_mail(self, job: Job) -> bool:
        return bool(job.sender) and self.printer.sender_allowed(job.sender or "")

    def notify(self, job: Job, event: str, human_text: str) -> bool:
        """Queue a report of *event* if the policy asks for it; True if queued.

        A failure to queue is logged, never raised: the job's fate does
        not depend on whether its status mail could be stored.
        """
        effective = effective_notify(self.printer.notify, job.notify)
        if not wants(effective, event):
            return False
        if not self.may_mail(job):
            log.info("printer {printer} job {job}: no {event} mail to {sender!r}, not an allowed sender",
                     printer=self.printer.name, job=job.job_id, event=event, sender=job.sender)
            return False
        message = None
        try:
            message = self.queue.submit("", [job.sender])
            self.write_report(
                message,
                from_=self.site.appliance.status_sender,
                to=job.sender,
                printer=self.printer.name,
                job_id=job.job_id,
                state=job.state,
                reasons=list(job.reasons),
                event=REPORT_EVENTS.get(event, event),
                printer_address=self.printer.addresses[0],
                pages=job.pages,
                original_message_id=job.message_id,
                human_text=human_text,
                extra_fields={fields.SENDER_JOB_ID: job.client_job_id} if job.client_job_id else None,
            )
            queue_id = message.commit_in_background()  # durable in the queue's worker pool; failures logged there
        except Exception as e:
            if message is not None:
                try:
                    message.abort()
                except Exception:
                    pass
            log.error("printer {printer} job {job}: could not queue {event} mail to {sender}: {e}",
                      printer=self.printer.name, job=job.job_id, event=event, sender=job.sender, e=e)
            return False
        log.info("printer {printer} job {job}: {event} mail to {sender} queued as {qid}",
                 printer=self.printer.name, job=job.job_id, event=event, sender=job.sender, qid=queue_id)
        return True

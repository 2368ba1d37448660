"""Status mail: telling the sender what happened to a job.

What is sent is the intersection of what the printer's ``notify`` allows
and what the sender asked for in ``X-PhaserLink-Notify`` (all the printer
allows when the sender asked for nothing).  The events are named in
:mod:`phaserlink.message.events`; ``fragment`` covers each fragment of a
split job and the set being complete.

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

from phaserlink.config import PrinterConfig, SiteConfig
from phaserlink.message import events, fields
from phaserlink.printer.jobs import Job

log = Logger()

# Events a job goes through: the names of phaserlink.message.events, which
# site.ini, the header and the reports share.  ERRORS is the old name of
# FAILED, kept for the callers that import it.
RECEIVED = events.RECEIVED
PRINTED = events.PRINTED
FAILED = ERRORS = events.FAILED
DELAYED = events.DELAYED
FRAGMENT = events.FRAGMENT  # one message/partial fragment arrived
SET_COMPLETE = "set-complete"  # all fragments arrived: reported, and asked for, as FRAGMENT

# What a report says for an event that is not itself one of events.EVENTS.
REPORT_EVENTS = {SET_COMPLETE: events.FRAGMENT}

_EVENT_NEEDS = {SET_COMPLETE: events.FRAGMENT}


def parse_notify(value: str | Iterable[str] | None) -> list[str] | None:
    """The sender's request (header text or a list) -> known events, or
    None when nothing usable was asked for.  ``none`` asks for silence.
    Old words (``errors``, ``trace``) are read as they were meant, so a job
    spooled before an upgrade keeps its sender's wish."""
    wanted = events.read_events(value)
    return None if wanted is None else list(wanted)


def effective_notify(printer_notify: Iterable[str], requested: Iterable[str] | None) -> frozenset[str]:
    """What will be sent: the printer's policy, narrowed by the request.
    Both sides are read as events first, so a printer with ``trace`` (all
    events) and a sender asking for ``printed`` get ``printed``."""
    allowed = frozenset(events.read_events(list(printer_notify)) or ())
    if requested is None:
        return allowed
    return allowed & frozenset(events.read_events(list(requested)) or ())


def wants(effective: frozenset[str], event: str) -> bool:
    """True if *event* is reported under *effective*."""
    return _EVENT_NEEDS.get(event, event) in effective


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

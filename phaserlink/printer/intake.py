"""From a retrieved message to a spooled job (or a fragment of one).

The intake runs after a message is fsync'd in ``incoming/`` and before it is
deleted at its source.  It decides what the message is:

- already seen (same Message-ID, or a message/partial set already taken
  in, or a fragment number already held): dropped, and its UIDL journalled
  so that the source copy is deleted without printing twice;
- a message/partial fragment (RFC 2046 5.2.2): kept in its set's job
  directory, the set being a job in ``pending-held`` / ``job-incoming``
  until all parts are there (any order), then reassembled into a normal
  job; a set still incomplete after ``partial_timeout`` is aborted and
  the sender told which parts arrived;
- otherwise a new ``pending`` job.

Every outcome is durable (spool state and journal) when the returned
Deferred fires, which is what allows the source to delete the message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import PrinterConfig
from phaserlink.durable import fsync_dir
from phaserlink.printer import jobs as J
from phaserlink.printer.dispatch import human_duration
from phaserlink.printer.jobs import Job, PartialSet, describe_partial
from phaserlink.printer.journal import Journal
from phaserlink.printer.local_source import run_inline
from phaserlink.printer.spool import JobSpool, new_job_id
from phaserlink.printer.status import FRAGMENT, RECEIVED, SET_COMPLETE, StatusMailer
from phaserlink.printer.toolkit import MessageFacts, Toolkit

log = Logger()

#: A set claiming more parts than this is refused (a 500 MB job in 5 MB
#: fragments has 100; this leaves room without inviting abuse).
MAX_PARTS = 10_000

_NO_FACTS = MessageFacts(sender=None, message_id=None, title=None, copies=1, notify=None, partial=None)


def _reassemble_durably(reassemble, paths: list[Path], out: Path) -> None:
    reassemble(paths, out)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(out.parent)


class Intake:
    """Takes retrieved messages into one printer's spool."""

    def __init__(self, printer: PrinterConfig, spool: JobSpool, journal: Journal, status: StatusMailer,
                 tools: Toolkit, reactor, on_job: Callable[[Job], None], *,
                 blocking: Callable[..., defer.Deferred] = run_inline):
        self.printer = printer
        self.spool = spool
        self.journal = journal
        self.status = status
        self.tools = tools
        self.reactor = reactor
        self.on_job = on_job
        self.blocking = blocking
        self.sets: dict[str, Job] = {}  # partial id -> the set's job
        self.timers: dict[str, object] = {}  # job id -> DelayedCall (partial timeout)

    @property
    def index(self):
        return self.journal.index

    def _now(self) -> float:
        return self.reactor.seconds()

    def _inspect(self, path: Path) -> MessageFacts:
        try:
            return self.tools.inspect(path)
        except Exception:
            # Unreadable headers: still a job, so that extraction fails it
            # with a reason instead of it vanishing.
            log.failure("printer {printer}: cannot read the header of {path}", printer=self.printer.name, path=path)
            return _NO_FACTS

    def _drop(self, path: Path, source: str, uidl: str, why: str) -> defer.Deferred:
        log.info("printer {printer}: {uidl} from {source} not printed: {why}",
                 printer=self.printer.name, uidl=uidl, source=source, why=why)
        path.unlink(missing_ok=True)
        self.journal.append(Journal.uidl(source, uidl), sync=False)
        return defer.succeed(None)

    def _new_job(self, facts: MessageFacts, source: str, uidl: str, state: str, reasons: list[str]) -> Job:
        now = self._now()
        return Job(
            job_id=new_job_id(now), printer=self.printer.name, state=state, reasons=reasons,
            created=now, changed=now, source=source, uidls=[uidl], message_id=facts.message_id,
            sender=facts.sender, client_job_id=facts.client_job_id, title=facts.title or "", copies=max(1, min(facts.copies, self.printer.copies_max)),
            notify=facts.notify,
        )

    # -- one message -------------------------------------------------------------------

    def take(self, path: Path, uidl: str, source: str) -> defer.Deferred:
        """Spool the fsync'd message at *path* (moved, not copied)."""
        facts = self._inspect(path)
        if facts.partial is not None:
            return self._fragment(path, uidl, source, facts)
        if facts.message_id and facts.message_id in self.index.message_ids:
            return self._drop(path, source, uidl, f"already received as {facts.message_id}")
        job = self._new_job(facts, source, uidl, J.PENDING, [J.JOB_QUEUED])
        if not self.printer.sender_allowed(facts.sender or ""):
            job.state, job.reasons = J.ABORTED, [J.SENDER_NOT_ALLOWED]
            job.detail = f"{facts.sender or 'an unknown sender'} may not print on {self.printer.name}"
            log.warn("printer {printer}: {uidl} from {sender!r} refused: not an allowed sender",
                     printer=self.printer.name, uidl=uidl, sender=facts.sender)
        self.spool.create(job, path)
        records = [Journal.uidl(source, uidl)]
        if job.message_id:
            records.append(Journal.message_id(job.message_id))
        self.journal.append(*records, sync=False)
        if not job.terminal:
            log.info("printer {printer} job {job}: spooled {uidl} from {sender} ({title!r})",
                     printer=self.printer.name, job=job.job_id, uidl=uidl, sender=job.sender, title=job.title)
            self.status.notify(job, RECEIVED, (
                f"Your print job {_quoted(job.title)} was received by printer {self.printer.name} "
                f"and is waiting to print (job {job.job_id})."))
        self.on_job(job)
        return defer.succeed(None)

    # -- message/partial ---------------------------------------------------------------

    def _fragment(self, path: Path, uidl: str, source: str, facts: MessageFacts) -> defer.Deferred:
        partial_id, number, total = facts.partial  # type: ignore[misc]
        if not self.printer.sender_allowed(facts.sender or ""):
            return self._drop(path, source, uidl, f"fragment from {facts.sender!r}, not an allowed sender")
        if partial_id in self.index.partials_done:
            return self._drop(path, source, uidl, f"fragment {number} of {partial_id}, a set already taken in")
        if number < 1 or number > MAX_PARTS or (total is not None and not (1 <= total <= MAX_PARTS and number <= total)):
            return self._drop(path, source, uidl, f"fragment {number}/{total} of {partial_id} is not a valid part")
        job = self.sets.get(partial_id)
        if job is None:
            job = self._new_job(facts, source, uidl, J.PENDING_HELD, [J.JOB_INCOMING])
            job.message_id = None  # a fragment's own id; the job's comes from the reassembled message
            job.partial = PartialSet(partial_id, total, {str(number): uidl})
            self.spool.create(job, path, part=number)
            self.sets[partial_id] = job
            self._arm_timeout(job)
        else:
            assert job.partial is not None
            if str(number) in job.partial.parts:
                return self._drop(path, source, uidl, f"fragment {number} of {partial_id} again")
            if total is not None and job.partial.total is not None and total != job.partial.total:
                return self._drop(path, source, uidl,
                                  f"fragment {number} of {partial_id} says {total} parts, the set says {job.partial.total}")
            if total is not None and max(job.partial.numbers()) > total:
                return self._drop(path, source, uidl, f"fragment {number} of {partial_id} says {total} parts, "
                                                      f"but part {max(job.partial.numbers())} arrived")
            job.partial.parts[str(number)] = uidl
            if total is not None:
                job.partial.total = total
            job.uidls.append(uidl)
            job.changed = self._now()
            self.spool.add_part(job, path, number)
        self.journal.append(Journal.uidl(source, uidl), sync=False)
        of = f" of {job.partial.total}" if job.partial.total else ""
        log.info("printer {printer} job {job}: fragment {n}{of} of {pid} ({have} held)",
                 printer=self.printer.name, job=job.job_id, n=number, of=of, pid=partial_id,
                 have=len(job.partial.parts))
        self.status.notify(job, FRAGMENT, (
            f"Part {number}{of} of your print job {_quoted(job.title)} for printer {self.printer.name} "
            f"arrived. So far {describe_partial(job.partial)}."))
        if job.partial.complete():
            return self._complete(job)
        return defer.succeed(None)

    def _arm_timeout(self, job: Job) -> None:
        wait = max(job.created + self.printer.partial_timeout - self._now(), 0.0)
        self.timers[job.job_id] = self.reactor.callLater(wait, self._expire, job.job_id)

    def _disarm(self, job: Job) -> None:
        call = self.timers.pop(job.job_id, None)
        if call is not None and call.active():  # type: ignore[attr-defined]
            call.cancel()  # type: ignore[attr-defined]
        if job.partial is not None:
            self.sets.pop(job.partial.id, None)

    @defer.inlineCallbacks
    def _complete(self, job: Job):
        assert job.partial is not None and job.partial.total is not None
        self._disarm(job)
        log.info("printer {printer} job {job}: all {n} fragments of {pid} arrived; reassembling",
                 printer=self.printer.name, job=job.job_id, n=job.partial.total, pid=job.partial.id)
        self.status.notify(job, SET_COMPLETE, (
            f"All {job.partial.total} parts of your print job {_quoted(job.title)} arrived at printer "
            f"{self.printer.name}; they are being put together."))
        parts = [self.spool.part_path(job.job_id, n) for n in range(1, job.partial.total + 1)]
        message = self.spool.message_path(job.job_id)
        try:
            yield self.blocking(_reassemble_durably, self.tools.reassemble, parts, message)
        except Exception as e:
            log.failure("printer {printer} job {job}: reassembly failed", printer=self.printer.name, job=job.job_id)
            self.journal.append(Journal.partial_done(job.partial.id), sync=False)
            job.state, job.reasons = J.ABORTED, [J.DOCUMENT_FORMAT_ERROR]
            job.detail = f"the {job.partial.total} parts could not be put back together: {getattr(e, 'reason', e)}"
            job.changed = self._now()
            self.spool.save(job)
            self.on_job(job)
            return
        facts = self._inspect(message)
        job.message_id = facts.message_id
        job.title = facts.title or job.title
        job.sender = facts.sender or job.sender
        job.client_job_id = facts.client_job_id or job.client_job_id
        job.copies = max(1, min(facts.copies, self.printer.copies_max)) if facts.copies else job.copies
        if facts.notify is not None:
            job.notify = facts.notify
        records = [Journal.partial_done(job.partial.id)]
        if job.message_id and job.message_id in self.index.message_ids:
            self.journal.append(*records)  # synced: the set's job, which says so too, goes now
            self.spool.remove(job.job_id)
            log.info("printer {printer} job {job}: reassembled message {mid} was already received; dropped",
                     printer=self.printer.name, job=job.job_id, mid=job.message_id)
            return
        job.state, job.reasons = J.PENDING, [J.JOB_QUEUED]
        job.changed = self._now()
        self.spool.save(job)
        if job.message_id:
            records.append(Journal.message_id(job.message_id))
        self.journal.append(*records, sync=False)
        for part in parts:
            part.unlink(missing_ok=True)
        self.status.notify(job, RECEIVED, (
            f"Your print job {_quoted(job.title)} ({job.partial.total} parts) was received by printer "
            f"{self.printer.name} and is waiting to print (job {job.job_id})."))
        self.on_job(job)

    def _expire(self, job_id: str) -> None:
        self.timers.pop(job_id, None)
        job = next((j for j in self.sets.values() if j.job_id == job_id), None)
        if job is None or job.partial is None:
            return
        self.sets.pop(job.partial.id, None)
        job.state, job.reasons = J.ABORTED, [J.ABORTED_BY_SYSTEM, J.JOB_DATA_INSUFFICIENT]
        job.detail = (f"{describe_partial(job.partial)} after waiting "
                      f"{human_duration(self.printer.partial_timeout)} for the rest")
        job.changed = self._now()
        self.spool.save(job)
        self.journal.append(Journal.partial_done(job.partial.id), sync=False)
        log.warn("printer {printer} job {job}: incomplete set {pid} given up: {why}",
                 printer=self.printer.name, job=job.job_id, pid=job.partial.id, why=job.detail)
        self.on_job(job)

    # -- start and stop ----------------------------------------------------------------

    def recover(self, job: Job) -> None:
        """Take back a job found in the spool at start."""
        if job.state == J.PENDING_HELD and J.JOB_INCOMING in job.reasons and job.partial is not None:
            self.sets[job.partial.id] = job
            if job.partial.complete():
                self._complete(job)
            else:
                self._arm_timeout(job)
            return
        # Extracted documents are not fsync'd (they are derived data): after
        # a crash, extract again; printed_documents says where to resume.
        job.documents = None
        self.on_job(job)

    def stop(self) -> None:
        for call in self.timers.values():
            if call.active():  # type: ignore[attr-defined]
                call.cancel()  # type: ignore[attr-defined]
        self.timers.clear()


def _quoted(title: str) -> str:
    return f'"{title}"' if title else "(untitled)"

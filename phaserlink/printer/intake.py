"""From a retrieved message to a spooled job (or a fragment of one).

The intake runs after a message is fsync'd in ``incoming/`` and before it is
deleted at its source.  It decides what the message is:

- already seen (same Message-ID, or a message/partial set already taken
  in or failed, or a fragment number already held): dropped, and its UIDL
  recorded so that the source copy is deleted without printing twice;
- a message whose header cannot be read (too large, a line too long): a
  job aborted at once with ``document-format-error``, its sender (found in
  a bounded prefix of the header) told why;
- a message/partial fragment (RFC 2046 5.2.2): kept in its set's job
  directory, the set being a job in ``pending-held`` / ``job-incoming``
  until all parts are there (any order), then reassembled into a normal
  job; a set still incomplete after ``partial_timeout`` is aborted and
  the sender told which parts arrived.  A set that can never complete (a
  total of 0 or over :data:`MAX_PARTS`, a part number above the total,
  fragments that disagree on the total) is failed at once, not left to
  time out;
- otherwise a new ``pending`` job.

Each outcome is ONE spool call (the job's change and its seen records,
docs/spool.md) and is durable when the returned Deferred fires, which is
what allows the source to delete the message.  Outcomes of one printer are
decided one at a time (a retrieved message, a set's time-out, a
reassembly), so in-memory sets never race their own spool writes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.config import PrinterConfig
from phaserlink.message import job_options
from phaserlink.printer import jobs as J
from phaserlink.printer import journal
from phaserlink.printer.dispatch import human_duration
from phaserlink.printer.jobs import Job, PartialSet, describe_partial
from phaserlink.printer.spool import JobSpool, new_job_id
from phaserlink.printer.status import FRAGMENT, RECEIVED, SET_COMPLETE, StatusMailer
from phaserlink.printer.toolkit import MessageFacts, Toolkit, sender_from_prefix
from phaserlink.trust.hold import held_token
from phaserlink.threads import pools_for

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    INTAKE_MAX_PARTS as MAX_PARTS,
    SPOOL_RETRY,
)

class Intake:
    """Takes retrieved messages into one printer's spool."""

    def __init__(self, printer: PrinterConfig, spool: JobSpool, status: StatusMailer,
                 tools: Toolkit, reactor, on_job: Callable[[Job], None]):
        self.printer = printer
        self.spool = spool
        self.status = status
        self.tools = tools
        self.reactor = reactor
        self.on_job = on_job
        self.pools = pools_for(reactor)
        self.held: dict[str, Job] = {}  # hold token -> the job waiting for its release
        self.sets: dict[str, Job] = {}  # partial id -> the set's job
        self.timers: dict[str, object] = {}  # job id -> DelayedCall (partial timeout)
        self._turn = defer.DeferredLock()  # one outcome at a time

    @property
    def seen(self) -> journal.SeenIndex:
        return self.spool.seen

    def _now(self) -> float:
        return self.reactor.seconds()

    def _inspect(self, path: Path) -> tuple[MessageFacts, str | None]:
        """The message's facts, and why its header could not be read (None if it could)."""
        try:
            return self.tools.inspect(path), None
        except OSError:
            raise  # the disk, not the document: the message stays at its source
        except Exception as e:
            why = getattr(e, "reason", None) or str(e) or type(e).__name__
            sender = None
            try:
                sender = sender_from_prefix(path)
            except OSError:
                raise
            except Exception:
                log.failure("printer {printer}: no sender found in {path}", printer=self.printer.name, path=path)
            return MessageFacts(sender=sender, message_id=None, title=None, copies=1, notify=None,
                                partial=None), why

    def _drop(self, path: Path, source: str, uidl: str, why: str) -> defer.Deferred:
        log.info("printer {printer}: {uidl} from {source} not printed: {why}",
                 printer=self.printer.name, uidl=uidl, source=source, why=why)
        return self.spool.note(seen=[journal.uidl(source, uidl)], discard=[path])

    def _new_job(self, facts: MessageFacts, source: str, uidl: str, state: str, reasons: list[str]) -> Job:
        now = self._now()
        job = Job(
            job_id=new_job_id(now), printer=self.printer.name, state=state, reasons=reasons,
            created=now, changed=now, source=source, uidls=[uidl], message_id=facts.message_id,
            sender=facts.sender, client_job_id=facts.client_job_id, notify=facts.notify,
            auth=getattr(facts, "auth", None),
        )
        self._take_options(job, facts)
        return job

    def _take_options(self, job: Job, facts: MessageFacts) -> None:
        """The sender's title, copies and options: the header's, and with
        ``subject_options`` those said in brackets in the Subject where the
        header says nothing (docs/options.md).  Brackets of options leave
        the title; what was not understood is noted for the status mail."""
        title, options = facts.title or "", facts.options or ""
        header = job_options.JobOptions.parse(facts.options)
        asked = header
        notes: list[str] = []
        if self.printer.subject_options and facts.subject:
            said = job_options.parse_subject(facts.subject)
            notes += [f"{item} in the Subject was not understood; not applied" for item in said.options.ignored]
            if said.options:
                asked = header.over(said.options)
                notes += [f"option {item!r} not understood; ignored" for item in header.ignored]
                options = asked.without("copies").header_value()
            if title == facts.subject:  # the title is the Subject: without the brackets read
                title = said.title
        copies = facts.copies if facts.copies_given else (asked.copies or facts.copies)
        if copies > self.printer.copies_max:
            notes.append(f"copies={copies} is more than printer {self.printer.name} makes "
                         f"(copies_max = {self.printer.copies_max}); {self.printer.copies_max} printed")
        job.title, job.options = title, options
        job.copies = max(1, min(copies, self.printer.copies_max))
        job.option_notes = list(dict.fromkeys(job.option_notes + notes))

    def _refuses(self, sender: str | None) -> bool:
        """Who may print is decided once, in the SMTP session
        (phaserlink.trust, docs/trust.md): what is in the appliance's own
        store got its 250 there, so it prints (or was refused with a reply
        the sender saw).  Only a remote mailbox, whose mail never passed our
        SMTP session, is still held to ``allowed_senders`` here."""
        return self.printer.mailbox is not None and not self.printer.sender_allowed(sender or "")

    # -- one message -------------------------------------------------------------------

    def take(self, path: Path, uidl: str, source: str) -> defer.Deferred:
        """Spool the fsync'd message at *path* (moved, not copied)."""
        return self._turn.run(lambda: defer.ensureDeferred(self._take(path, uidl, source)))

    def _examine(self, path: Path) -> tuple[MessageFacts, str | None, str | None]:
        """:meth:`_inspect` and the message's hold token (docs/trust.md), in
        one worker task: opening and parsing the header in the reactor
        thread was 1.2 ms per message there at site scale (bench/scale.py)."""
        facts, unreadable = self._inspect(path)
        token = held_token(path, self.printer.name) if unreadable is None and facts.partial is None else None
        return facts, unreadable, token

    async def _take(self, path: Path, uidl: str, source: str) -> None:
        facts, unreadable, token = await self.pools.cpu(self._examine, path)
        if unreadable is not None:
            return await self._unreadable(path, uidl, source, facts, unreadable)
        automatic = getattr(facts, "automatic", None)
        if automatic and self.printer.mailbox is not None:
            # Only a remote mailbox: our SMTP session already refused such
            # mail to a printer (docs/trust.md).  Not printed, not answered.
            return await self._drop(path, source, uidl, f"{automatic}: a bounce or an automatic message is "
                                                        f"never printed nor answered (it would start a mail loop)")
        if facts.partial is not None:
            return await self._fragment(path, uidl, source, facts)
        if facts.message_id and self.seen.has_message_id(facts.message_id):
            return await self._drop(path, source, uidl, f"already received as {facts.message_id}")
        job = self._new_job(facts, source, uidl, J.PENDING, [J.JOB_QUEUED])
        if self._refuses(facts.sender):
            job.state, job.reasons = J.ABORTED, [J.SENDER_NOT_ALLOWED]
            job.detail = f"{facts.sender or 'an unknown sender'} may not print on {self.printer.name}"
            log.warn("printer {printer}: {uidl} from {sender!r} refused: not an allowed sender",
                     printer=self.printer.name, uidl=uidl, sender=facts.sender)
        token = token if not job.terminal else None
        if token is not None:  # an unauthenticated sender's job: waits for its release (docs/trust.md)
            job.state, job.reasons, job.hold_token = J.PENDING_HELD, [J.JOB_HOLD_UNTIL_SPECIFIED], token
        records = [journal.uidl(source, uidl)]
        if job.message_id:
            records.append(journal.message_id(job.message_id))
        await self.spool.create(job, path, seen=records)
        if token is not None:
            log.info("printer {printer} job {job}: held until its sender releases it", printer=self.printer.name,
                     job=job.job_id)
            self._hold(job)
            return
        if not job.terminal:
            log.info("printer {printer} job {job}: spooled {uidl} from {sender} ({title!r})",
                     printer=self.printer.name, job=job.job_id, uidl=uidl, sender=job.sender, title=job.title)
            self.status.notify(job, RECEIVED, (
                f"Your print job {_quoted(job.title)} was received by printer {self.printer.name} "
                f"and is waiting to print (job {job.job_id})."))
        self.on_job(job)

    async def _unreadable(self, path: Path, uidl: str, source: str, facts: MessageFacts, why: str) -> None:
        """A header that cannot be read is the document's fault: abort the
        job with a reason the sender gets (item 5 of issue 7: it vanished)."""
        job = self._new_job(facts, source, uidl, J.ABORTED, [J.DOCUMENT_FORMAT_ERROR])
        job.detail = f"the message's header could not be read: {why}"
        if facts.sender is None:
            log.error("printer {printer}: {uidl} from {source} not printed: its header could not be read ({why}) "
                      "and no From: or Return-Path: was found in its first bytes, so nobody can be told",
                      printer=self.printer.name, uidl=uidl, source=source, why=why)
        elif self._refuses(facts.sender):
            job.reasons = [J.SENDER_NOT_ALLOWED]
            log.warn("printer {printer}: {uidl} from {sender!r} refused: not an allowed sender "
                     "(and its header could not be read: {why})",
                     printer=self.printer.name, uidl=uidl, sender=facts.sender, why=why)
        else:
            log.warn("printer {printer}: {uidl} from {sender}: header unreadable ({why}); aborted",
                     printer=self.printer.name, uidl=uidl, sender=facts.sender, why=why)
        await self.spool.create(job, path, seen=[journal.uidl(source, uidl)])
        self.on_job(job)

    # -- message/partial ---------------------------------------------------------------

    async def _fragment(self, path: Path, uidl: str, source: str, facts: MessageFacts) -> None:
        partial_id, number, total = facts.partial  # type: ignore[misc]
        if self._refuses(facts.sender):
            return await self._drop(path, source, uidl, f"fragment from {facts.sender!r}, not an allowed sender")
        if self.seen.partial_done(partial_id):
            return await self._drop(path, source, uidl, f"fragment {number} of {partial_id}, a set already "
                                                        "taken in or failed")
        job = self.sets.get(partial_id)
        # A contradiction first: a redelivered fragment that now states
        # another total still means the set can never be trusted.
        problem = partial_problem(number, total, job.partial if job is not None else None)
        if problem is not None:
            return await self._fail_set(path, uidl, source, facts, job, problem)
        if job is not None and str(number) in job.partial.parts:  # type: ignore[union-attr]
            return await self._drop(path, source, uidl, f"fragment {number} of {partial_id} again")
        if job is None:
            job = self._new_job(facts, source, uidl, J.PENDING_HELD, [J.JOB_INCOMING])
            job.message_id = None  # a fragment's own id; the job's comes from the reassembled message
            job.partial = PartialSet(partial_id, total, {str(number): uidl})
            await self.spool.create(job, path, part=number, seen=[journal.uidl(source, uidl)])
            self.sets[partial_id] = job
            self._arm_timeout(job)
        else:
            assert job.partial is not None
            parts = dict(job.partial.parts)
            parts[str(number)] = uidl
            # A copy: the set in memory changes only once the disk says so.
            job = dataclasses.replace(job, partial=PartialSet(partial_id, total if total is not None else job.partial.total,
                                                              parts),
                                      uidls=job.uidls + [uidl], changed=self._now())
            await self.spool.add_part(job, path, number, seen=[journal.uidl(source, uidl)])
            self.sets[partial_id] = job
        of = f" of {job.partial.total}" if job.partial.total else ""
        log.info("printer {printer} job {job}: fragment {n}{of} of {pid} ({have} held)",
                 printer=self.printer.name, job=job.job_id, n=number, of=of, pid=partial_id,
                 have=len(job.partial.parts))
        self.status.notify(job, FRAGMENT, (
            f"Part {number}{of} of your print job {_quoted(job.title)} for printer {self.printer.name} "
            f"arrived. So far {describe_partial(job.partial)}."))
        if job.partial.complete():
            await self._complete(job)

    async def _fail_set(self, path: Path, uidl: str, source: str, facts: MessageFacts, job: Job | None,
                        problem: str) -> None:
        """Fragments that can never make a message: fail the set now, say
        exactly why, and drop its later fragments (partial-done)."""
        partial_id, number, _total = facts.partial  # type: ignore[misc]
        records = [journal.uidl(source, uidl), journal.partial_done(partial_id)]
        detail = f"the parts of this split job do not fit together: {problem}"
        if job is None:
            job = self._new_job(facts, source, uidl, J.ABORTED, [J.DOCUMENT_FORMAT_ERROR, J.JOB_DATA_INSUFFICIENT])
            job.message_id = None
            job.partial = PartialSet(partial_id, None, {})
            job.detail = detail
            await self.spool.create(job, path, seen=records)
        else:
            job = dataclasses.replace(job, state=J.ABORTED,
                                      reasons=[J.DOCUMENT_FORMAT_ERROR, J.JOB_DATA_INSUFFICIENT],
                                      detail=detail, uidls=job.uidls + [uidl], changed=self._now())
            await self.spool.save(job, seen=records, discard=[path])
            self._disarm(job)
        log.warn("printer {printer} job {job}: set {pid} failed at fragment {n}: {why}",
                 printer=self.printer.name, job=job.job_id, pid=partial_id, n=number, why=problem)
        self.on_job(job)

    def _arm_timeout(self, job: Job) -> None:
        wait = max(job.created + self.printer.partial_timeout - self._now(), 0.0)
        self.timers[job.job_id] = self.reactor.callLater(wait, self._expire, job.job_id)

    def _disarm(self, job: Job) -> None:
        call = self.timers.pop(job.job_id, None)
        if call is not None and call.active():  # type: ignore[attr-defined]
            call.cancel()  # type: ignore[attr-defined]
        if job.partial is not None:
            self.sets.pop(job.partial.id, None)

    async def _complete(self, job: Job) -> None:
        """All fragments are durable in the set: put them together.  A
        failure (a full disk) keeps the set as it was and tries again after
        :data:`SPOOL_RETRY`: the fragment that completed the set is already
        recorded (and so deleted at its source), nothing else would."""
        self._disarm(job)
        try:
            await self._put_together(dataclasses.replace(job))
        except Exception:
            log.failure("printer {printer} job {job}: could not put the set together; trying again in {s:g}s",
                        printer=self.printer.name, job=job.job_id, s=SPOOL_RETRY)
            self._keep_trying(job, self._complete_later)

    def _keep_trying(self, job: Job, later: Callable[[str], object]) -> None:
        assert job.partial is not None
        self.sets[job.partial.id] = job
        self.timers[job.job_id] = self.reactor.callLater(SPOOL_RETRY, later, job.job_id)

    def _complete_later(self, job_id: str) -> defer.Deferred | None:
        self.timers.pop(job_id, None)
        job = next((j for j in self.sets.values() if j.job_id == job_id), None)
        if job is None:
            return None
        return self._turn.run(lambda: defer.ensureDeferred(self._complete(job)))

    async def _put_together(self, job: Job) -> None:
        assert job.partial is not None and job.partial.total is not None
        log.info("printer {printer} job {job}: all {n} fragments of {pid} arrived; reassembling",
                 printer=self.printer.name, job=job.job_id, n=job.partial.total, pid=job.partial.id)
        self.status.notify(job, SET_COMPLETE, (
            f"All {job.partial.total} parts of your print job {_quoted(job.title)} arrived at printer "
            f"{self.printer.name}; they are being put together."))
        parts = [self.spool.part_path(job.job_id, n) for n in range(1, job.partial.total + 1)]
        message = self.spool.message_path(job.job_id)
        try:
            await self.pools.cpu(self.tools.reassemble, parts, message)
        except OSError:
            # The disk, not the document (ENOSPC, EIO): try again later.
            message.unlink(missing_ok=True)
            raise
        except Exception as e:
            log.failure("printer {printer} job {job}: reassembly failed", printer=self.printer.name, job=job.job_id)
            job.state, job.reasons = J.ABORTED, [J.DOCUMENT_FORMAT_ERROR]
            job.detail = f"the {job.partial.total} parts could not be put back together: {getattr(e, 'reason', e)}"
            job.changed = self._now()
            await self.spool.save(job, seen=[journal.partial_done(job.partial.id)])
            self.on_job(job)
            return
        facts, unreadable = self._inspect(message)
        if unreadable is None:
            job.message_id = facts.message_id
            job.sender = facts.sender or job.sender
            job.client_job_id = facts.client_job_id or job.client_job_id
            job.option_notes, first_title = [], job.title
            self._take_options(job, facts)  # the whole message's header, not the first fragment's
            job.title = job.title or first_title
            if facts.notify is not None:
                job.notify = facts.notify
        records = [journal.partial_done(job.partial.id)]
        if job.message_id and self.seen.has_message_id(job.message_id):
            # Synced: the set's job, which says so too, goes now.
            await self.spool.remove(job.job_id, seen=records)
            log.info("printer {printer} job {job}: reassembled message {mid} was already received; dropped",
                     printer=self.printer.name, job=job.job_id, mid=job.message_id)
            return
        job.changed = self._now()
        if unreadable is not None:
            job.state, job.reasons = J.ABORTED, [J.DOCUMENT_FORMAT_ERROR]
            job.detail = f"the reassembled message's header could not be read: {unreadable}"
            await self.spool.save(job, seen=records, discard=parts, flush=[message])
            self.on_job(job)
            return
        job.state, job.reasons = J.PENDING, [J.JOB_QUEUED]
        if job.message_id:
            records.append(journal.message_id(job.message_id))
        await self.spool.save(job, seen=records, discard=parts, flush=[message])
        self.status.notify(job, RECEIVED, (
            f"Your print job {_quoted(job.title)} ({job.partial.total} parts) was received by printer "
            f"{self.printer.name} and is waiting to print (job {job.job_id})."))
        self.on_job(job)

    def _expire(self, job_id: str) -> defer.Deferred:
        return self._turn.run(lambda: defer.ensureDeferred(self._expire_now(job_id)))

    async def _expire_now(self, job_id: str) -> None:
        self.timers.pop(job_id, None)
        held = next((j for j in self.sets.values() if j.job_id == job_id), None)
        if held is None or held.partial is None:
            return
        self.sets.pop(held.partial.id, None)
        detail = (f"{describe_partial(held.partial)} after waiting "
                  f"{human_duration(self.printer.partial_timeout)} for the rest")
        job = dataclasses.replace(held, state=J.ABORTED, reasons=[J.ABORTED_BY_SYSTEM, J.JOB_DATA_INSUFFICIENT],
                                  detail=detail, changed=self._now())
        try:
            await self.spool.save(job, seen=[journal.partial_done(held.partial.id)])
        except Exception:
            log.failure("printer {printer} job {job}: could not give up the set; trying again in {s:g}s",
                        printer=self.printer.name, job=job_id, s=SPOOL_RETRY)
            self._keep_trying(held, self._expire)
            return
        log.warn("printer {printer} job {job}: incomplete set {pid} given up: {why}",
                 printer=self.printer.name, job=job.job_id, pid=job.partial.id, why=job.detail)
        self.on_job(job)

    # -- start and stop ----------------------------------------------------------------

    # -- held jobs (docs/trust.md) ------------------------------------------------------

    def _hold(self, job: Job) -> None:
        assert job.hold_token is not None
        self.held[job.hold_token] = job
        wait = max(job.created + self.printer.hold_timeout - self._now(), 0.0)
        self.timers[job.job_id] = self.reactor.callLater(wait, self._hold_expired, job.hold_token)

    def is_held(self, token: str) -> bool:
        return token in self.held

    def release(self, token: str) -> defer.Deferred:
        """The sender released the job: it prints (once: the token is gone)."""
        return self._turn.run(lambda: defer.ensureDeferred(self._end_hold(token, released=True)))

    def _hold_expired(self, token: str) -> defer.Deferred:
        return self._turn.run(lambda: defer.ensureDeferred(self._end_hold(token, released=False)))

    async def _end_hold(self, token: str, released: bool) -> bool:
        held = self.held.pop(token, None)
        if held is None:
            return False
        call = self.timers.pop(held.job_id, None)
        if call is not None and call.active():  # type: ignore[attr-defined]
            call.cancel()  # type: ignore[attr-defined]
        try:  # an operator may have released or canceled it meanwhile (the console)
            current = self.spool.load(held.job_id)
        except (OSError, ValueError):
            return False
        if current.state != J.PENDING_HELD or current.hold_token != token:
            return False
        held = current
        if released:
            job = dataclasses.replace(held, state=J.PENDING, reasons=[J.JOB_QUEUED], hold_token=None,
                                      changed=self._now())
        else:  # canceled with no further mail (Dispatcher.finish is silent for it)
            job = dataclasses.replace(held, state=J.CANCELED, reasons=[J.JOB_HOLD_UNTIL_SPECIFIED],
                                      detail="never released by its sender", changed=self._now())
        try:
            await self.spool.save(job)
        except Exception:
            log.failure("printer {printer} job {job}: could not end its hold", printer=self.printer.name,
                        job=held.job_id)
            self.held[token] = held
            return False
        log.info("printer {printer} job {job}: {what}", printer=self.printer.name, job=job.job_id,
                 what="released by its sender" if released else "never released; canceled")
        self.on_job(job)
        return True

    def recover(self, job: Job) -> defer.Deferred | None:
        """Take back a job found in the spool at start."""
        if job.state == J.PENDING_HELD and job.hold_token is not None:
            self._hold(job)
            return None
        if job.state == J.PENDING_HELD and J.JOB_INCOMING in job.reasons and job.partial is not None:
            self.sets[job.partial.id] = job
            if job.partial.complete():
                return self._turn.run(lambda: defer.ensureDeferred(self._complete(job)))
            self._arm_timeout(job)
            return None
        # Extracted documents are not fsync'd (they are derived data): after
        # a crash, extract again; printed_documents says where to resume.
        job.documents = None
        self.on_job(job)
        return None

    def stop(self) -> None:
        for call in self.timers.values():
            if call.active():  # type: ignore[attr-defined]
                call.cancel()  # type: ignore[attr-defined]
        self.timers.clear()


def partial_problem(number: int, total: int | None, held: PartialSet | None) -> str | None:
    """Why fragment *number* (saying *total*) can never complete a set
    already holding *held*, in words for the sender; None if it can."""
    if number < 0:
        return "a fragment has no usable part number"
    if total is not None and total < 0:
        return f"fragment {number} gives no usable number of parts"
    if number < 1 or number > MAX_PARTS:
        return f"a fragment says it is part {number}; part numbers run from 1 to at most {MAX_PARTS}"
    if total is not None:
        if total < 1:
            return f"fragment {number} says the job has {total} parts"
        if total > MAX_PARTS:
            return f"fragment {number} says the job has {total} parts; at most {MAX_PARTS} are accepted"
        if number > total:
            return f"fragment {number} says the job has only {total} parts"
    if held is None:
        return None
    if total is not None and held.total is not None and total != held.total:
        return f"fragment {number} says the job has {total} parts, an earlier fragment said {held.total}"
    if total is not None and held.numbers() and max(held.numbers()) > total:
        return (f"fragment {number} says the job has {total} parts, "
                f"but part {max(held.numbers())} arrived before it")
    if total is None and held.total is not None and number > held.total:
        return f"part {number} arrived, but the job has only {held.total} parts"
    return None


def _quoted(title: str) -> str:
    return f'"{title}"' if title else "(untitled)"

"""The job spool of one printer: a directory per job, durable state files,
and the seen index that goes with them (docs/spool.md).

Layout under ``SPOOL/jobs/PRINTER/``::

    incoming/          a message being retrieved (removed at start: the
                       source still has it, it was not deleted there yet)
    JOB_ID/state.json  the job's :class:`~phaserlink.printer.jobs.Job`
    JOB_ID/message     the job's mail, LF line ends
    JOB_ID/part-NNNNN  message/partial fragments while a set is incomplete
    JOB_ID/docs/       extracted (and converted) documents
    seen.sqlite        see :mod:`phaserlink.printer.journal`

A job exists once its ``state.json`` does: a directory without one is the
remains of a crash during intake and is removed at start (its message is
still at the source, so it is fetched again).  Every state change is
written to a temporary file, fsync'd, renamed over ``state.json`` and the
directory fsync'd before the change is acted on (docs/README.md, job lifecycle).

The spool owns its journal: a caller hands over a job's change together
with the seen records that go with it (``seen=``) in ONE call, and the
spool writes both in the right order (the job first, its records after;
on removal the "done" record first, the files after).  Every call that
writes runs in the durable thread pool and returns a Deferred that fires
once it is on disk; calls are run one at a time, in the order made, so the
changes of one job (and of one printer) never overtake each other.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.durable import fsync_dir, write_atomic
from phaserlink.printer import journal
from phaserlink.printer.jobs import Job
from phaserlink.threads import pools_for, run_inline

log = Logger()

STATE_FILE = "state.json"
MESSAGE_FILE = "message"
DOCS_DIR = "docs"
INCOMING_DIR = "incoming"

Records = Iterable[dict[str, Any]]

_counter = itertools.count()


def fsync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_job_id(now: float | None = None) -> str:
    """Sortable, unique across restarts, safe as a file name and in LPD."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}{next(_counter) % 1000:03d}"


class JobSpool:
    """The jobs of one printer, on disk, with their seen index.

    *reactor* gives the durable thread pool and the clock the seen records
    are stamped with (none: inline, and wall-clock time); *window* is the
    redelivery window of the seen index (see :mod:`.journal`).
    """

    def __init__(self, root: Path, printer: str, *, reactor=None, window: float = journal.MIN_WINDOW):
        self.root = Path(root)
        self.printer = printer
        self.incoming = self.root / INCOMING_DIR
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.seen = journal.SeenIndex(self.root / journal.SEEN_FILE, window)
        self._durable: Callable[..., defer.Deferred] = pools_for(reactor).durable if reactor is not None \
            else run_inline
        self._seconds: Callable[[], float] = reactor.seconds if reactor is not None else time.time
        self._lock = defer.DeferredLock()
        self.history = None  # the console's JobHistory, set by PrinterOperations (docs/console.md)
        #: Jobs that may have their "done" record already: terminal when
        #: recovered at start (a crash between the record and the files'
        #: removal), or whose removal failed.  No other job can, so
        #: :meth:`finished_before` asks the index for these only.
        self._maybe_done: set[str] = set()

    def _serial(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run blocking *f* in the durable pool after every earlier call."""
        return self._lock.run(self._durable, f, *args)

    # -- paths ---------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def message_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / MESSAGE_FILE

    def docs_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / DOCS_DIR

    def part_path(self, job_id: str, number: int) -> Path:
        return self.job_dir(job_id) / f"part-{number:05d}"

    # -- incoming --------------------------------------------------------------

    def incoming_file(self) -> tuple[Path, BinaryIO]:
        """A fresh file to retrieve one message into."""
        path = self.incoming / f"{int(time.time())}.{os.getpid()}.{next(_counter)}"
        return path, open(path, "xb")

    def clean_incoming(self) -> int:
        removed = 0
        for entry in self.incoming.iterdir():
            entry.unlink(missing_ok=True)
            removed += 1
        return removed

    # -- start and stop ------------------------------------------------------------

    def open(self) -> defer.Deferred:
        """At start: open (migrate, prune) the seen index, drop half-made
        jobs, record what the spooled jobs say; fires with the jobs, oldest
        first."""
        return self._serial(self._open, self._seconds())

    def _open(self, now: float) -> list[Job]:
        self.seen.open(now)
        jobs = list(self.recover())
        self.seen.write([r for job in jobs for r in journal.job_records(job)], now)
        self._maybe_done.update(job.job_id for job in jobs if job.terminal)
        return jobs

    def prune(self) -> defer.Deferred:
        """Forget seen records older than the window (fires with how many)."""
        return self._serial(self.seen.prune, self._seconds())

    def close(self) -> defer.Deferred:
        """After every pending write: close the seen index."""
        return self._serial(self.seen.close)

    # -- jobs --------------------------------------------------------------------

    def create(self, job: Job, message: Path | None = None, part: int | None = None, *,
               seen: Records = (), sync: bool = False) -> defer.Deferred:
        """Make a job durable: fsync *message* (an incoming file) and move it in
        as its message (or as fragment *part*), write its state, then its
        *seen* records.  On failure nothing of the job is left."""
        return self._serial(self._create, job.to_json(), message, part, list(seen), sync, self._seconds())

    def _create(self, state: dict, message: Path | None, part: int | None, seen: list, sync: bool,
                now: float) -> None:
        job_id = state["job_id"]
        d = self.job_dir(job_id)
        d.mkdir()
        try:
            if message is not None:
                target = self.part_path(job_id, part) if part is not None else self.message_path(job_id)
                _fsync_path(message)  # the retriever only closed it
                # Only the new name must survive a crash (start empties incoming/).
                os.rename(message, target)
            self._write_state(job_id, state)  # fsyncs the job directory (the rename and state.json)
            fsync_dir(self.root)  # the new job directory itself
            self.seen.write(seen, now, sync)
        except BaseException:
            # ENOSPC and friends: the source still has the message, so no
            # job may stay behind that the caller never heard of (it would
            # print a second time at the next start).
            shutil.rmtree(d, ignore_errors=True)
            try:
                fsync_dir(self.root)
            except OSError:
                pass
            raise

    def add_part(self, job: Job, message: Path, number: int, *, seen: Records = (),
                 sync: bool = False) -> defer.Deferred:
        """Move fragment *number* into a set's directory, then save *job*
        (whose ``partial.parts`` already lists it) and its *seen* records."""
        return self._serial(self._add_part, job.to_json(), message, number, list(seen), sync, self._seconds())

    def _add_part(self, state: dict, message: Path, number: int, seen: list, sync: bool, now: float) -> None:
        target = self.part_path(state["job_id"], number)
        _fsync_path(message)  # the retriever only closed it
        os.rename(message, target)
        try:
            self._write_state(state["job_id"], state)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self.seen.write(seen, now, sync)

    def save(self, job: Job, *, seen: Records = (), discard: Iterable[Path] = (), flush: Iterable[Path] = (),
             sync: bool = False) -> defer.Deferred:
        """fsync the *flush* files (a reassembled message the new state
        points at), write *job*'s state, then its *seen* records, then
        unlink the *discard* files (fragments it no longer needs)."""
        return self._serial(self._save, job.to_json(), list(seen), list(discard), sync, self._seconds(),
                            list(flush))

    record = save  # "record this change of the job, and these records"

    def _save(self, state: dict, seen: list, discard: list, sync: bool, now: float, flush: list = ()) -> None:
        for path in flush:
            _fsync_path(Path(path))
        if flush:
            fsync_dir(self.job_dir(state["job_id"]))
        self._write_state(state["job_id"], state)
        self.seen.write(seen, now, sync)
        for path in discard:
            Path(path).unlink(missing_ok=True)

    def note(self, *, seen: Records = (), discard: Iterable[Path] = (), sync: bool = False) -> defer.Deferred:
        """Records with no job change (a message recognised and dropped):
        write *seen*, then unlink *discard*."""
        return self._serial(self._note, list(seen), list(discard), sync, self._seconds())

    def _note(self, seen: list, discard: list, sync: bool, now: float) -> None:
        self.seen.write(seen, now, sync)
        for path in discard:
            Path(path).unlink(missing_ok=True)

    def _write_state(self, job_id: str, state: dict) -> None:
        write_atomic(self.job_dir(job_id) / STATE_FILE, json.dumps(state, sort_keys=True).encode())
        if self.history is not None:  # the console's index, in this same thread; never fails the write
            self.history.record_quietly(self.printer, state, self.message_path(job_id))

    def load(self, job_id: str) -> Job:
        """Read a job's state (a small read: no fsync, any thread)."""
        with open(self.job_dir(job_id) / STATE_FILE, "rb") as f:
            return Job.from_json(json.load(f))

    def exists(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / STATE_FILE).exists()

    def finished(self, job_id: str) -> bool:
        """True if the job's "done" record is written (its mail went out)."""
        return self.seen.finished(job_id)

    def finished_before(self, job_id: str) -> bool:
        """:meth:`finished`, for a job about to be finished: only a job
        recovered terminal or whose removal failed can have its record
        already, so no other job costs an index lookup in the reactor
        (one per printed job, bench/scale.py)."""
        if job_id not in self._maybe_done:
            return False
        return self.seen.finished(job_id)

    def remove(self, job_id: str, *, seen: Records = (), sync: bool = True, done: bool = False) -> defer.Deferred:
        """Forget a finished job: its *seen* records (the "done" record)
        first, synced, then its files.  The state file goes first, so a
        crash half-way leaves a directory without one, which start removes.

        *done*: the job's "done" record is (or is among *seen*) in the
        index, synced, so the removal itself need not be: a job that comes
        back after a power loss is terminal, recovered as finished before
        and removed again, never answered twice.  That saves the spool
        directory's fsync, one of the eleven per printed job
        (bench/scale.py)."""
        d = self._serial(self._remove, job_id, list(seen), sync, self._seconds(), not done)

        def failed(failure):
            self._maybe_done.add(job_id)  # its record may be written: ask the index next time
            return failure

        def removed(result):
            self._maybe_done.discard(job_id)
            return result

        return d.addCallbacks(removed, failed)

    def _remove(self, job_id: str, seen: list, sync: bool, now: float, sync_dir: bool = True) -> None:
        self.seen.write(seen, now, sync)
        d = self.job_dir(job_id)
        try:
            (d / STATE_FILE).unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(d, ignore_errors=True)
        if sync_dir:
            fsync_dir(self.root)

    def recover(self) -> Iterator[Job]:
        """At start (blocking; :meth:`open` runs it in the durable pool):
        drop half-made jobs and incoming files, yield the rest oldest first."""
        stale = self.clean_incoming()
        if stale:
            log.info("printer {printer}: dropped {n} unfinished retrievals (still at the source)",
                     printer=self.printer, n=stale)
        jobs = []
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.name == INCOMING_DIR:
                continue
            if not (entry / STATE_FILE).exists():
                log.info("printer {printer}: removing half-made job {job}", printer=self.printer, job=entry.name)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                jobs.append(self.load(entry.name))
            except (OSError, ValueError, TypeError) as e:
                # Never guess about a job: leave it for a human, say so.
                log.error("printer {printer}: cannot read job {job}: {e}; left in {dir}",
                          printer=self.printer, job=entry.name, e=e, dir=entry)
        jobs.sort(key=lambda j: (j.created, j.job_id))
        return iter(jobs)

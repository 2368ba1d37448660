"""The job spool of one printer: a directory per job, durable state files.

Layout under ``SPOOL/jobs/PRINTER/``::

    incoming/          a message being retrieved (removed at start: the
                       source still has it, it was not deleted there yet)
    JOB_ID/state.json  the job's :class:`~phaserlink.printer.jobs.Job`
    JOB_ID/message     the job's mail, LF line ends
    JOB_ID/part-NNNNN  message/partial fragments while a set is incomplete
    JOB_ID/docs/       extracted (and converted) documents
    journal.jsonl      see :mod:`phaserlink.printer.journal`

A job exists once its ``state.json`` does: a directory without one is the
remains of a crash during intake and is removed at start (its message is
still at the source, so it is fetched again).  Every state change is
written to a temporary file, fsync'd, renamed over ``state.json`` and the
directory fsync'd before the change is acted on (docs/README.md, job lifecycle).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from twisted.logger import Logger

from phaserlink.durable import fsync_dir, write_atomic
from phaserlink.printer.jobs import Job

log = Logger()

STATE_FILE = "state.json"
MESSAGE_FILE = "message"
DOCS_DIR = "docs"
INCOMING_DIR = "incoming"
JOURNAL_FILE = "journal.jsonl"

_counter = itertools.count()


def fsync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def new_job_id(now: float | None = None) -> str:
    """Sortable, unique across restarts, safe as a file name and in LPD."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}{next(_counter) % 1000:03d}"


class JobSpool:
    """The jobs of one printer, on disk."""

    def __init__(self, root: Path, printer: str):
        self.root = Path(root)
        self.printer = printer
        self.incoming = self.root / INCOMING_DIR
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.history = None  # the console's JobHistory, set by PrinterOperations

    # -- paths ---------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def message_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / MESSAGE_FILE

    def docs_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / DOCS_DIR

    def part_path(self, job_id: str, number: int) -> Path:
        return self.job_dir(job_id) / f"part-{number:05d}"

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL_FILE

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

    # -- jobs --------------------------------------------------------------------

    def create(self, job: Job, message: Path | None = None, part: int | None = None) -> None:
        """Make a job durable: move *message* (an fsync'd incoming file) in
        as its message (or as fragment *part*), then write its state."""
        d = self.job_dir(job.job_id)
        d.mkdir()
        if message is not None:
            target = self.part_path(job.job_id, part) if part is not None else self.message_path(job.job_id)
            # Only the new name must survive a crash (start empties incoming/).
            os.rename(message, target)
        self.save(job)  # fsyncs the job directory (the rename and state.json)
        fsync_dir(self.root)  # the new job directory itself

    def add_part(self, job: Job, message: Path, number: int) -> None:
        """Move fragment *number* into a set's directory, then save *job*
        (whose ``partial.parts`` already lists it)."""
        os.rename(message, self.part_path(job.job_id, number))
        self.save(job)

    def save(self, job: Job) -> None:
        state = job.to_json()
        write_atomic(self.job_dir(job.job_id) / STATE_FILE, json.dumps(state, sort_keys=True).encode())
        if self.history is not None:  # the console's index (docs/console.md); never fails the save
            self.history.record_quietly(self.printer, state, self.message_path(job.job_id))

    def load(self, job_id: str) -> Job:
        with open(self.job_dir(job_id) / STATE_FILE, "rb") as f:
            return Job.from_json(json.load(f))

    def exists(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / STATE_FILE).exists()

    def remove(self, job_id: str) -> None:
        """Forget a finished job.  The state file goes first, so a crash
        half-way leaves a directory without one, which start removes."""
        d = self.job_dir(job_id)
        try:
            (d / STATE_FILE).unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(d, ignore_errors=True)
        fsync_dir(self.root)

    def recover(self) -> Iterator[Job]:
        """At start: drop half-made jobs and incoming files, yield the rest
        oldest first."""
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


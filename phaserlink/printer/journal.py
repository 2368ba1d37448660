"""What a printer has already taken in: the durable memory behind
"exactly one print per job" (docs/README.md, guarantee 3).

A crash between spooling a message and deleting it at the source, or a
relay that sends a message twice, brings the same mail back.  The journal
recognises it by the source's UIDL, the Message-ID, and (for fragments)
the message/partial id and number.  It is one append-only file of JSON
lines, fsync'd after each append; a torn last line from a crash is
ignored.  The spool's own job records count as well (see
:meth:`SeenIndex.add_job`), so a job spooled just before a crash that kept
its journal line from being written is still recognised.

When the file grows past :data:`JOURNAL_MAX_RECORDS` it is rewritten at
start with the newest :data:`JOURNAL_KEEP_RECORDS`: redelivery happens
soon after a crash, not months later, and memory must stay flat.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable

from twisted.logger import Logger

from phaserlink.printer.jobs import JOB_INCOMING, Job
from phaserlink.durable import write_atomic

log = Logger()

JOURNAL_MAX_RECORDS = 50_000
JOURNAL_KEEP_RECORDS = 20_000


class SeenIndex:
    """In-memory sets built from the journal and the spool."""

    def __init__(self) -> None:
        self.uidls: set[tuple[str, str]] = set()  # (source description, uidl)
        self.message_ids: set[str] = set()
        self.partials_done: set[str] = set()  # message/partial ids fully taken in
        self.finished: dict[str, dict[str, Any]] = {}  # job id -> small final record

    def apply(self, record: dict[str, Any]) -> None:
        kind = record.get("k")
        if kind == "uidl":
            self.uidls.add((record["src"], record["v"]))
        elif kind == "msgid":
            self.message_ids.add(record["v"])
        elif kind == "partial-done":
            self.partials_done.add(record["v"])
        elif kind == "done":
            self.finished[record["job"]] = record

    def add_job(self, job: Job) -> None:
        """What a job in the spool says: its records need no fsync of their
        own while the job's durable state.json says the same."""
        for uidl in job.uidls:
            self.uidls.add((job.source, uidl))
        if job.message_id:
            self.message_ids.add(job.message_id)
        if job.partial is not None and JOB_INCOMING not in job.reasons:
            self.partials_done.add(job.partial.id)


class Journal:
    """The append-only journal of one printer."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.index = SeenIndex()
        self._lock = threading.Lock()  # appends may come from a worker thread
        self._file = None

    def load(self) -> SeenIndex:
        records = list(self._read())
        for record in records:
            self.index.apply(record)
        if len(records) > JOURNAL_MAX_RECORDS:
            keep = records[-JOURNAL_KEEP_RECORDS:]
            write_atomic(self.path, b"".join(_line(r) for r in keep))
            log.info("journal {path}: compacted {n} records to {k}", path=self.path, n=len(records), k=len(keep))
        self._file = open(self.path, "ab")
        return self.index

    def _read(self) -> Iterable[dict[str, Any]]:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn by a crash: the fact was never promised
                try:
                    yield json.loads(line)
                except ValueError:
                    log.warn("journal {path}: skipping a damaged line", path=self.path)

    def append(self, *records: dict[str, Any], sync: bool = True) -> None:
        """Write *records*; with *sync*, fsync (durable on return, and so is
        every line before).  ``sync=False`` is for facts a durable spool
        state already records (:meth:`SeenIndex.add_job`) or that are
        recognised again anyway; the next synced line makes them durable."""
        if self._file is None:
            raise RuntimeError("journal not loaded")
        with self._lock:
            self._file.write(b"".join(_line(r) for r in records))
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
            for record in records:
                self.index.apply(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- record makers ---------------------------------------------------------

    @staticmethod
    def uidl(source: str, uidl: str) -> dict[str, Any]:
        return {"k": "uidl", "src": source, "v": uidl}

    @staticmethod
    def message_id(message_id: str) -> dict[str, Any]:
        return {"k": "msgid", "v": message_id}

    @staticmethod
    def partial_done(partial_id: str) -> dict[str, Any]:
        return {"k": "partial-done", "v": partial_id}

    @staticmethod
    def done(job: Job, when: float) -> dict[str, Any]:
        return {"k": "done", "job": job.job_id, "state": job.state, "reasons": job.reasons,
                "t": round(when, 3), "title": job.title[:200], "msgid": job.message_id,
                "pages": job.pages}


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"

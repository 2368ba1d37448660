"""What a printer has already taken in: the durable memory behind
"exactly one print per job" (guarantee 3; docs/spool.md).

A crash between spooling a message and deleting it at the source, or a
relay that sends a message twice, brings the same mail back.  The seen
index recognises it by the source's UIDL, the Message-ID, and (for
fragments) the message/partial id; it also remembers which jobs finished,
so that a job whose status mail went out just before a crash is not
answered twice.

The index is a small SQLite database (``seen.sqlite``, WAL mode) next to
the printer's jobs, not a set in memory: start-up reads nothing of it and
memory does not grow with the number of jobs ever printed.  Records older
than the redelivery window (at least ``queue_max_age`` plus
``partial_timeout``: how late a relay or a fragment set can still bring a
copy) are pruned.  It belongs to the :class:`~phaserlink.printer.spool.JobSpool`,
which writes a job's change and its records in one call; the spool runs
the writes (whose commits fsync) in the durable thread pool.  Lookups run
in the caller's thread: a primary-key read from a WAL database hits the
page cache and never fsyncs, and the reactor needs the answer before it
can decide what a message is.

A ``journal.jsonl`` left by an older version is migrated into the
database at start and then removed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

from twisted.logger import Logger

from phaserlink.durable import fsync_dir
from phaserlink.printer.jobs import JOB_INCOMING, Job

log = Logger()

SEEN_FILE = "seen.sqlite"
LEGACY_JOURNAL = "journal.jsonl"

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MIN_WINDOW,
    PRUNE_INTERVAL,
    READ_TIMEOUT,
    SEEN_CACHE_KIB as CACHE_KIB,
)

UIDL, MSGID, PARTIAL_DONE, DONE = "uidl", "msgid", "partial-done", "done"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    t REAL NOT NULL,
    data TEXT,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_age ON seen (t);
"""


# -- records (what intake and dispatch hand to the spool) ---------------------


def uidl(source: str, value: str) -> dict[str, Any]:
    return {"k": UIDL, "src": source, "v": value}


def message_id(value: str) -> dict[str, Any]:
    return {"k": MSGID, "v": value}


def partial_done(partial_id: str) -> dict[str, Any]:
    """A message/partial set taken in, or failed: later fragments are dropped."""
    return {"k": PARTIAL_DONE, "v": partial_id}


def done(job: Job, when: float) -> dict[str, Any]:
    return {"k": DONE, "job": job.job_id, "state": job.state, "reasons": job.reasons,
            "t": round(when, 3), "title": job.title[:200], "msgid": job.message_id,
            "pages": job.pages}


def job_records(job: Job) -> list[dict[str, Any]]:
    """What a job in the spool says: its records are as good as journalled
    while its durable state.json says the same (written again at start, in
    case a crash came between the state and its records)."""
    records = [uidl(job.source, u) for u in job.uidls]
    if job.message_id:
        records.append(message_id(job.message_id))
    if job.partial is not None and JOB_INCOMING not in job.reasons:
        records.append(partial_done(job.partial.id))
    return records


def _row(record: dict[str, Any], now: float) -> tuple[str, str, float, str | None] | None:
    kind = record.get("k")
    if kind == UIDL:
        return (UIDL, _uidl_key(record["src"], record["v"]), now, None)
    if kind in (MSGID, PARTIAL_DONE):
        return (kind, record["v"], now, None)
    if kind == DONE:
        return (DONE, record["job"], now, json.dumps(record, sort_keys=True))
    return None


def _uidl_key(source: str, value: str) -> str:
    return f"{source}\n{value}"


class SeenIndex:
    """The seen records of one printer, on disk.

    :meth:`open`, :meth:`write`, :meth:`prune` and :meth:`close` block on
    the disk (the spool calls them in its durable pool, one at a time); the
    ``has_*`` / :meth:`finished` lookups do not.
    """

    def __init__(self, path: Path, window: float = MIN_WINDOW):
        self.path = Path(path)
        self.window = max(float(window), MIN_WINDOW)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # One cursor per connection, used again for every statement:
        # Connection.execute makes a cursor each time and (Python 3.11)
        # keeps a weak reference to it until 200 have piled up, so 1,000
        # connections (500 printers) held ~200,000 dead weak references,
        # which every full collection walked (bench/scale.py).
        self._wcur: sqlite3.Cursor | None = None
        self._rcur: sqlite3.Cursor | None = None
        self._read_lock = threading.Lock()

    # -- blocking (durable pool) -----------------------------------------------

    def open(self, now: float) -> None:
        if self._writer is not None:
            return
        created = not self.path.exists()
        writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        writer.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        writer.execute("PRAGMA journal_mode=WAL")
        writer.executescript(_SCHEMA)
        if created:
            fsync_dir(self.path.parent)
        self._writer = writer
        self._wcur = writer.cursor()
        self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=READ_TIMEOUT)
        self._rcur = self._reader.cursor()
        self._rcur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._rcur.execute("PRAGMA query_only=1")
        # Its files (the WAL) open now, not at the first lookup: the
        # process's descriptors stay flat once every printer has started.
        self._rcur.execute("SELECT 1 FROM seen LIMIT 1").fetchall()
        self._migrate(now)
        self.prune(now)

    def write(self, records: Iterable[dict[str, Any]], now: float, sync: bool = False) -> None:
        """Commit *records*.  With *sync* the commit is fsync'd (durable on
        return, and so is every commit before); without it the commit is
        in the WAL, safe from a process crash, made durable by the next
        synced commit or checkpoint.  ``sync=False`` is for facts a durable
        spool state records as well (:func:`job_records`) or that are
        recognised again anyway."""
        rows = [r for r in (_row(rec, now) for rec in records) if r is not None]
        if not rows:
            return
        self._commit("INSERT OR REPLACE INTO seen (kind, key, t, data) VALUES (?, ?, ?, ?)", rows, sync)

    def prune(self, now: float) -> int:
        """Forget records older than the window; return how many."""
        cur = self._db()
        cur.execute("DELETE FROM seen WHERE t < ?", (now - self.window,))
        if cur.rowcount:
            log.info("seen index {path}: pruned {n} records older than {days:g} days",
                     path=self.path, n=cur.rowcount, days=self.window / 86400)
        return cur.rowcount

    def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = None
        self._rcur = self._wcur = None

    def _db(self) -> sqlite3.Cursor:
        """The writer's cursor (the durable pool, one call at a time)."""
        if self._wcur is None:
            raise RuntimeError("seen index not open")
        return self._wcur

    def _commit(self, sql: str, rows: Iterable[tuple], sync: bool) -> None:
        db = self._db()
        db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _migrate(self, now: float) -> None:
        legacy = self.path.parent / LEGACY_JOURNAL
        if not legacy.exists():
            return
        when = legacy.stat().st_mtime
        count = 0

        def rows() -> Iterator[tuple]:  # streamed: a journal of any length migrates in flat memory
            nonlocal count
            for record in _read_legacy(legacy):
                try:
                    row = _row(record, float(record.get("t") or when))
                except (KeyError, TypeError, ValueError):
                    log.warn("journal {path}: skipping a damaged record", path=legacy)
                    continue
                if row is not None:
                    count += 1
                    yield row

        # OR IGNORE: a crash after this commit but before the unlink
        # migrates again at the next start, changing nothing.
        self._commit("INSERT OR IGNORE INTO seen (kind, key, t, data) VALUES (?, ?, ?, ?)", rows(), True)
        legacy.unlink()
        fsync_dir(legacy.parent)
        log.info("seen index {path}: migrated {n} records from {legacy}", path=self.path, n=count,
                 legacy=legacy)

    # -- lookups (any thread) -----------------------------------------------------

    def _has(self, kind: str, key: str) -> bool:
        if self._reader is None:
            raise RuntimeError("seen index not open")
        with self._read_lock:
            # fetchall, not fetchone: the statement runs to its end, so the
            # reused cursor holds no read transaction (which would keep the
            # WAL from being checkpointed) between lookups.
            rows = self._rcur.execute("SELECT 1 FROM seen WHERE kind = ? AND key = ?", (kind, key)).fetchall()
        return bool(rows)

    def has_uidl(self, source: str, value: str) -> bool:
        return self._has(UIDL, _uidl_key(source, value))

    def has_message_id(self, value: str) -> bool:
        return self._has(MSGID, value)

    def partial_done(self, partial_id: str) -> bool:
        return self._has(PARTIAL_DONE, partial_id)

    def finished(self, job_id: str) -> bool:
        return self._has(DONE, job_id)

    def count(self, kind: str | None = None) -> int:
        if self._reader is None:
            raise RuntimeError("seen index not open")
        with self._read_lock:
            if kind is None:
                return self._rcur.execute("SELECT count(*) FROM seen").fetchall()[0][0]
            return self._rcur.execute("SELECT count(*) FROM seen WHERE kind = ?", (kind,)).fetchall()[0][0]

    def records(self, kind: str) -> list[dict[str, Any]]:
        """Every record of *kind* (for tests and the console: not on any hot path)."""
        if self._reader is None:
            raise RuntimeError("seen index not open")
        with self._read_lock:
            rows = self._rcur.execute("SELECT key, t, data FROM seen WHERE kind = ? ORDER BY t", (kind,)).fetchall()
        out = []
        for key, t, data in rows:
            if data:
                out.append(json.loads(data))
            elif kind == UIDL:
                src, _, value = key.partition("\n")
                out.append({"k": UIDL, "src": src, "v": value, "t": t})
            else:
                out.append({"k": kind, "v": key, "t": t})
        return out


def _read_legacy(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn by a crash: the fact was never promised
            try:
                record = json.loads(line)
            except ValueError:
                log.warn("journal {path}: skipping a damaged line", path=path)
                continue
            if isinstance(record, dict):
                yield record


def legacy_line(record: dict[str, Any]) -> bytes:
    """One line of the old journal.jsonl format (for migration tests)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


"""The job history: every job's latest state and its timeline, on disk
(docs/console.md).

Every state a spool writes for a job is also recorded here, by the spool
itself, in the same call and the same (durable pool) thread: so the
history never claims a state the spool does not have, and the reactor
thread never waits for it.  Finished jobs leave their spool at once; their
row stays here for ``history_days`` and is then pruned.  Nothing of it is
held in memory, so neither start-up time nor memory grows with the
history: one sqlite3 file in WAL mode (readers do not block the writer),
with indexes for the console's list (newest first, by printer, state,
sender).

A state change is a timeline entry when the state, its reasons or its
detail changed; ``by`` names the operator when an operation made it
(:meth:`JobHistory.expect_by`), else ``system``.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from twisted.logger import Logger

from phaserlink.printer.control import JobFilter

log = Logger()

HISTORY_FILE = "history.sqlite"
#: Who made a change no operator made.
SYSTEM = "system"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    HISTORY_BUSY_TIMEOUT as BUSY_TIMEOUT,
    HISTORY_MAX_TEXT as MAX_TEXT,
    HISTORY_PRUNE_BATCH as PRUNE_BATCH,
)

TERMINAL = ("completed", "aborted", "canceled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    printer TEXT NOT NULL,
    sender TEXT,
    title TEXT,
    state TEXT NOT NULL,
    reasons TEXT NOT NULL,
    detail TEXT,
    size INTEGER,
    pages INTEGER,
    frag_received INTEGER,
    frag_total INTEGER,
    auth TEXT,
    created REAL NOT NULL,
    changed REAL NOT NULL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS jobs_newest ON jobs (created DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_printer ON jobs (printer, created DESC);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created DESC);
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (ended);
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (printer, ended);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    reasons TEXT NOT NULL,
    by TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, at);
CREATE TABLE IF NOT EXISTS mails (
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mails_job ON mails (job_id);
"""

Listener = Callable[[dict[str, Any], str | None], None]


def iso(t: float | None) -> str | None:
    """Epoch seconds -> ``2026-12-01T23:40:00Z`` (what the API shows)."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def encode_cursor(created: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, job_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(created), str(job_id)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a cursor this appliance gave: {cursor!r}") from e


class JobHistory:
    """The history index of all printers (``SPOOL/history.sqlite``).

    :meth:`record` is called from the spool's thread; the read methods
    from any thread (the console runs them in the lookup pool).
    """

    def __init__(self, path: Path, keep_days: float = 30.0):
        self.path = Path(path)
        self.keep_seconds = keep_days * 86400.0
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._by: dict[str, str] = {}
        self._by_lock = threading.Lock()
        self.listeners: list[Listener] = []

    # -- connections -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process (the
        # spool's state.json is the durable truth; this is its index).
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def open(self) -> None:
        with self._write_lock:
            self._open_locked()

    def _open_locked(self) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            try:
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()  # e.g. a full disk: made again by the next write, not left without tables
                raise
            self._writer = db

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if not self.path.exists():
                self.open()
            db = self._local.db = self._connect()
        return db

    # -- writing (the spool's thread) --------------------------------------------

    def expect_by(self, job_id: str, by: str) -> None:
        """The next change recorded for *job_id* was made by operator *by*."""
        with self._by_lock:
            self._by[job_id] = by

    def record(self, printer: str, state: dict[str, Any], size: int | None = None,
               now: float | None = None) -> None:
        """Record *state* (a Job's ``to_json()``) as the job's latest, and
        as a timeline entry if it differs from the last one."""
        now = time.time() if now is None else now
        job_id = state["job_id"]
        with self._by_lock:
            by = self._by.pop(job_id, SYSTEM)
        reasons = json.dumps(list(state.get("reasons") or []))
        detail = (state.get("detail") or "")[:MAX_TEXT]
        partial = state.get("partial") or None
        received = len(partial.get("parts") or {}) if partial else None
        total = partial.get("total") if partial else None
        documents = state.get("documents")
        if documents:
            size = sum(int(d.get("size") or 0) for d in documents)
        ended = now if state["state"] in TERMINAL else None
        auth = state.get("auth")
        if auth is not None and not isinstance(auth, str):
            auth = json.dumps(auth)
        with self._write_lock:
            if self._writer is None:
                self._open_locked()
            db = self._writer
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                old = db.execute("SELECT state, reasons, detail, ended FROM jobs WHERE job_id = ?",
                                 (job_id,)).fetchone()
                db.execute(
                    "INSERT INTO jobs (job_id, printer, sender, title, state, reasons, detail, size, pages,"
                    " frag_received, frag_total, auth, created, changed, ended)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(job_id) DO UPDATE SET sender=excluded.sender, title=excluded.title,"
                    " state=excluded.state, reasons=excluded.reasons, detail=excluded.detail,"
                    " size=COALESCE(excluded.size, jobs.size), pages=excluded.pages,"
                    " frag_received=excluded.frag_received, frag_total=excluded.frag_total,"
                    " auth=COALESCE(excluded.auth, jobs.auth), changed=excluded.changed,"
                    " ended=COALESCE(jobs.ended, excluded.ended)",
                    (job_id, printer, state.get("sender"), (state.get("title") or "")[:MAX_TEXT],
                     state["state"], reasons, detail, size, state.get("pages"), received, total, auth,
                     float(state.get("created") or now), now, ended))
                changed = old is None or (old[0], old[1], old[2] or "") != (state["state"], reasons, detail)
                if changed:
                    db.execute("INSERT INTO events (job_id, at, state, reasons, by, detail) VALUES (?,?,?,?,?,?)",
                               (job_id, now, state["state"], reasons, by, detail))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if changed and ended is not None and (old is None or old[3] is None):
            row = dict(state, printer=printer, size=size, ended=now)
            for listener in list(self.listeners):
                try:
                    listener(row, old[0] if old else None)
                except Exception:
                    log.failure("history listener failed")

    def record_quietly(self, printer: str, state: dict[str, Any], message: Path | None = None) -> None:
        """:meth:`record`, for the spool: the size is *message*'s, and a
        failure is logged, never raised (the state it indexes is on disk
        already; the index must not make a durable write look failed)."""
        try:
            size = None
            if message is not None:
                try:
                    size = os.stat(message).st_size
                except OSError:
                    pass
            self.record(printer, state, size)
        except Exception:
            log.failure("console history: cannot record job {job}", job=state.get("job_id"))

    def note_mail(self, job_id: str, event: str, text: str, now: float | None = None) -> None:
        """The status mail queued for *job_id* (its human text), for the job's page."""
        with self._write_lock:
            self._open_locked()
            assert self._writer is not None
            self._writer.execute("INSERT INTO mails (job_id, at, event, text) VALUES (?,?,?,?)",
                                 (job_id, time.time() if now is None else now, event, text[:4 * MAX_TEXT]))

    def prune(self, now: float | None = None) -> int:
        """Forget jobs that ended more than ``history_days`` ago."""
        now = time.time() if now is None else now
        cutoff = now - self.keep_seconds
        removed = 0
        while True:
            with self._write_lock:
                self._open_locked()
                db = self._writer
                assert db is not None
                ids = [r[0] for r in db.execute(
                    "SELECT job_id FROM jobs WHERE ended IS NOT NULL AND ended < ? LIMIT ?",
                    (cutoff, PRUNE_BATCH))]
                if not ids:
                    return removed
                marks = ",".join("?" * len(ids))
                db.execute("BEGIN IMMEDIATE")
                db.execute(f"DELETE FROM events WHERE job_id IN ({marks})", ids)
                db.execute(f"DELETE FROM mails WHERE job_id IN ({marks})", ids)
                db.execute(f"DELETE FROM jobs WHERE job_id IN ({marks})", ids)
                db.execute("COMMIT")
            removed += len(ids)

    # -- reading (any thread) ------------------------------------------------------

    def page(self, filter: JobFilter, cursor: str | None, limit: int,
             printers: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Jobs newest first, at most *limit*, after *cursor*."""
        where, args = [], []
        if filter.printer is not None:
            where.append("printer = ?")
            args.append(filter.printer)
        if printers is not None:
            names = list(printers)
            where.append(f"printer IN ({','.join('?' * len(names))})" if names else "0")
            args.extend(names)
        if filter.state is not None:
            where.append("state = ?")
            args.append(filter.state)
        if filter.sender is not None:
            where.append("sender = ? COLLATE NOCASE")
            args.append(filter.sender)
        if filter.since is not None:
            where.append("created >= ?")
            args.append(filter.since)
        if cursor is not None:
            created, job_id = decode_cursor(cursor)
            where.append("(created < ? OR (created = ? AND job_id < ?))")
            args.extend([created, created, job_id])
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, job_id DESC LIMIT ?"
        args.append(limit + 1)
        db = self._reader()
        db.row_factory = sqlite3.Row
        rows = db.execute(sql, args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        jobs = [self._view(r) for r in rows]
        nxt = encode_cursor(rows[-1]["created"], rows[-1]["job_id"]) if more and rows else None
        return jobs, nxt

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job with its timeline, or None."""
        db = self._reader()
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        view = self._view(row)
        view["timeline"] = [
            {"at": iso(e["at"]), "state": e["state"], "state_reasons": json.loads(e["reasons"]),
             "by": e["by"], "detail": e["detail"] or ""}
            for e in db.execute("SELECT * FROM events WHERE job_id = ? ORDER BY at, rowid", (job_id,))]
        view["mails"] = [{"at": iso(m["at"]), "event": m["event"], "text": m["text"]}
                         for m in db.execute("SELECT * FROM mails WHERE job_id = ? ORDER BY at, rowid", (job_id,))]
        return view

    def printer_of(self, job_id: str) -> str | None:
        db = self._reader()
        db.row_factory = None
        row = db.execute("SELECT printer FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def waiting(self, printer: str) -> int:
        """Jobs of *printer* not finished (an indexed count)."""
        db = self._reader()
        db.row_factory = None
        return db.execute("SELECT COUNT(*) FROM jobs WHERE printer = ? AND ended IS NULL", (printer,)).fetchone()[0]

    def waiting_by_printer(self) -> dict[str, int]:
        """:meth:`waiting` of every printer that has waiting jobs, in one
        query (the ``jobs_waiting`` index): a scrape of ``/metrics`` made
        one query per printer, 500 of them in the reactor (bench/scale.py)."""
        db = self._reader()
        db.row_factory = None
        return dict(db.execute("SELECT printer, COUNT(*) FROM jobs WHERE ended IS NULL GROUP BY printer"))

    def counts(self) -> list[tuple[str, str, int]]:
        """(printer, state, jobs) over the whole history."""
        db = self._reader()
        db.row_factory = None
        return [tuple(r) for r in db.execute("SELECT printer, state, COUNT(*) FROM jobs GROUP BY printer, state")]

    @staticmethod
    def _view(row: sqlite3.Row) -> dict[str, Any]:
        auth = row["auth"]
        if auth is not None and auth[:1] in "{[":
            try:
                auth = json.loads(auth)
            except ValueError:
                pass
        fragments = None
        if row["frag_received"] is not None:
            fragments = {"received": row["frag_received"], "total": row["frag_total"]}
        return {
            "id": row["job_id"], "printer": row["printer"], "sender": row["sender"], "title": row["title"],
            "state": row["state"], "state_reasons": json.loads(row["reasons"]), "size": row["size"],
            "pages": row["pages"], "fragments": fragments, "auth": auth, "created": iso(row["created"]),
            "changed": iso(row["changed"]), "ended": iso(row["ended"]), "detail": row["detail"] or "",
        }


def history_path(spool: os.PathLike) -> Path:
    return Path(spool) / HISTORY_FILE

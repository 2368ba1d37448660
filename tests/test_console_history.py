"""The job history index: timeline entries, pages newest first, pruning
after history_days, and that opening it does not read it."""

from __future__ import annotations

import time

from phaserlink.printer.control import JobFilter
from phaserlink.printer.history import JobHistory


def state(job_id, st="pending", reasons=("job-queued",), created=1000.0, detail="", **extra):
    return {"job_id": job_id, "printer": "demo", "state": st, "reasons": list(reasons), "created": created,
            "sender": "alice@example.com", "title": "t", "detail": detail, **extra}


def test_timeline_has_one_entry_per_change_and_who(tmp_path):
    h = JobHistory(tmp_path / "h.sqlite")
    h.record("demo", state("j1"), now=1000.0)
    h.record("demo", state("j1"), now=1001.0)  # same state again: no new entry
    h.expect_by("j1", "olga")
    h.record("demo", state("j1", "canceled", ["job-canceled-by-operator"], detail="canceled by operator olga"),
             now=1002.0)
    view = h.get("j1")
    assert view["state"] == "canceled" and view["ended"] is not None
    assert [(e["state"], e["by"]) for e in view["timeline"]] == [("pending", "system"), ("canceled", "olga")]


def test_listener_called_once_when_a_job_ends(tmp_path):
    h = JobHistory(tmp_path / "h.sqlite")
    seen = []
    h.listeners.append(lambda row, old: seen.append((row["state"], old)))
    h.record("demo", state("j1"), now=1.0)
    h.record("demo", state("j1", "completed", ["job-completed-successfully"]), now=2.0)
    h.record("demo", state("j1", "completed", ["job-completed-successfully"]), now=3.0)
    assert seen == [("completed", "pending")]


def test_pages_newest_first_with_filters(tmp_path):
    h = JobHistory(tmp_path / "h.sqlite")
    for i in range(7):
        h.record("demo", state(f"j{i}", created=1000.0 + i, sender=f"u{i % 2}@x"), now=1000.0 + i)
    jobs, nxt = h.page(JobFilter(), None, 3)
    assert [j["id"] for j in jobs] == ["j6", "j5", "j4"]
    jobs, nxt = h.page(JobFilter(), nxt, 3)
    assert [j["id"] for j in jobs] == ["j3", "j2", "j1"]
    jobs, nxt = h.page(JobFilter(), nxt, 3)
    assert [j["id"] for j in jobs] == ["j0"] and nxt is None
    assert [j["id"] for j in h.page(JobFilter(sender="U1@x"), None, 10)[0]] == ["j5", "j3", "j1"]
    assert h.waiting("demo") == 7


def test_finished_jobs_pruned_after_history_days(tmp_path):
    h = JobHistory(tmp_path / "h.sqlite", keep_days=1)
    now = time.time()
    h.record("demo", state("old", created=now - 3 * 86400), now=now - 3 * 86400)
    h.record("demo", state("old", "completed", ["job-completed-successfully"]), now=now - 2 * 86400)
    h.record("demo", state("waiting", created=now - 3 * 86400), now=now - 3 * 86400)  # never ended: kept
    h.record("demo", state("new", "completed", ["job-completed-successfully"]), now=now)
    assert h.prune(now) == 1
    assert h.get("old") is None
    assert h.get("waiting") is not None and h.get("new") is not None

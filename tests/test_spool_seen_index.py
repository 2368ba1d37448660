"""Bounded state (issue 7, item 9): the seen index lives on disk, start-up does
not read it into memory, it is pruned by the redelivery window, and an old
journal.jsonl is migrated once and then no longer grows."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from support.printer_fakes import Rig, make_site, message

from phaserlink.printer import journal
from phaserlink.printer.journal import LEGACY_JOURNAL, SeenIndex, legacy_line
from phaserlink.printer.spool import JobSpool

N = 50_000


def fill_index(root, n: int) -> None:
    now = time.time()  # recent: within the window, so start-up keeps them all
    index = SeenIndex(root / journal.SEEN_FILE)
    index.open(now)
    records = []
    for i in range(n):
        records.append(journal.uidl("local mailbox lp", f"{i}.M{i}P1Q1.host"))
        records.append(journal.message_id(f"<job-{i}@example.com>"))
    index.write(records, now, sync=True)
    index.close()


def measure_open(root) -> tuple[float, int, JobSpool]:
    spool = JobSpool(root, "lp")
    tracemalloc.start()
    t0 = time.perf_counter()
    spool.open()
    elapsed = time.perf_counter() - t0
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak, spool


def test_start_up_with_50000_seen_records_costs_what_it_costs_with_none(tmp_path):
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    fill_index(full, N)
    fill_index(empty, 0)
    t_empty, mem_empty, _ = measure_open(empty)
    t_full, mem_full, spool = measure_open(full)
    print(f"\nopen: 0 records {t_empty * 1000:.1f} ms / {mem_empty} B; "
          f"{2 * N} records {t_full * 1000:.1f} ms / {mem_full} B")
    # A set of 100,000 strings is ~10 MB and a second to build; the index
    # on disk costs the same to open whatever it holds.
    assert mem_full < mem_empty + 256 * 1024
    assert t_full < t_empty * 5 + 0.05
    # Nothing of it is held in Python structures...
    for value in vars(spool.seen).values():
        assert not isinstance(value, (set, dict, list)) or len(value) < 10
    # ...and it still answers, for the oldest record and the newest.
    assert spool.seen.has_uidl("local mailbox lp", "0.M0P1Q1.host")
    assert spool.seen.has_message_id(f"<job-{N - 1}@example.com>")
    assert not spool.seen.has_message_id("<never@example.com>")


def test_records_older_than_the_redelivery_window_are_pruned(tmp_path):
    rig = Rig(tmp_path, make_site(tmp_path)).start()
    site, printer = rig.site, rig.site.printers["lp"]
    seen = rig.runner().spool.seen
    assert seen.window == site.appliance.queue_max_age + printer.partial_timeout  # 5 days + 1 hour
    rig.deliver(message(msgid="<old@example.com>"))
    assert seen.count() == 3  # uidl, msgid, done
    rig.clock.advance(seen.window - journal.PRUNE_INTERVAL)  # a relay's late duplicate, within the window
    rig.deliver(message(msgid="<old@example.com>"))
    assert len(rig.outputs["lp"].sent) == 1 and rig.mailbox() == []
    rig.clock.advance(journal.PRUNE_INTERVAL)
    rig.deliver(message(msgid="<new@example.com>"))
    before = seen.count()
    rig.clock.advance(journal.PRUNE_INTERVAL * 2)  # the hourly prune passes the first job's records
    assert seen.count() < before
    assert not seen.finished(rig.outputs["lp"].sent[0][0].job_id)
    assert seen.has_message_id("<new@example.com>")


def test_an_old_journal_is_migrated_at_start_and_then_gone(tmp_path):
    site = make_site(tmp_path)
    root = site.appliance.spool / "jobs" / "lp"
    root.mkdir(parents=True)
    lines = [legacy_line(journal.uidl("local mailbox lp", f"old-{i}")) for i in range(N)]
    lines.append(legacy_line(journal.message_id("<printed-last-year@example.com>")))
    (root / LEGACY_JOURNAL).write_bytes(b"".join(lines))
    rig = Rig(tmp_path, site).start()
    assert not (root / LEGACY_JOURNAL).exists()
    assert rig.runner().spool.seen.count() == N + 1
    rig.deliver(message(msgid="<printed-last-year@example.com>"))  # known from the old journal
    assert rig.outputs["lp"].sent == [] and rig.mailbox() == []
    rig.deliver(message(msgid="<fresh@example.com>"))
    assert len(rig.outputs["lp"].sent) == 1
    assert not (root / LEGACY_JOURNAL).exists()  # nothing appends to it any more


@pytest.mark.parametrize("sync", [False, True])
def test_records_survive_a_crash_of_the_process(tmp_path, sync):
    """WAL commits are in the file system when write() returns: a kill -9
    (the connection never closed) loses none of them."""
    import subprocess
    import sys

    code = (f"from phaserlink.printer.journal import SeenIndex, uidl\n"
            f"i = SeenIndex({str(tmp_path / 'seen.sqlite')!r}); i.open(1.0)\n"
            f"i.write([uidl('src', 'u1')], 1.0, sync={sync})\n"
            f"import os; os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    index = SeenIndex(tmp_path / "seen.sqlite")
    index.open(2.0)
    assert index.has_uidl("src", "u1")


def test_one_spool_call_per_intake_outcome(tmp_path):
    """The spool owns its journal: taking in a message is one call (the job
    and its records), a dropped duplicate is one call, a printed job's end
    is one call (the "done" record and the removal)."""
    rig = Rig(tmp_path, make_site(tmp_path)).start()
    spool = rig.runner().spool
    calls = []
    for name in ("create", "add_part", "save", "remove", "note"):
        real = getattr(spool, name)

        def wrapped(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        setattr(spool, name, wrapped)
    rig.runner().dispatcher.spool = rig.runner().intake.spool = spool
    rig.deliver(message(msgid="<once@example.com>"))
    assert calls.count("create") == 1 and calls.count("remove") == 1 and "note" not in calls
    calls.clear()
    rig.deliver(message(msgid="<once@example.com>"))
    assert calls == ["note"]
    assert not hasattr(rig.runner(), "journal")  # no second party to keep in step

"""Job records, the spool's crash recovery and the journal, on disk."""

from __future__ import annotations

from phaserlink.printer import jobs as J
from phaserlink.printer.jobs import Job, PartialSet, describe_partial
from phaserlink.printer.spool import JobSpool, new_job_id


def a_job(**kw) -> Job:
    values = dict(job_id=new_job_id(), printer="lp", state=J.PENDING, reasons=[J.JOB_QUEUED], created=1.0,
                  changed=1.0, source="local mailbox lp", uidls=["u1"], message_id="<m@x>")
    values.update(kw)
    return Job(**values)


def test_partial_wording():
    assert describe_partial(PartialSet("i", 5, {"1": "", "2": "", "4": ""})) == \
        "parts 1, 2 and 4 of 5 arrived; parts 3 and 5 are missing"
    assert describe_partial(PartialSet("i", 3, {"2": ""})) == "part 2 of 3 arrived; parts 1 and 3 are missing"
    many = {str(n): "" for n in range(1, 101) if n != 41}
    assert describe_partial(PartialSet("i", 100, many)) == "parts 1-40 and 42-100 of 100 arrived; part 41 is missing"
    assert describe_partial(PartialSet("i", None, {"1": "", "3": ""})) == (
        "parts 1 and 3 arrived, but not the last part, which says how many parts there are; part 2 is missing too")


def test_state_round_trips_and_a_half_made_job_is_removed_at_start(tmp_path):
    spool = JobSpool(tmp_path, "lp")
    incoming, f = spool.incoming_file()
    f.write(b"message")
    f.close()
    job = a_job(partial=PartialSet("pid", 2, {"1": "u1"}))
    spool.create(job, incoming, part=1)
    assert spool.load(job.job_id) == job
    assert spool.part_path(job.job_id, 1).read_bytes() == b"message"
    (tmp_path / "20000101-000000-half").mkdir()  # crashed before its state.json
    stray, f = spool.incoming_file()  # crashed mid-retrieve
    f.close()
    assert [j.job_id for j in spool.recover()] == [job.job_id]
    assert not (tmp_path / "20000101-000000-half").exists() and not stray.exists()
    assert not list(tmp_path.glob("*/.state.json.tmp"))


def test_a_damaged_state_file_is_left_for_a_human_not_guessed(tmp_path):
    spool = JobSpool(tmp_path, "lp")
    job = a_job()
    spool.create(job)
    (spool.job_dir(job.job_id) / "state.json").write_text("{not json")
    assert list(spool.recover()) == []
    assert spool.job_dir(job.job_id).exists()


def test_an_old_journal_is_migrated_torn_last_line_ignored(tmp_path):
    from phaserlink.printer import journal
    from phaserlink.printer.journal import SeenIndex, legacy_line

    legacy = tmp_path / "journal.jsonl"
    legacy.write_bytes(legacy_line(journal.uidl("src", "u1")) + legacy_line(journal.message_id("<m@x>"))
                       + legacy_line(journal.partial_done("p1"))
                       + b'{"k":"uidl","src":"src","v":"u2')  # the crash came mid-write
    index = SeenIndex(tmp_path / "seen.sqlite")
    index.open(now=legacy.stat().st_mtime)
    assert index.has_uidl("src", "u1") and index.has_message_id("<m@x>") and index.partial_done("p1")
    assert not index.has_uidl("src", "u2")
    assert not legacy.exists()  # migrated once: the journal no longer grows
    index.close()
    again = SeenIndex(tmp_path / "seen.sqlite")
    again.open(now=legacy.stat().st_mtime if legacy.exists() else 0)
    assert again.has_uidl("src", "u1") and again.count() == 3


def test_spooled_jobs_count_as_seen_even_without_their_records(tmp_path):
    spool = JobSpool(tmp_path, "lp")
    incoming, f = spool.incoming_file()
    f.write(b"m")
    f.close()
    spool.create(a_job(partial=PartialSet("set-1", 2, {"1": "u1", "2": "u2"})), incoming, part=1)  # no seen=
    spool.create(a_job(state=J.PENDING_HELD, reasons=[J.JOB_INCOMING], partial=PartialSet("set-2", None, {}),
                       uidls=["u3"], message_id=None))
    fresh = JobSpool(tmp_path, "lp")
    jobs = fresh.open().result
    assert len(jobs) == 2
    assert fresh.seen.has_uidl("local mailbox lp", "u1") and fresh.seen.has_message_id("<m@x>")
    assert fresh.seen.partial_done("set-1") and not fresh.seen.partial_done("set-2")  # set-2 still arriving


def test_a_job_and_its_records_are_one_call_and_a_failed_create_leaves_nothing(tmp_path, monkeypatch):
    from phaserlink.printer import journal
    from phaserlink.printer import spool as spool_module

    spool = JobSpool(tmp_path, "lp")
    spool.open()
    job = a_job()
    spool.create(job, seen=[journal.uidl(job.source, "u1"), journal.message_id("<m@x>")])
    assert spool.exists(job.job_id) and spool.seen.has_uidl(job.source, "u1")
    spool.remove(job.job_id, seen=[journal.done(job, 5.0)])
    assert not spool.job_dir(job.job_id).exists() and spool.finished(job.job_id)

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "write_atomic", full)
    incoming, f = spool.incoming_file()
    f.close()
    other = a_job(uidls=["u9"])
    d = spool.create(other, incoming, seen=[journal.uidl(other.source, "u9")])
    assert isinstance(d.result.value, OSError)
    d.addErrback(lambda _f: None)
    assert not spool.job_dir(other.job_id).exists()  # no half-made job
    assert not spool.seen.has_uidl(other.source, "u9")  # and not marked seen: it is fetched again

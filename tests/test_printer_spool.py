"""Job records, the spool's crash recovery and the journal, on disk."""

from __future__ import annotations

from phaserlink.printer import jobs as J
from phaserlink.printer.jobs import Job, PartialSet, describe_partial
from phaserlink.printer.journal import Journal
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


def test_journal_survives_a_torn_last_line_and_compacts(tmp_path, monkeypatch):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.load()
    journal.append(Journal.uidl("src", "u1"), Journal.message_id("<m@x>"))
    journal.append(Journal.partial_done("p1"), sync=False)
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"k":"uidl","src":"src","v":"u2')  # the crash came mid-write
    index = Journal(path).load()
    assert index.uidls == {("src", "u1")} and index.message_ids == {"<m@x>"} and index.partials_done == {"p1"}
    from phaserlink.printer import journal as journal_module

    monkeypatch.setattr(journal_module, "JOURNAL_MAX_RECORDS", 2)
    monkeypatch.setattr(journal_module, "JOURNAL_KEEP_RECORDS", 1)
    Journal(path).load()
    assert path.read_bytes().count(b"\n") == 1


def test_spooled_jobs_count_as_seen_even_without_journal_lines():
    from phaserlink.printer.journal import SeenIndex

    index = SeenIndex()
    index.add_job(a_job(partial=PartialSet("set-1", 2, {"1": "u1", "2": "u2"})))
    index.add_job(a_job(state=J.PENDING_HELD, reasons=[J.JOB_INCOMING], partial=PartialSet("set-2", None, {})))
    assert ("local mailbox lp", "u1") in index.uidls and "<m@x>" in index.message_ids
    assert index.partials_done == {"set-1"}  # set-2 is still arriving

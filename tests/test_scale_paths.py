"""Hot paths that bench/scale.py (500 printers, 10,000 queued jobs) found
doing more than they must: each test pins the cheaper behaviour."""

from __future__ import annotations

import time
from dataclasses import asdict

from phaserlink.printer.jobs import Document, Job, PartialSet


def test_job_to_json_is_asdict_without_the_deep_copy():
    job = Job("j1", "p", "pending", ["job-queued"], 1.0, 2.0, uidls=["u1"], notify=["printed"],
              partial=PartialSet("set", 3, {"1": "u1"}), documents=[Document("docs/a.ps", "postscript", pages=2)],
              hold_token="t")
    assert job.to_json() == asdict(job)
    bare = Job("j2", "p", "pending", [], 1.0, 2.0)
    assert bare.to_json() == asdict(bare)
    # A copy: changing the record does not change the job.
    record = job.to_json()
    record["reasons"].append("x")
    record["partial"]["parts"]["2"] = "u2"
    record["documents"][0]["pages"] = 9
    assert job.reasons == ["job-queued"] and job.partial.parts == {"1": "u1"} and job.documents[0].pages == 2


def test_a_retry_of_a_dead_printer_reads_no_state_file_of_the_jobs_behind_it(tmp_path):
    """Before, each retry of the head read every queued job's state.json
    twice (its age, then its deadline): 10,000 queued jobs meant 20,000
    file reads per retry.  Their ages are in memory now; a job is read only
    when its delayed notice or its end is due, and those still go out."""
    from support.printer_fakes import Rig, make_site, message

    from phaserlink.printer.dispatch import RETRY_INITIAL

    rig = Rig(tmp_path, make_site(tmp_path, delay_notice="60s", max_retry_time="300s")).start(lp="down")
    for n in range(30):
        rig.deliver(message(msgid=f"<{n}@x>", body=f"job {n}".encode()))
    spool = rig.runner().spool
    loads = []
    real_load = spool.load
    spool.load = lambda job_id: (loads.append(job_id), real_load(job_id))[1]
    rig.clock.advance(RETRY_INITIAL)
    rig.settle()
    head = rig.runner().dispatcher.queue[0]
    assert loads == [head]  # the retried head alone
    # The notice and the end still reach every job behind the head.
    rig.run_for(300)
    events = rig.queue.events()
    assert events.count("delayed") == 30 and events.count("failed") == 30
    assert rig.job_dirs() == []


def test_submitting_queued_jobs_is_not_quadratic():
    """``job_id in deque`` walked the queue once per submitted job."""
    from phaserlink.printer.dispatch import JobQueue

    q = JobQueue()
    for n in range(3):
        q.append(f"j{n}")
    q.appendleft("j9")
    assert list(q) == ["j9", "j0", "j1", "j2"] and "j1" in q and len(q) == 4 and q[0] == "j9"
    q.remove("j1")
    assert "j1" not in q and q.popleft() == "j9" and "j9" not in q and list(q) == ["j0", "j2"]


def test_finishing_a_fresh_job_costs_no_index_lookup_but_a_recovered_one_does(tmp_path):
    """A "done" record can exist only for a job recovered terminal at start
    (a crash between the record and the removal) or whose removal failed;
    every printed job asked the index anyway, in the reactor."""
    from phaserlink.printer import jobs as J
    from phaserlink.printer import journal
    from phaserlink.printer.spool import JobSpool, new_job_id

    def a_job(state):
        return Job(new_job_id(), "lp", state, [], 1.0, 1.0, source="local mailbox lp", uidls=["u"])

    spool = JobSpool(tmp_path, "lp")
    spool.open()
    done = a_job(J.COMPLETED)
    spool.create(done)
    now = time.time()
    spool.seen.write([journal.done(done, now)], now, True)  # the crash came before the files went
    spool.close()

    spool = JobSpool(tmp_path, "lp")
    [recovered] = [j for j in _fired(spool.open())]
    fresh = a_job(J.PENDING)
    spool.create(fresh)
    asked = []
    real = spool.seen.finished
    spool.seen.finished = lambda job_id: (asked.append(job_id), real(job_id))[1]
    assert not spool.finished_before(fresh.job_id)
    assert spool.finished_before(recovered.job_id)
    assert asked == [recovered.job_id]


def _fired(d):
    out = []
    d.addCallback(out.append)
    return out[0]


def test_a_seen_index_opens_all_its_files_at_start_and_bounds_its_cache(tmp_path):
    """The reader's WAL used to open at its first lookup: the process's
    descriptors crept up by one per printer as printers got their first
    job, which looked like a leak after a run.  And each connection's page
    cache could grow to SQLite's default 2 MB: 2 GB for 500 printers' old
    indexes."""
    import os

    from phaserlink.limits import SEEN_CACHE_KIB
    from phaserlink.printer import journal

    seen = journal.SeenIndex(tmp_path / "seen.sqlite")
    seen.open(time.time())
    opened = len(os.listdir("/proc/self/fd"))
    seen.write([journal.message_id("<a@x>")], time.time(), True)
    assert seen.has_message_id("<a@x>") and not seen.has_uidl("src", "u")
    assert len(os.listdir("/proc/self/fd")) == opened
    for conn in (seen._reader, seen._writer):
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -SEEN_CACHE_KIB
    seen.close()


def test_a_job_for_an_idle_printer_is_not_read_back_from_the_disk(tmp_path):
    """The intake just wrote the job; its run read state.json back in the
    reactor.  A job that waits behind others is still read when its turn
    comes (tests/test_faults_dispatch.py: a record damaged meanwhile is
    left for a human)."""
    from support.printer_fakes import Rig, make_site, message

    rig = Rig(tmp_path, make_site(tmp_path)).start(lp="ok")
    spool = rig.runner().spool
    loads = []
    real_load = spool.load
    spool.load = lambda job_id: (loads.append(job_id), real_load(job_id))[1]
    rig.deliver(message(msgid="<idle@x>", body=b"%!PS idle"))
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS idle"]
    assert loads == [] and rig.runner().dispatcher.handed == {}


def test_a_finished_jobs_removal_needs_no_directory_fsync_and_a_lost_one_is_harmless(tmp_path, monkeypatch):
    """The "done" record is synced before the files go, so the spool
    directory's fsync after them only guarded against the job coming back
    after a power cut; when it does, it is terminal, recognised as finished
    and removed again without a second status mail."""
    import json

    from support.printer_fakes import Rig, make_site, message

    import phaserlink.printer.spool as spool_module

    rig = Rig(tmp_path, make_site(tmp_path)).start(lp="ok")
    root = rig.site.appliance.spool / "jobs" / "lp"
    synced = []
    real = spool_module.fsync_dir
    monkeypatch.setattr(spool_module, "fsync_dir", lambda path: (synced.append(str(path)), real(path))[1])
    rig.deliver(message(msgid="<done@x>", body=b"%!PS done"))
    assert len(rig.outputs["lp"].sent) == 1 and rig.queue.events() == ["received", "printed"]
    [printed] = [job for job, _data in rig.outputs["lp"].sent]
    assert synced.count(str(root)) == 1  # the job's creation; not its removal
    # The power cut lost the removal: the job is back, completed.
    job_id = printed.job_id  # one document: the printer's job id is the spool's
    back = root / job_id
    back.mkdir()
    state = {"job_id": job_id, "printer": "lp", "state": "completed", "reasons": ["job-completed-successfully"],
             "created": 1.0, "changed": 2.0, "sender": "alice@example.com", "message_id": "<done@x>"}
    (back / "state.json").write_text(json.dumps(state))
    rig.restart(lp="ok")
    assert not back.exists()
    assert rig.queue.events() == [] and len(rig.outputs["lp"].sent) == 0  # nothing printed or mailed again


def test_metrics_gauges_count_every_printer_in_one_query_and_read_no_job(tmp_path):
    """A /metrics scrape asked each printer for its view: its head job's
    state.json read and a count query per printer, 500 of each in the
    reactor at site scale.  The gauges now come from one query."""
    from support.printer_fakes import Rig, make_site, message

    from phaserlink.admin.metrics import ConsoleMetrics
    from phaserlink.printer.operations import PrinterOperations

    rig = Rig(tmp_path, make_site(tmp_path, names=("a", "b", "c"))).start(a="down", b="down", c="ok")
    ops = PrinterOperations(rig.service, rig.clock)
    for n in range(3):
        rig.deliver(message(msgid=f"<a{n}@x>"), printer="a")
    rig.deliver(message(msgid="<b0@x>"), printer="b")
    rig.deliver(message(msgid="<c0@x>"), printer="c")
    views = {p["name"]: p["jobs_waiting"] for p in ops.printers()}
    assert views == {"a": 3, "b": 1, "c": 0}
    loads = []
    for runner in ops.runners.values():
        real = runner.spool.load
        runner.spool.load = lambda job_id, real=real: (loads.append(job_id), real(job_id))[1]
    assert ops.gauges() == [("a", 3, False), ("b", 1, False), ("c", 0, False)]
    text = ConsoleMetrics(ops, None, list(ops.runners)).render().decode()
    assert 'phaserlink_jobs_waiting{printer="a"} 3.0' in text and 'phaserlink_jobs_waiting{printer="c"} 0.0' in text
    assert loads == []


def test_a_recipient_is_found_without_walking_every_printer(tmp_path):
    """Each RCPT walked all printers' addresses (and built the set of local
    domains again for an unknown one): O(printers) per recipient."""
    from phaserlink import config

    sections = "".join(f"[printer:p{i}]\naddresses = p{i}@site.test, P{i}-alias@other.test\noutput = pull\n"
                       "sender_auth = none\nallowed_senders = *\n\n" for i in range(300))
    (tmp_path / "site.ini").write_text(
        f"[appliance]\nhostname = box.test\nspool = {tmp_path / 'var'}\nsmtp_listen = tcp:0\npop3_listen = tcp:0\n\n"
        + sections + "[group:all]\naddress = all@site.test\nmembers = p1, p2\n")
    site = config.load(str(tmp_path / "site.ini"))
    assert [p.name for p in site.printers_for_address("<P299@Site.Test>")] == ["p299"]
    assert [p.name for p in site.printers_for_address("p7-alias@other.test")] == ["p7"]
    assert [p.name for p in site.printers_for_address("all@site.test")] == ["p1", "p2"]
    assert site.printers_for_address("nobody@site.test") is None
    assert site.is_local_domain("x@other.test") and not site.is_local_domain("x@elsewhere.test")
    walked = []

    class Spy(dict):
        def values(self):
            walked.append(1)
            return super().values()

    object.__setattr__(site, "printers", Spy(site.printers))
    site.printers_for_address("p150@site.test")
    site.is_local_domain("x@elsewhere.test")
    assert walked == []


def _inspect_threads(tmp_path):
    import dataclasses
    import threading

    from support.printer_fakes import FakeOutput, FakeQueue, fake_toolkit, make_site, message
    from twisted.internet import reactor, task

    from phaserlink.pop3_store.maildir import MaildirStore
    from phaserlink.printer.service import PrinterService

    threads: list[bool] = []  # in the reactor thread?
    base = fake_toolkit()

    def inspect(path):
        threads.append(threading.current_thread() is threading.main_thread())
        return base.inspect(path)

    from phaserlink.pop3_store import maildir

    listed: list[bool] = []
    real_messages = maildir.Maildir.messages

    def messages(self):
        listed.append(threading.current_thread() is threading.main_thread())
        return real_messages(self)

    maildir.Maildir.messages = messages
    site = make_site(tmp_path)
    store = MaildirStore(site.appliance.spool / "mail", list(site.printers))
    out = FakeOutput("ok")
    printers = PrinterService(site, store, FakeQueue(), reactor=reactor,
                              tools=dataclasses.replace(base, inspect=inspect), outputs={"lp": out})
    printers.startService()
    try:
        d = store.deliver(["lp"])
        d.write(message())
        d.commit()
        for _ in range(500):
            if out.sent:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        assert len(out.sent) == 1
    finally:
        maildir.Maildir.messages = real_messages
        yield printers.stopService()
    assert threads == [False]
    assert listed and True not in listed  # the retriever's listing of the Maildir, too


def test_the_intake_reads_a_message_header_off_the_reactor_thread(tmp_path):
    import pytest_twisted

    return pytest_twisted.inlineCallbacks(_inspect_threads)(tmp_path)


def test_seen_index_lookups_leave_no_garbage_and_no_open_snapshot(tmp_path):
    """Connection.execute made a cursor per statement, each remembered by a
    weak reference until 200 piled up: ~200,000 of them over 1,000
    connections for the collector to walk.  The reused cursor must not hold
    a read snapshot after a hit either (the WAL could not be checkpointed)."""
    import gc
    import weakref

    from phaserlink.printer import journal

    seen = journal.SeenIndex(tmp_path / "seen.sqlite")
    seen.open(time.time())

    def weakrefs() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is weakref.ReferenceType)

    before = weakrefs()
    for n in range(150):
        seen.write([journal.message_id(f"<{n}@x>")], time.time())
        assert seen.has_message_id(f"<{n}@x>")
    assert weakrefs() - before < 10
    busy, _log, _done = seen._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
    assert busy == 0 and (tmp_path / "seen.sqlite-wal").stat().st_size == 0
    seen.close()

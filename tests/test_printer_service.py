"""The printer side's state machine on a task.Clock: a real Maildir store and
spool, fake message tools, a fake printer and a fake outbound queue."""

from __future__ import annotations

import json

import pytest
from support.printer_fakes import Rig, make_site, message

from phaserlink.printer import jobs as J
from phaserlink.printer.dispatch import RETRY_INITIAL


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path, make_site(tmp_path))


def state_files(rig, name="lp"):
    return [json.loads((d / "state.json").read_text()) for d in rig.job_dirs(name) if (d / "state.json").exists()]


def test_a_delivered_job_is_printed_once_and_the_sender_told(rig):
    rig.start()
    rig.deliver(message(X_PhaserLink_Copies="3"))
    out = rig.outputs["lp"]
    assert [data for _job, data in out.sent] == [b"%!PS\nshowpage\n"]
    job = out.sent[0][0]
    assert job.copies == 3 and job.title == "Report" and job.format == "application/postscript"
    assert job.user == "alice" and job.host == "phaserlink.test"
    assert rig.mailbox() == []  # deleted at the source
    assert rig.job_dirs() == []  # and gone from the spool once done
    assert rig.queue.events() == ["received", "printed"]
    printed = rig.queue.messages[-1]
    assert printed.mail_from == "" and printed.recipients == ["alice@example.com"]
    assert printed.field("state") == "completed" and printed.field("pages") == "2"
    assert printed.field("reasons") == "['job-completed-successfully']"
    assert printed.field("original_message_id") == "<m1@example.com>"
    assert printed.field("from_") == "postmaster@phaserlink.test"
    [done] = rig.runner().spool.seen.records("done")
    assert done["state"] == "completed"


def test_copies_are_capped_at_copies_max(rig):
    rig.start()
    rig.deliver(message(X_PhaserLink_Copies="50"))
    assert rig.outputs["lp"].sent[0][0].copies == 10


def test_state_is_on_disk_before_the_printer_gets_the_job(rig):
    rig.start(lp="hang")
    rig.deliver(message())
    out = rig.outputs["lp"]
    assert out.pending is not None  # the send is in flight...
    [state] = state_files(rig)  # ...and the disk already says so
    assert state["state"] == J.PROCESSING and state["reasons"] == [J.JOB_PRINTING]
    assert state["documents"][0]["format"] == "postscript"
    out.finish()
    assert rig.job_dirs() == []


def test_restart_resumes_a_job_that_was_processing(rig):
    rig.start(lp="hang")
    rig.deliver(message())
    assert state_files(rig)[0]["state"] == J.PROCESSING
    first = rig.outputs["lp"]
    rig.restart()  # kill -9 during the send: the printer never acknowledged
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS\nshowpage\n"]
    assert first.sent == []
    assert rig.job_dirs() == [] and rig.mailbox() == []


def test_restart_resumes_pending_and_held_jobs(rig):
    rig.start(lp="down")
    rig.deliver(message(msgid="<a@x>"))
    rig.deliver(message(msgid="<b@x>"))
    states = sorted(s["state"] for s in state_files(rig))
    assert states == [J.PENDING, J.PENDING_HELD]
    rig.restart(lp="ok")
    assert len(rig.outputs["lp"].sent) == 2
    assert rig.job_dirs() == []


def test_crash_between_spool_and_delete_does_not_print_twice(rig, monkeypatch):
    rig.start(lp="hang")
    from phaserlink.printer import local_source

    # The crash: the source's delete never becomes durable.
    monkeypatch.setattr(local_source.LocalMailSession, "close", lambda self: __import__("twisted").internet.defer.succeed(None))
    rig.deliver(message())
    assert len(rig.mailbox()) == 1 and len(rig.job_dirs()) == 1
    monkeypatch.undo()
    rig.restart()
    assert len(rig.outputs["lp"].sent) == 1  # the spooled job, printed once
    assert rig.mailbox() == []  # the redelivered copy was recognised and deleted
    assert rig.job_dirs() == []


def test_crash_before_the_journal_line_still_recognises_the_uidl(rig, monkeypatch):
    """The job is in the spool but its journal line was never written."""
    rig.start(lp="hang")
    from phaserlink.printer import local_source

    monkeypatch.setattr(local_source.LocalMailSession, "close", lambda self: __import__("twisted").internet.defer.succeed(None))
    rig.deliver(message())
    monkeypatch.undo()
    for name in ("seen.sqlite", "seen.sqlite-wal", "seen.sqlite-shm"):  # the records are lost
        (rig.site.appliance.spool / "jobs/lp" / name).unlink(missing_ok=True)
    rig.restart()
    assert len(rig.outputs["lp"].sent) == 1
    assert rig.mailbox() == []


def test_same_message_id_twice_prints_once(rig):
    rig.start()
    rig.deliver(message(msgid="<dup@example.com>"))
    rig.deliver(message(msgid="<dup@example.com>"))
    assert len(rig.outputs["lp"].sent) == 1
    assert rig.mailbox() == []
    rig.restart()  # and still recognised after a restart (the journal)
    rig.deliver(message(msgid="<dup@example.com>"))
    assert rig.outputs["lp"].sent == [] and rig.mailbox() == []


def fragment(pid, n, total, body, **kw):
    return message(msgid=f"<frag{n}.{pid}@example.com>", X_Fake_Partial=f"{pid} {n} {total}", body=body, **kw)


INNER = b"From: alice@example.com\nSubject: Big job\nMessage-ID: <inner@example.com>\n\n"


def test_fragments_reassemble_in_any_order_duplicates_ignored(rig):
    rig.start()
    rig.deliver(fragment("p1", 3, 3, b"part three\n"))
    [state] = state_files(rig)
    assert state["state"] == J.PENDING_HELD and state["reasons"] == [J.JOB_INCOMING]
    rig.deliver(fragment("p1", 1, "?", INNER + b"part one\n"))
    rig.deliver(fragment("p1", 3, 3, b"part three\n"))  # a duplicate
    assert rig.outputs["lp"].sent == []
    rig.deliver(fragment("p1", 2, "?", b"part two\n"))
    [(job, data)] = rig.outputs["lp"].sent
    assert data == b"part one\npart two\npart three\n"
    assert job.title == "Big job"
    assert rig.mailbox() == [] and rig.job_dirs() == []
    events = rig.queue.events()
    assert events == ["fragment", "fragment", "fragment", "fragment", "received", "printed"]
    assert "So far parts 1 and 3 of 3 arrived; part 2 is missing" in rig.queue.messages[1].text
    assert rig.queue.messages[-1].field("original_message_id") == "<inner@example.com>"
    # A late copy of a fragment of a finished set prints nothing.
    rig.deliver(fragment("p1", 2, "?", b"part two\n"))
    assert len(rig.outputs["lp"].sent) == 1 and rig.mailbox() == []


def test_incomplete_set_is_aborted_after_partial_timeout_saying_which_parts_arrived(rig):
    rig.start()
    for n in (4, 1, 2):
        rig.deliver(fragment("p2", n, 5, b"x\n"))
    rig.clock.advance(3599)
    assert state_files(rig)[0]["state"] == J.PENDING_HELD
    rig.clock.advance(2)
    assert rig.job_dirs() == [] and rig.outputs["lp"].sent == []
    mail = rig.queue.messages[-1]
    assert mail.field("event") == "failed" and mail.field("state") == "aborted"
    assert "parts 1, 2 and 4 of 5 arrived; parts 3 and 5 are missing after waiting 1 hour" in mail.text
    # A straggler after the abort starts no new set and sends no new mail.
    n_mails = len(rig.queue.messages)
    rig.deliver(fragment("p2", 3, "?", b"x\n"))
    assert rig.job_dirs() == [] and len(rig.queue.messages) == n_mails and rig.mailbox() == []


def test_incomplete_set_without_its_last_part_says_the_count_is_unknown(rig):
    rig.start()
    rig.deliver(fragment("p3", 2, "?", b"x\n"))
    rig.clock.advance(3601)
    assert ("part 2 arrived, but not the last part, which says how many parts there are; "
            "part 1 is missing too") in rig.queue.messages[-1].text


def test_a_set_survives_a_restart_and_its_timeout_too(rig):
    rig.start()
    rig.deliver(fragment("p4", 1, "?", INNER + b"one\n"))
    rig.restart()
    rig.clock.advance(100)
    rig.deliver(fragment("p4", 2, 2, b"two\n"))
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"one\ntwo\n"]
    rig.deliver(fragment("p5", 1, "?", b"x\n"))
    created = rig.clock.seconds()
    rig.restart()
    rig.clock.advance(3599)
    assert len(rig.job_dirs()) == 1
    rig.clock.advance(1)
    assert rig.job_dirs() == [] and rig.queue.events()[-1] == "failed"
    assert rig.clock.seconds() == created + 3600


def test_notify_is_the_intersection_of_printer_policy_and_request(tmp_path):
    rig = Rig(tmp_path, make_site(tmp_path, notify="printed, errors")).start()
    rig.deliver(message(msgid="<a@x>"))  # default: the printer's policy
    assert rig.queue.events() == ["printed"]
    rig.deliver(message(msgid="<b@x>", X_PhaserLink_Notify="received, errors"))  # received not allowed
    assert rig.queue.events() == ["printed"]
    rig.deliver(message(msgid="<c@x>", X_PhaserLink_Notify="none"))
    assert rig.queue.events() == ["printed"]
    rig.deliver(message(msgid="<d@x>", X_PhaserLink_Notify="failed, printed"))  # the client's words
    assert rig.queue.events() == ["printed", "printed"]


def test_unprintable_is_aborted_with_document_format_error_and_said(rig):
    rig.start()
    rig.deliver(message(X_Format="bad"))
    assert rig.outputs["lp"].sent == [] and rig.job_dirs() == []
    mail = rig.queue.messages[-1]
    assert mail.field("event") == "failed"
    assert mail.field("reasons") == "['document-format-error', 'unsupported-document-format']"
    assert "nothing printable in the message (found: image/png)" in mail.text


def test_pdf_is_converted_for_a_postscript_printer(rig):
    rig.start()
    rig.deliver(message(X_Format="pdf", body=b"%PDF-1.4\n"))
    [(job, data)] = rig.outputs["lp"].sent
    assert data == b"%!converted from pdf\n%PDF-1.4\n" and job.format == "application/postscript"


def test_pcl_for_a_postscript_printer_is_aborted_not_dropped(rig):
    rig.start()
    rig.deliver(message(X_Format="pcl"))
    assert rig.outputs["lp"].sent == []
    assert "a pcl document cannot be converted" in rig.queue.messages[-1].text


def test_the_printer_side_does_not_judge_senders(rig):
    """Who may print is decided in the SMTP session (docs/trust.md): what is
    in the appliance's own store got its 250 and prints.  (Before issue 8
    the intake dropped it silently after the 250.)  Status mail still goes
    only to allowed senders: no backscatter to a forged From:."""
    rig.start()
    rig.deliver(message(sender="mallory@evil.example"))
    assert len(rig.outputs["lp"].sent) == 1
    assert rig.queue.messages == []


def test_printer_down_backs_off_sends_delayed_mail_and_gives_up(rig):
    rig.start(lp="down")
    rig.deliver(message())
    out = rig.outputs["lp"]
    [state] = state_files(rig)
    assert state["state"] == J.PENDING_HELD and state["reasons"] == [J.PRINTER_STOPPED]
    assert state["detail"] == "connection refused"
    rig.run_for(300)
    # 0, then 5, 10, 20, ... after each failure; a retry falls on the 60 s notice.
    assert out.attempts[:4] == [0, RETRY_INITIAL, RETRY_INITIAL * 3, RETRY_INITIAL * 7]
    assert 60 in out.attempts and out.attempts[-1] == 300
    assert rig.queue.events() == ["received", "delayed", "failed"]
    delayed = rig.queue.messages[1]
    assert "has not been reachable (connection refused)" in delayed.text
    aborted = rig.queue.messages[2]
    assert aborted.field("state") == "aborted"
    assert "could not be reached for 5 minutes (connection refused)" in aborted.text
    assert rig.job_dirs() == []


def test_printer_back_up_gets_its_jobs_in_order(rig):
    rig.start(lp="down")
    rig.deliver(message(msgid="<1@x>", body=b"one"))
    rig.deliver(message(msgid="<2@x>", body=b"two"))
    rig.outputs["lp"].mode = "ok"
    rig.clock.advance(RETRY_INITIAL)
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"one", b"two"]


def test_a_rejected_job_is_aborted_at_once(rig):
    rig.start(lp="reject")
    rig.deliver(message())
    assert rig.job_dirs() == []
    assert "the printer refused the job: queue does not exist" in rig.queue.messages[-1].text


def test_other_printers_keep_printing_while_one_is_down(tmp_path):
    rig = Rig(tmp_path, make_site(tmp_path, names=("a", "b"))).start(a="down", b="ok")
    rig.deliver(message(msgid="<1@x>"), printer="a")
    rig.deliver(message(msgid="<2@x>"), printer="b")
    assert rig.outputs["a"].sent == [] and len(rig.outputs["b"].sent) == 1


def test_one_job_at_a_time_per_printer(rig):
    rig.start(lp="hang")
    rig.deliver(message(msgid="<1@x>", body=b"one"))
    rig.deliver(message(msgid="<2@x>", body=b"two"))
    out = rig.outputs["lp"]
    assert out.pending is not None and out.sent == []
    out.finish()
    rig.settle()
    assert [d for _j, d in out.sent] == [b"one"] and out.pending is not None
    out.finish()
    assert [d for _j, d in out.sent] == [b"one", b"two"]


def test_poll_is_the_fallback_when_no_event_came(rig):
    rig.start()
    box = rig.store.mailbox("lp")
    (box.new / "1.M1P1Q1.host").write_bytes(message())  # dropped in by hand: no event
    rig.settle()
    assert rig.outputs["lp"].sent == []
    rig.clock.advance(60)
    rig.settle()
    assert len(rig.outputs["lp"].sent) == 1


def test_a_pull_printer_has_no_runner(tmp_path):
    site = make_site(tmp_path)
    text = site.path.read_text() + "\n[printer:pull]\nsender_auth = none\noutput = pull\nallowed_senders = *\n"
    site.path.write_text(text)
    from phaserlink import config

    rig = Rig(tmp_path, config.load(site.path)).start()
    assert set(rig.service.runners) == {"lp"}

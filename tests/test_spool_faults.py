"""A full spool disk (a real 8 MB tmpfs filled to ENOSPC) at retrieval and at
spooling: nothing lost (the message stays in the mailbox and prints once
space is back), nothing printed twice, no job left behind half-made."""

from __future__ import annotations

import dataclasses

import pytest
from support.printer_fakes import Rig, make_site, message

JOB = message(body=b"%!PS\n" + b"% filler line to make the job a few pages long\n" * 2000 + b"showpage\n")


@pytest.fixture
def rig(small_disk):
    return Rig(small_disk.path, make_site(small_disk.path))


def deliver_then_fill(rig, disk, data=JOB):
    """Deliver (the 250 came: the message is in the Maildir), then the disk
    fills before the retriever copies it."""
    d = rig.store.deliver(["lp"])
    d.write(data)
    d.commit()
    disk.fill(leave=0)
    rig.settle()


def fill_disk_before(rig, disk, tool: str) -> list:
    """Make the intake's *tool* (``inspect``, ``reassemble``) fill *disk*
    to ENOSPC the first time it is called, then do its work; the list
    returned is non-empty once that happened."""
    intake = rig.runner().intake
    real = getattr(intake.tools, tool)
    filled: list = []

    def on_a_disk_that_fills(*args):
        if not filled:
            disk.fill(leave=0)
            filled.append(True)
        return real(*args)

    intake.tools = dataclasses.replace(intake.tools, **{tool: on_a_disk_that_fills})
    return filled


def test_enospc_at_retrieval_keeps_the_message_and_prints_it_once_later(rig, small_disk):
    rig.start()
    deliver_then_fill(rig, small_disk)
    assert rig.outputs["lp"].sent == []
    assert len(rig.mailbox()) == 1  # still at the source
    assert rig.job_dirs() == []
    assert list((rig.site.appliance.spool / "jobs/lp/incoming").iterdir()) == []  # no partial copy
    rig.clock.advance(60)  # a poll while the disk is still full: still nothing lost
    rig.settle()
    assert len(rig.mailbox()) == 1 and rig.outputs["lp"].sent == []
    small_disk.release()
    rig.clock.advance(60)
    rig.settle()
    assert [d for _j, d in rig.outputs["lp"].sent] == [JOB.partition(b"\n\n")[2]]
    assert rig.mailbox() == [] and rig.job_dirs() == []
    rig.clock.advance(120)
    rig.settle()
    rig.restart()
    assert len(rig.outputs["lp"].sent) == 0  # nothing resumed a second time


def test_enospc_at_spooling_keeps_the_message_and_prints_it_once_later(rig, small_disk):
    rig.start()
    # Retrieval succeeds (the message is in incoming/, fsync'd); then the
    # disk fills before the job's state is written.
    filled = fill_disk_before(rig, small_disk, "inspect")
    rig.deliver(JOB)
    assert filled and rig.outputs["lp"].sent == []
    assert len(rig.mailbox()) == 1  # not deleted: the job was never durable
    assert rig.job_dirs() == []  # and no half-made job that would print at the next start
    assert not rig.runner().spool.seen.has_message_id("<m1@example.com>")
    small_disk.release()
    rig.clock.advance(60)
    rig.settle()
    assert len(rig.outputs["lp"].sent) == 1
    assert rig.mailbox() == [] and rig.job_dirs() == []
    rig.restart()
    rig.clock.advance(120)
    rig.settle()
    assert rig.outputs["lp"].sent == []  # printed once, in all


def test_enospc_for_a_fragment_keeps_it_and_the_set_completes_later(rig, small_disk):
    inner = b"From: alice@example.com\nSubject: Big\nMessage-ID: <inner@example.com>\n\n"

    def fragment(n, body):
        return message(msgid=f"<f{n}@example.com>", X_Fake_Partial=f"set {n} 2", body=body)

    rig.start()
    rig.deliver(fragment(1, inner + b"one\n"))
    fill_disk_before(rig, small_disk, "inspect")
    rig.deliver(fragment(2, b"two\n"))
    assert rig.outputs["lp"].sent == [] and len(rig.mailbox()) == 1
    small_disk.release()
    rig.clock.advance(60)
    rig.settle()
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"one\ntwo\n"]
    assert rig.mailbox() == [] and rig.job_dirs() == []


def test_enospc_while_a_set_is_put_together_is_retried_not_blamed_on_the_document(rig, small_disk):
    from phaserlink.printer.intake import SPOOL_RETRY

    inner = b"From: alice@example.com\nSubject: Big\nMessage-ID: <inner2@example.com>\n\n"

    def fragment(n, body):
        return message(msgid=f"<g{n}@example.com>", X_Fake_Partial=f"set2 {n} 2", body=body)

    rig.start()
    filled = fill_disk_before(rig, small_disk, "reassemble")
    rig.deliver(fragment(1, inner + b"one\n" * 2000))
    rig.deliver(fragment(2, b"two\n" * 2000))
    assert filled and rig.outputs["lp"].sent == []
    assert "failed" not in rig.queue.events()  # not "document-format-error"
    assert rig.mailbox() == []  # both fragments are safe in the set
    small_disk.release()
    rig.clock.advance(SPOOL_RETRY)
    rig.settle()
    [(_job, data)] = rig.outputs["lp"].sent
    assert data == b"one\n" * 2000 + b"two\n" * 2000
    assert rig.job_dirs() == []

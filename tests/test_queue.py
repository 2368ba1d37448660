"""The outbound queue on a fake clock with a fake SMTP client.

What the admin and the sender would check: the files on disk right after
commit(), when each attempt happens, who gets a bounce and what it says,
and that a new queue over the same spool picks up where the old one was.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from phaserlink.config import Smarthost
from phaserlink.net import smtp_client
from phaserlink.net.smtp_client import RecipientResult, RecipientsRefused, Reply, SendResult, ServerInfo, SMTPError
from phaserlink.smtp_relay.interfaces import IOutboundQueue, IQueuedMessage
from phaserlink.smtp_relay.queue import MAX_CONCURRENT_DELIVERIES, OutboundQueue

MESSAGE = b"From: alice@example.test\nTo: bob@remote.test\nSubject: hello\nMessage-ID: <m1@example.test>\n\nbody\n.\n"
RETRY_MIN, RETRY_MAX, MAX_AGE = 60.0, 300.0, 2000.0


def make_site(spool: Path, smarthost: bool = True, password_file: Path | None = None) -> SimpleNamespace:
    host = Smarthost("smarthost.test", 2525, "required", False, None, "relay" if password_file else None, password_file)
    appliance = SimpleNamespace(
        spool=spool,
        hostname="phaserlink.test",
        status_sender="postmaster@phaserlink.test",
        smarthost=host if smarthost else None,
        queue_retry_min=RETRY_MIN,
        queue_retry_max=RETRY_MAX,
        queue_max_age=MAX_AGE,
    )
    return SimpleNamespace(appliance=appliance)


class FakeSMTP:
    """Stands in for smtp_client.send: records calls, the test answers them."""

    def __init__(self, clock: task.Clock):
        self.clock = clock
        self.calls: list[SimpleNamespace] = []

    def __call__(self, reactor, host, port, mail_from, recipients, source, **kw):
        call = SimpleNamespace(
            at=self.clock.seconds(), host=host, port=port, mail_from=mail_from,
            recipients=list(recipients), data=Path(source).read_bytes(), kw=kw, d=defer.Deferred(),
        )
        self.calls.append(call)
        return call.d


def reply(code: int, text: str) -> Reply:
    return Reply(code, (text,))


def answer(call, **codes: int) -> None:
    """Fire a call's result: recipient local part -> RCPT reply code."""
    results = []
    for rcpt in call.recipients:
        code = codes.get(rcpt.partition("@")[0], 250)
        text = {250: "2.1.5 ok", 450: "4.2.1 mailbox busy", 550: "5.1.1 no such user"}[code]
        results.append(RecipientResult(rcpt, reply(code, text)))
    if any(r.accepted for r in results):
        call.d.callback(SendResult(tuple(results), reply(250, "2.0.0 queued"), ServerInfo("hi", True)))
    else:
        call.d.errback(RecipientsRefused(tuple(results)))


def connection_refused(call) -> None:
    call.d.errback(SMTPError("cannot connect: refused", stage=smtp_client.STAGE_CONNECT))


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def fake(clock):
    return FakeSMTP(clock)


@pytest.fixture
def queue(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake)
    yield q
    if q.running:
        q.stopService()


def make_queue(tmp_path, clock, fake, **site_kw) -> OutboundQueue:
    q = OutboundQueue(make_site(tmp_path / "spool", **site_kw), reactor=clock)
    q.send = fake
    q.startService()
    return q


def fired(d: defer.Deferred):
    """The result of a Deferred that must have fired already (the clock has
    no threads: the queue's durable pool runs inline)."""
    out: list = []
    d.addBoth(out.append)
    assert out, "still waiting"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def enqueue(q: OutboundQueue, sender="alice@example.test", rcpts=("bob@remote.test",), data=MESSAGE,
            body=None) -> str:
    m = q.submit(sender, list(rcpts), body)
    m.write(data[:10])
    m.write(data[10:])
    return fired(m.commit())


def envelope(q: OutboundQueue, queue_id: str) -> dict:
    return json.loads((q.env_dir / f"{queue_id}.json").read_bytes())


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_interfaces(queue):
    assert IOutboundQueue.providedBy(queue)
    assert IQueuedMessage.providedBy(queue.submit("a@b.test", ["c@d.test"]))


def test_commit_is_on_disk_and_fsynced_before_it_returns(queue, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    m = queue.submit("alice@example.test", ["bob@remote.test", "carol@remote.test"])
    m.write(MESSAGE)
    queue_id = fired(m.commit())  # no reactor turn after this
    data_file = queue.data_dir / queue_id
    assert data_file.read_bytes() == MESSAGE
    env = envelope(queue, queue_id)
    assert env["mail_from"] == "alice@example.test"
    assert env["recipients"] == ["bob@remote.test", "carol@remote.test"]
    assert list(queue.tmp_dir.iterdir()) == []
    # The data file and its directory, the envelope and its directory.
    assert str(queue.data_dir) in synced and str(queue.env_dir) in synced
    assert any(s.startswith(str(queue.tmp_dir)) and s.endswith(".data") for s in synced)
    assert any(s.startswith(str(queue.tmp_dir)) and s.endswith(".json") for s in synced)
    assert synced.index(str(queue.data_dir)) < synced.index(str(queue.env_dir))


def test_abort_leaves_nothing(queue, fake, clock):
    m = queue.submit("alice@example.test", ["bob@remote.test"])
    m.write(b"partial")
    m.abort()
    clock.advance(0)
    assert list(queue.tmp_dir.iterdir()) == [] and list(queue.env_dir.iterdir()) == []
    assert fake.calls == []


def test_submit_refuses_bad_addresses(queue):
    with pytest.raises(ValueError):
        queue.submit("a@b.test\r\nRCPT TO:<x@y>", ["c@d.test"])
    with pytest.raises(ValueError):
        queue.submit("a@b.test", [])


def test_delivered_message_leaves_the_queue(queue, fake, clock):
    queue_id = enqueue(queue)
    assert fake.calls == []  # delivery starts on the next reactor turn
    clock.advance(0)
    [call] = fake.calls
    assert (call.host, call.port, call.mail_from, call.recipients) == (
        "smarthost.test", 2525, "alice@example.test", ["bob@remote.test"]
    )
    assert call.data == MESSAGE
    assert call.kw["helo"] == "phaserlink.test" and call.kw["tls"] == "required"
    answer(call)
    assert not (queue.env_dir / f"{queue_id}.json").exists()
    assert not (queue.data_dir / queue_id).exists()
    assert queue.queued() == []


def test_password_is_read_from_its_file(tmp_path, clock, fake):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    q = make_queue(tmp_path, clock, fake, password_file=pw)
    enqueue(q)
    clock.advance(0)
    assert fake.calls[0].kw["username"] == "relay" and fake.calls[0].kw["password"] == "s3cret"
    q.stopService()


def test_per_recipient_outcomes_and_bounce(queue, fake, clock):
    queue_id = enqueue(queue, rcpts=("ok@remote.test", "busy@remote.test", "gone@remote.test"))
    clock.advance(0)
    answer(fake.calls[0], busy=450, gone=550)
    # The delivered and the bounced recipients are gone from the envelope.
    env = envelope(queue, queue_id)
    assert env["recipients"] == ["busy@remote.test"] and env["attempts"] == 1
    assert "450 4.2.1 mailbox busy" in env["last_error"]
    # The bounce is queued and goes out on the next turn, from <> to the sender.
    [bounce_env] = [e for e in queue.queued() if e.id != queue_id]
    assert bounce_env.mail_from == "" and bounce_env.recipients == ("alice@example.test",)
    clock.advance(0)
    bounce_call = fake.calls[1]
    assert bounce_call.mail_from == "" and bounce_call.recipients == ["alice@example.test"]
    dsn = parse(bounce_call.data)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == "alice@example.test" and dsn["Auto-Submitted"] == "auto-replied"
    text, status, headers = dsn.get_payload()
    assert "<gone@remote.test>: smtp; 550 5.1.1 no such user" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    raw_status = status.as_bytes()
    assert b"Reporting-MTA: dns; phaserlink.test" in raw_status
    assert b"Final-Recipient: rfc822; gone@remote.test" in raw_status
    assert b"Action: failed" in raw_status and b"Status: 5.1.1" in raw_status
    assert b"Remote-MTA: dns; smarthost.test" in raw_status
    assert b"busy@remote.test" not in raw_status and b"ok@remote.test" not in raw_status
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"Message-ID: <m1@example.test>" in headers.as_bytes()
    assert b"\nbody\n" not in bounce_call.data  # headers only, not the body


def test_backoff_doubles_to_max_then_bounces_at_max_age(queue, fake, clock):
    queue_id = enqueue(queue)
    clock.advance(0)
    while queue_id in {e.id for e in queue.queued()} and len(fake.calls) < 30:
        connection_refused(fake.calls[-1])
        pending = [c.getTime() for c in clock.getDelayedCalls()]
        if pending:
            clock.advance(min(pending) - clock.seconds())
    times = [c.at for c in fake.calls if c.mail_from]
    # 60, 120, 240, then capped at 300; one last attempt at exactly max age.
    assert times == [0, 60, 180, 420, 720, 1020, 1320, 1620, 1920, 2000]
    assert not (queue.data_dir / queue_id).exists()
    [dsn_env] = queue.queued()
    assert dsn_env.mail_from == "" and dsn_env.recipients == ("alice@example.test",)
    dsn = (queue.data_dir / dsn_env.id).read_bytes()
    assert b"Status: 4.4.7" in dsn and b"cannot connect: refused" in dsn
    assert b"Remote-MTA" not in dsn  # nobody answered


def test_temporary_failure_schedule_is_kept_in_the_envelope(queue, fake, clock):
    queue_id = enqueue(queue)
    clock.advance(0)
    connection_refused(fake.calls[0])
    env = envelope(queue, queue_id)
    assert env["next_attempt"] == RETRY_MIN and env["attempts"] == 1
    clock.advance(RETRY_MIN - 1)
    assert len(fake.calls) == 1
    clock.advance(1)
    assert len(fake.calls) == 2


def test_null_sender_is_never_bounced(queue, fake, clock):
    queue_id = enqueue(queue, sender="", rcpts=("gone@remote.test",))
    clock.advance(0)
    answer(fake.calls[0], gone=550)
    assert queue.queued() == []
    assert not (queue.data_dir / queue_id).exists()
    clock.advance(RETRY_MAX)
    assert len(fake.calls) == 1


def test_5xx_at_auth_is_retried_not_bounced(queue, fake, clock):
    queue_id = enqueue(queue)
    clock.advance(0)
    fake.calls[0].d.errback(SMTPError("auth", code=535, enhanced="5.7.8", text="bad", permanent=True, stage="auth"))
    assert [e.id for e in queue.queued()] == [queue_id]
    clock.advance(RETRY_MIN)
    assert len(fake.calls) == 2


def test_5xx_to_the_message_bounces_all_recipients(queue, fake, clock):
    enqueue(queue, rcpts=("a@remote.test", "b@remote.test"))
    clock.advance(0)
    fake.calls[0].d.errback(
        SMTPError("big", code=552, enhanced="5.3.4", text="5.3.4 too big", permanent=True, stage="message")
    )
    [dsn_env] = queue.queued()
    dsn = (queue.data_dir / dsn_env.id).read_bytes()
    assert dsn.count(b"Status: 5.3.4") == 2


def test_restart_recovers_queue_and_schedule(tmp_path, clock, fake):
    first = make_queue(tmp_path, clock, fake)
    queue_id = enqueue(first)
    clock.advance(0)
    connection_refused(fake.calls[0])  # next attempt at t=60
    first.stopService()
    clock.advance(10)
    # A crash mid-commit leaves a tmp file and data without an envelope.
    (first.tmp_dir / "junk.data").write_bytes(b"x")
    (first.data_dir / "orphan").write_bytes(b"x")

    again = FakeSMTP(clock)
    second = make_queue(tmp_path, clock, again)
    assert [e.id for e in second.queued()] == [queue_id]
    assert list(second.tmp_dir.iterdir()) == [] and not (second.data_dir / "orphan").exists()
    clock.advance(40)
    assert again.calls == []
    clock.advance(10)
    [call] = again.calls
    assert call.data == MESSAGE and call.recipients == ["bob@remote.test"]
    answer(call)
    assert second.queued() == []
    second.stopService()


def test_commit_before_start_is_delivered_after_start(tmp_path, clock, fake):
    q = OutboundQueue(make_site(tmp_path / "spool"), reactor=clock)
    q.send = fake
    enqueue(q)
    clock.advance(0)
    assert fake.calls == []
    q.startService()
    clock.advance(0)
    assert len(fake.calls) == 1
    q.stopService()


def test_without_smarthost_mail_stays_queued_until_it_expires(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake, smarthost=False)
    queue_id = enqueue(q)
    clock.advance(MAX_AGE - 1)
    assert fake.calls == []
    assert [e.id for e in q.queued()] == [queue_id] and (q.data_dir / queue_id).exists()
    clock.advance(1)  # queue_max_age: bounced (tests/test_rfc5321_queue.py has the details)
    assert queue_id not in {e.id for e in q.queued()} and not (q.data_dir / queue_id).exists()
    q.stopService()


def test_concurrent_deliveries_are_limited(queue, fake, clock):
    for _ in range(MAX_CONCURRENT_DELIVERIES + 2):
        enqueue(queue)
    clock.advance(0)
    assert len(fake.calls) == MAX_CONCURRENT_DELIVERIES
    answer(fake.calls[0])
    assert len(fake.calls) == MAX_CONCURRENT_DELIVERIES + 1
    for call in fake.calls[1:]:
        answer(call)
    assert len(fake.calls) == MAX_CONCURRENT_DELIVERIES + 2
    answer(fake.calls[-1])
    assert queue.queued() == []


def test_stop_waits_for_attempts_in_flight(queue, fake, clock):
    queue_id = enqueue(queue)
    clock.advance(0)
    stopped = queue.stopService()
    assert stopped is not None and not stopped.called
    answer(fake.calls[0])
    assert stopped.called and queue.queued() == []
    assert not (queue.data_dir / queue_id).exists()

"""The outbound queue, issue 7 items: expiry without a smarthost, the
BODY type and wire size carried in the envelope, the commit's file work off
the reactor thread, and a bounded stop.  Fake clock, fake SMTP client (and
the real reactor where threads are the point)."""

from __future__ import annotations

import json
import os
import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from phaserlink.net import smtp_client
from phaserlink.net.smtp_client import SMTPError
from phaserlink.smtp_relay.queue import STOP_TIMEOUT, OutboundQueue

from test_queue import (  # noqa: F401  (clock and fake are fixtures)
    MAX_AGE, MESSAGE, FakeSMTP, answer, clock, enqueue, envelope, fake, make_queue, make_site, parse)


def test_no_smarthost_bounces_at_max_age_with_the_reason(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake, smarthost=False)
    queue_id = enqueue(q)
    clock.advance(MAX_AGE)
    [dsn_env] = q.queued()
    assert dsn_env.id != queue_id
    assert dsn_env.mail_from == "" and dsn_env.recipients == ("alice@example.test",)
    dsn = parse((q.data_dir / dsn_env.id).read_bytes())
    text, status, headers = dsn.get_payload()
    assert "<bob@remote.test>" in text.get_content() and "no MX host of remote.test could be reached" in text.get_content()
    assert b"Status: 4.4.7" in status.as_bytes() and b"Action: failed" in status.as_bytes()
    assert b"Message-ID: <m1@example.test>" in headers.as_bytes()
    assert fake.calls == []  # nothing was ever sent anywhere
    # The bounce has nowhere to go either: at its own max age it is dropped
    # (a null-sender message is never bounced), and the queue is empty.
    clock.advance(MAX_AGE)
    assert q.queued() == [] and list(q.data_dir.iterdir()) == [] and list(q.env_dir.iterdir()) == []
    q.stopService()


def test_no_smarthost_status_mail_is_dropped_at_max_age(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake, smarthost=False)
    enqueue(q, sender="", rcpts=("alice@example.test",))
    clock.advance(MAX_AGE)
    assert q.queued() == [] and list(q.data_dir.iterdir()) == []
    q.stopService()


def test_no_smarthost_expiry_survives_a_restart(tmp_path, clock, fake):
    first = make_queue(tmp_path, clock, fake, smarthost=False)
    queue_id = enqueue(first)
    clock.advance(MAX_AGE / 2)
    first.stopService()
    second = make_queue(tmp_path, clock, fake, smarthost=False)
    assert [e.id for e in second.queued()] == [queue_id]
    clock.advance(MAX_AGE / 2)
    assert [e.mail_from for e in second.queued()] == [""]  # only the bounce is left
    second.stopService()


EIGHT_BIT = "From: alice@example.test\nSubject: caf\u00e9\n\n\u00e9t\u00e9\n".encode()


@pytest.mark.parametrize("declared, data, expected", [
    ("8BITMIME", EIGHT_BIT, "8BITMIME"),
    (None, EIGHT_BIT, "8BITMIME"),  # undeclared 8-bit data must still be declared outbound
    ("7BIT", MESSAGE, "7BIT"),
    (None, MESSAGE, None),
])
def test_body_type_and_wire_size_are_in_the_envelope_and_sent(tmp_path, clock, fake, declared, data, expected):
    q = make_queue(tmp_path, clock, fake)
    queue_id = enqueue(q, data=data, body=declared)
    env = envelope(q, queue_id)
    assert env["body"] == expected
    assert env["size"] == len(data) + data.count(b"\n")  # CRLF on the wire
    # After a restart too: it is on disk, not only in memory.
    q.stopService()
    again = FakeSMTP(clock)
    q2 = make_queue(tmp_path, clock, again)
    clock.advance(0)
    [call] = again.calls
    assert call.kw["body"] == expected and call.kw["size"] == len(data) + data.count(b"\n")
    answer(call)
    q2.stopService()


def test_version_1_envelopes_are_still_read(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake)
    queue_id = enqueue(q)
    q.stopService()
    path = q.env_dir / f"{queue_id}.json"
    old = json.loads(path.read_bytes())
    old["version"] = 1
    del old["body"], old["size"]
    path.write_text(json.dumps(old))
    again = FakeSMTP(clock)
    q2 = make_queue(tmp_path, clock, again)
    clock.advance(0)
    [call] = again.calls
    assert call.data == MESSAGE and call.kw["size"] is None and call.kw["body"] is None
    q2.stopService()


def test_smarthost_without_8bitmime_bounces_with_5_6_3(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake)
    enqueue(q, data=EIGHT_BIT)
    clock.advance(0)
    why = "the server does not offer 8BITMIME"
    fake.calls[0].d.errback(SMTPError(why, enhanced="5.6.3", text=f"5.6.3 {why}", permanent=True,
                                      stage=smtp_client.STAGE_MAIL))
    [dsn_env] = q.queued()
    dsn = (q.data_dir / dsn_env.id).read_bytes()
    assert b"Status: 5.6.3" in dsn and b"8BITMIME" in dsn
    q.stopService()


def test_stop_waits_a_bounded_time_then_cancels_the_attempt(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake)
    queue_id = enqueue(q)
    clock.advance(0)
    [call] = fake.calls
    stopped = q.stopService()
    assert isinstance(stopped, defer.Deferred) and not stopped.called
    clock.advance(STOP_TIMEOUT - 0.1)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called and call.d.called  # the send was cancelled
    # Nothing recorded for the interrupted attempt: tried again after a restart.
    assert envelope(q, queue_id)["attempts"] == 0 and (q.data_dir / queue_id).exists()


def test_stop_with_nothing_running_returns_a_fired_deferred(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake)
    d = q.stopService()
    assert isinstance(d, defer.Deferred) and d.called


def test_commit_in_background_returns_the_id_and_logs_a_failure(tmp_path, clock, fake, monkeypatch):
    q = make_queue(tmp_path, clock, fake)
    m = q.submit("", ["alice@example.test"])
    m.write(b"Subject: status\n\nprinted\n")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    from twisted.logger import formatEvent, globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        queue_id = m.commit_in_background()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert queue_id == m.id
    assert q.queued() == [] and list(q.tmp_dir.iterdir()) == [] and list(q.data_dir.iterdir()) == []
    [line] = [formatEvent(e) for e in events if "could not be committed" in formatEvent(e)]
    assert queue_id in line and "No space left on device" in line
    q.stopService()


@pytest_twisted.inlineCallbacks
def test_commit_fsyncs_outside_the_reactor_thread(tmp_path, monkeypatch):
    """Item 8: status mail and relayed mail are committed in the durable
    pool; the reactor thread never waits for an fsync of the queue."""
    from twisted.internet import reactor

    threads_seen: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        threads_seen.append(threading.current_thread().name)
        return real_fsync(fd)

    site = make_site(tmp_path / "spool", smarthost=False)
    q = OutboundQueue(site, reactor=reactor)
    q.startService()
    monkeypatch.setattr(os, "fsync", spy)
    m = q.submit("", ["alice@example.test"])
    m.write(b"Subject: status\n\nprinted\n")
    d = m.commit()
    assert not d.called  # not done inline in the reactor thread
    queue_id = yield d
    assert (q.env_dir / f"{queue_id}.json").exists()
    assert threads_seen and threading.main_thread().name not in threads_seen
    yield q.stopService()


def test_bounce_of_8bit_mail_is_7bit_and_keeps_the_headers(tmp_path, clock, fake):
    q = make_queue(tmp_path, clock, fake)
    enqueue(q, data=EIGHT_BIT)
    clock.advance(0)
    answer(fake.calls[0], bob=550)
    [dsn_env] = q.queued()
    raw = (q.data_dir / dsn_env.id).read_bytes()
    assert raw.isascii() and dsn_env.body is None  # goes through a smarthost without 8BITMIME
    headers = parse(raw).get_payload()[2]
    assert "Subject: caf\u00e9" in headers.get_payload(decode=True).decode("utf-8")
    q.stopService()

"""The outbound queue delivering to real SMTP servers on loopback.

smtp-sink (Postfix) receives what the queue sends; its fault options model a
smarthost that says 421 or 450 and then gets better.  The real reactor runs;
retry times are shortened so that a retry comes within a second.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from phaserlink.config import Smarthost
from phaserlink.net import smtp_client
from phaserlink.smtp_relay.queue import OutboundQueue
from support.reactor_wait import until
from support.smtp_sink import SmtpSink

pytestmark = pytest.mark.peer

RETRY = 0.3


def boundary_message() -> bytes:
    """A message whose "." line starts at byte 16384 of the file (the
    client's read size), with more dot lines after it."""
    head = b"From: alice@example.test\nTo: bob@remote.test\nSubject: dots\nMessage-ID: <dots@example.test>\n\n"
    filler = b"x" * (smtp_client.CHUNK_SIZE - len(head) - 1) + b"\n"
    data = head + filler
    assert len(data) == smtp_client.CHUNK_SIZE
    return data + b".\n..\n.tail\nend\n"


def make_queue(spool: Path, port: int, tls: str = "none", ca_file=None) -> OutboundQueue:
    appliance = SimpleNamespace(
        spool=spool,
        hostname="phaserlink.test",
        status_sender="postmaster@phaserlink.test",
        smarthost=Smarthost("127.0.0.1", port, tls, False, ca_file, None, None),
        queue_retry_min=RETRY,
        queue_retry_max=RETRY,
        queue_max_age=3600.0,
    )
    q = OutboundQueue(SimpleNamespace(appliance=appliance), reactor=reactor)
    q.startService()
    return q


async def enqueue(q: OutboundQueue, data: bytes, sender="alice@example.test", rcpts=("bob@remote.test",)) -> str:
    m = q.submit(sender, list(rcpts))
    m.write(data)
    return await m.commit()  # durable in a worker thread, then the id


@pytest.fixture
def sink(tmp_path):
    s = SmtpSink(tmp_path / "sink")
    yield s
    s.stop()


@pytest.fixture
def stop_later():
    queues: list[OutboundQueue] = []
    yield queues.append
    for q in queues:
        q.stopService()


@pytest_twisted.ensureDeferred
async def test_queued_mail_arrives_intact_with_dot_at_16384(tmp_path, sink, stop_later):
    sink.start()
    q = make_queue(tmp_path / "spool", sink.port)
    stop_later(q)
    data = boundary_message()
    await enqueue(q, data, rcpts=("bob@remote.test", "carol@remote.test"))
    await until(lambda: q.queued() == [])
    [got] = sink.messages()
    assert got.raw == data  # byte for byte, after smtp-sink unstuffed it
    assert got.mail_from == "alice@example.test" and got.recipients == ["bob@remote.test", "carol@remote.test"]
    assert got.helo == "phaserlink.test"
    assert got.message["Message-ID"] == "<dots@example.test>"
    assert got.body.endswith(b"\n.\n..\n.tail\nend\n")


@pytest.mark.parametrize(
    "fault, attempts_text",
    [({"hangup_421": ["DATA"]}, "421"), ({"soft_reject": ["RCPT"]}, "450"), ({"disconnect": ["MAIL"]}, "connection")],
)
@pytest_twisted.ensureDeferred
async def test_temporary_failure_is_retried_then_delivered(tmp_path, sink, stop_later, fault, attempts_text):
    for name, value in fault.items():
        setattr(sink, name, value)
    sink.start()
    q = make_queue(tmp_path / "spool", sink.port)
    stop_later(q)
    queue_id = await enqueue(q, b"Subject: retry\n\nplease\n")
    await until(lambda: q.queued() and q.queued()[0].attempts >= 2)
    [env] = q.queued()
    assert env.id == queue_id and attempts_text in env.last_error
    assert sink.messages() == []
    sink.restart(hangup_421=(), soft_reject=(), disconnect=())
    await until(lambda: q.queued() == [])
    [got] = sink.messages()
    assert got.raw == b"Subject: retry\n\nplease\n"


@pytest_twisted.ensureDeferred
async def test_hard_reject_bounces_to_sender(tmp_path, sink, stop_later):
    """The smarthost refuses the recipient for good: the sender gets a DSN.

    smtp-sink refuses every RCPT alike, so it would refuse the bounce too
    (which, from <>, is then dropped); the bounce is routed to a second,
    accepting sink to see what the sender would receive."""
    sink.hard_reject = ["RCPT"]
    sink.start()
    inbox = SmtpSink(tmp_path / "inbox").start()
    try:
        q = make_queue(tmp_path / "spool", sink.port)
        stop_later(q)

        def route(reactor_, host, port, mail_from, *args, **kw):
            return smtp_client.send(reactor_, host, inbox.port if mail_from == "" else port, mail_from, *args, **kw)

        q.send = route
        await enqueue(q, b"From: alice@example.test\nSubject: nope\nMessage-ID: <nope@example.test>\n\nsecret body\n")
        await until(lambda: q.queued() == [] and len(inbox.messages()) == 1)
        assert sink.messages() == []
        [got] = inbox.messages()
    finally:
        inbox.stop()
    assert got.mail_from == "" and got.recipients == ["alice@example.test"]
    dsn = got.message
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    assert b"Final-Recipient: rfc822; bob@remote.test" in got.raw
    assert b"Status: 5.3.0" in got.raw  # smtp-sink's hard reply is 500 5.3.0
    assert b"Diagnostic-Code: smtp; 500 5.3.0 Error: command failed" in got.raw
    assert b"Message-ID: <nope@example.test>" in got.raw and b"secret body" not in got.raw


@pytest_twisted.ensureDeferred
async def test_bounce_of_a_bounce_is_dropped(tmp_path, sink, stop_later):
    sink.hard_reject = ["RCPT"]
    sink.start()
    q = make_queue(tmp_path / "spool", sink.port)
    stop_later(q)
    await enqueue(q, b"Subject: status\n\nyour job printed\n", sender="")
    await until(lambda: q.queued() == [])
    await task.deferLater(reactor, 2 * RETRY, lambda: None)
    assert q.queued() == [] and sink.messages() == []
    assert list(q.data_dir.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_client_send_reports_size_and_streams_a_file(tmp_path, sink):
    sink.start()
    path = tmp_path / "msg"
    path.write_bytes(boundary_message())
    result = await smtp_client.send(
        reactor, "127.0.0.1", sink.port, "a@example.test", ["b@remote.test"], str(path),
        helo="client.test", tls="opportunistic", timeout=10,
    )
    assert result.reply.code == 250 and [r.address for r in result.accepted] == ["b@remote.test"]
    [got] = sink.messages()
    assert got.raw == path.read_bytes()
    info = await smtp_client.probe(reactor, "127.0.0.1", sink.port, helo="client.test", timeout=10)
    assert info.esmtp and "PIPELINING" in info.extensions


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_temporary(tmp_path):
    from support.peers import free_port

    with pytest.raises(smtp_client.SMTPError) as caught:
        await smtp_client.send(
            reactor, "127.0.0.1", free_port(), "a@example.test", ["b@remote.test"], io.BytesIO(b"x\n"),
            helo="client.test", timeout=5,
        )
    assert caught.value.stage == "connect" and not caught.value.permanent and caught.value.code is None

"""The SMTP client and the queue against a real Postfix with STARTTLS.

One private Postfix per module (it takes ~4 s to start), with a certificate
from the session's test CA for "localhost"/127.0.0.1, a STARTTLS port and an
implicit-TLS port, delivering everything into one Maildir.
"""

from __future__ import annotations

import email
import email.policy
import io
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from phaserlink.config import Smarthost
from phaserlink.net import smtp_client
from phaserlink.smtp_relay.queue import OutboundQueue
from support.ca import TestCA
from support.peers import free_port
from support.reactor_wait import until
from support.postfix import Postfix
from support.smtp_sink import SmtpSink

pytestmark = pytest.mark.peer

SIZE_LIMIT = 100_000


@pytest.fixture(scope="module")
def postfix(tmp_path_factory, test_ca):
    cert = test_ca.issue("localhost")
    pf = Postfix(
        tmp_path_factory.mktemp("postfix"), tls=cert, smtps_port=free_port(),
        main_extra={"message_size_limit": str(SIZE_LIMIT)},
    )
    pf.start()
    yield pf
    pf.stop()


def dot_message(marker: bytes) -> bytes:
    head = b"From: alice@example.test\nTo: bob@remote.test\nSubject: " + marker + b"\n\n"
    data = head + b"y" * (smtp_client.CHUNK_SIZE - len(head) - 1) + b"\n"
    assert len(data) == smtp_client.CHUNK_SIZE
    return data + b".\n.. two\nlast\n"


def delivered(postfix: Postfix, marker: bytes) -> list[bytes]:
    return [p.read_bytes() for p in postfix.message_paths() if b"Subject: " + marker + b"\n" in p.read_bytes()]


def send(port: int, message: bytes, **kw):
    kw.setdefault("helo", "client.test")
    kw.setdefault("timeout", 10)
    return smtp_client.send(reactor, "127.0.0.1", port, "alice@example.test", ["bob@remote.test"], io.BytesIO(message), **kw)


@pytest_twisted.ensureDeferred
async def test_starttls_verified_against_the_test_ca(postfix, test_ca):
    message = dot_message(b"starttls")
    result = await send(postfix.port, message, tls="required", ca_file=test_ca.ca_path, tls_hostname="localhost")
    assert result.server.tls and result.reply.code == 250
    assert result.server.size_limit == SIZE_LIMIT
    await until(lambda: delivered(postfix, b"starttls"))
    [raw] = delivered(postfix, b"starttls")
    assert b"(using TLSv1." in raw  # Postfix's Received header
    assert raw.partition(b"\n\n")[2] == message.partition(b"\n\n")[2]


@pytest_twisted.ensureDeferred
async def test_implicit_tls(postfix, test_ca):
    message = b"Subject: implicit\n\nover smtps\n"
    result = await send(postfix.smtps_port, message, implicit_tls=True, ca_file=test_ca.ca_path, tls_hostname="localhost")
    assert result.server.tls
    await until(lambda: delivered(postfix, b"implicit"))


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate_is_refused(postfix, tmp_path):
    other = TestCA(tmp_path / "other-ca", name="Somebody Else's CA")
    with pytest.raises(smtp_client.SMTPError) as caught:
        await send(postfix.port, b"Subject: untrusted\n\nx\n", tls="opportunistic", ca_file=other.ca_path,
                   tls_hostname="localhost")
    err = caught.value
    assert err.stage == smtp_client.STAGE_STARTTLS and not err.permanent and err.code is None
    assert "TLS negotiation failed" in err.text and "certificate verify failed" in err.text
    await task.deferLater(reactor, 0.5, lambda: None)
    assert delivered(postfix, b"untrusted") == []


@pytest_twisted.ensureDeferred
async def test_wrong_hostname_is_refused(postfix, test_ca):
    with pytest.raises(smtp_client.SMTPError) as caught:
        await send(postfix.port, b"Subject: wrongname\n\nx\n", tls="required", ca_file=test_ca.ca_path,
                   tls_hostname="mail.example.test")
    assert caught.value.stage == smtp_client.STAGE_STARTTLS
    assert "mail.example.test" in caught.value.text


@pytest_twisted.ensureDeferred
async def test_size_is_declared_and_refused_at_mail(postfix, test_ca):
    big = b"Subject: big\n\n" + (b"z" * 99 + b"\n") * 2000
    with pytest.raises(smtp_client.SMTPError) as caught:
        await send(postfix.port, big, tls="required", ca_file=test_ca.ca_path, tls_hostname="localhost")
    err = caught.value
    assert (err.code, err.enhanced, err.permanent, err.stage) == (552, "5.3.4", True, "mail")
    assert "size exceeds" in err.text


@pytest_twisted.ensureDeferred
async def test_tls_required_against_a_server_without_starttls(tmp_path):
    sink = SmtpSink(tmp_path / "sink").start()
    try:
        with pytest.raises(smtp_client.SMTPError) as caught:
            await send(sink.port, b"Subject: clear\n\nx\n", tls="required")
        assert caught.value.stage == smtp_client.STAGE_STARTTLS and not caught.value.permanent
        assert sink.messages() == []
    finally:
        sink.stop()


@pytest_twisted.ensureDeferred
async def test_queue_delivers_through_starttls_smarthost(postfix, test_ca, tmp_path):
    appliance = SimpleNamespace(
        spool=tmp_path / "spool",
        hostname="phaserlink.test",
        status_sender="postmaster@phaserlink.test",
        smarthost=Smarthost("localhost", postfix.port, "required", False, test_ca.ca_path, None, None),
        queue_retry_min=0.5, queue_retry_max=0.5, queue_max_age=3600.0,
    )
    q = OutboundQueue(SimpleNamespace(appliance=appliance), reactor=reactor)
    q.startService()
    try:
        message = dot_message(b"queued-tls")
        m = q.submit("alice@example.test", ["bob@remote.test"])
        m.write(message)
        m.commit()
        await until(lambda: q.queued() == [])
        await until(lambda: delivered(postfix, b"queued-tls"))
    finally:
        stopping = q.stopService()
        if stopping is not None:
            await stopping
    [raw] = delivered(postfix, b"queued-tls")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Return-Path"] == "<alice@example.test>"
    assert "using TLS" in " ".join(str(h) for h in parsed.get_all("Received")) or b"using TLSv1" in raw
    assert raw.partition(b"\n\n")[2] == message.partition(b"\n\n")[2]

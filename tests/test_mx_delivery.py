"""Outbound mail without a smarthost: delivery by MX records, on real peers.

dnsmasq serves MX and A records for .test domains; smtp-sink instances on
distinct loopback addresses (127.0.0.2 ...) and one shared port are the MX
hosts, so ``mx_port`` is that port.  The real reactor runs the queue.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor

from phaserlink.smtp_relay import mx
from phaserlink.smtp_relay.queue import OutboundQueue
from support.dns_server import DnsServer
from support.peers import free_port, wait_for_port
from support.smtp_sink import SmtpSink
from test_queue_delivery import enqueue, until

pytestmark = pytest.mark.peer

RETRY = 30.0  # no retry inside a test: what arrives, arrived in the first attempt


class LoopbackSink(SmtpSink):
    """smtp-sink on another loopback address."""

    def __init__(self, directory: Path, address: str, port: int, **faults):
        super().__init__(directory, port=port, **faults)
        self.listen = address

    @property
    def address(self):
        return (self.listen, self.port)

    def command_line(self) -> list[str]:
        args = super().command_line()
        args[-2] = f"{self.listen}:{self.port}"
        return args

    def start(self) -> "LoopbackSink":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command_line(), stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, host=self.listen, timeout=10)
        return self


@pytest.fixture
def net(tmp_path):
    """big.test: mx1 (127.0.0.2) says 450 to RCPT, mx2 (127.0.0.3) is down,
    mx3 (127.0.0.4) takes mail.  plain.test: no MX, an A record (implicit
    MX) at 127.0.0.4.  bad.test: its one MX (127.0.0.5) says 5xx to RCPT."""
    port = free_port()
    dns = DnsServer(tmp_path / "dns")
    dns.mx("big.test", "mx1.big.test", 10).mx("big.test", "mx2.big.test", 20).mx("big.test", "mx3.big.test", 30)
    dns.host("mx1.big.test", "127.0.0.2").host("mx2.big.test", "127.0.0.3").host("mx3.big.test", "127.0.0.4")
    dns.host("plain.test", "127.0.0.4")
    dns.mx("bad.test", "mx.bad.test", 10).host("mx.bad.test", "127.0.0.5")
    sinks = SimpleNamespace(
        refusing=LoopbackSink(tmp_path / "mx1", "127.0.0.2", port, soft_reject=["RCPT"]),
        good=LoopbackSink(tmp_path / "mx3", "127.0.0.4", port),
        bad=LoopbackSink(tmp_path / "bad", "127.0.0.5", port, hard_reject=["RCPT"]),
    )
    dns.start()
    for s in vars(sinks).values():
        s.start()
    yield SimpleNamespace(dns=dns, port=port, **vars(sinks))
    for s in vars(sinks).values():
        s.stop()
    dns.stop()


def make_queue(spool: Path, net, **extra) -> OutboundQueue:
    appliance = SimpleNamespace(
        spool=spool, hostname="phaserlink.test", status_sender="postmaster@big.test", smarthost=None,
        queue_retry_min=RETRY, queue_retry_max=RETRY, queue_max_age=3600.0,
        dns_servers=(net.dns.server,), mx_port=net.port, outbound_tls="may", **extra,
    )
    q = OutboundQueue(SimpleNamespace(appliance=appliance), reactor=reactor)
    q.startService()
    return q


@pytest.fixture
def queues():
    made: list[OutboundQueue] = []
    yield made
    for q in made:
        q.stopService()


@pytest_twisted.ensureDeferred
async def test_mail_arrives_by_the_third_mx_when_the_first_refuses_and_the_second_is_down(tmp_path, net, queues):
    q = make_queue(tmp_path / "spool", net)
    queues.append(q)
    await enqueue(q, b"Subject: by mx\n\nhello\n", rcpts=("bob@big.test",))
    await until(lambda: q.queued() == [])
    [got] = net.good.messages()
    assert got.raw == b"Subject: by mx\n\nhello\n" and got.recipients == ["bob@big.test"]
    assert net.refusing.messages() == []  # it said 450 to RCPT


@pytest_twisted.ensureDeferred
async def test_no_mx_means_the_domains_own_address(tmp_path, net, queues):
    q = make_queue(tmp_path / "spool", net)
    queues.append(q)
    await enqueue(q, b"Subject: implicit\n\nmx\n", rcpts=("carol@plain.test",))
    await until(lambda: q.queued() == [])
    assert [m.recipients for m in net.good.messages()] == [["carol@plain.test"]]


@pytest_twisted.ensureDeferred
async def test_all_hosts_failing_leaves_the_mail_queued_for_the_back_off(tmp_path, net, queues):
    net.good.stop()
    q = make_queue(tmp_path / "spool", net)
    queues.append(q)
    await enqueue(q, b"Subject: later\n\nx\n", rcpts=("bob@big.test",))
    await until(lambda: q.queued() and q.queued()[0].attempts == 1)
    [env] = q.queued()
    assert env.recipients == ("bob@big.test",) and env.next_attempt > 0
    assert "cannot connect" in env.last_error or "refused" in env.last_error.lower()


@pytest_twisted.ensureDeferred
async def test_5xx_bounces_to_the_sender_by_mx_and_never_for_the_null_sender(tmp_path, net, queues):
    q = make_queue(tmp_path / "spool", net)
    queues.append(q)
    await enqueue(q, b"Subject: to bad\nMessage-ID: <bad1@big.test>\n\nx\n", sender="alice@big.test",
                  rcpts=("nobody@bad.test",))
    await enqueue(q, b"Subject: status to bad\n\nx\n", sender="", rcpts=("nobody@bad.test",))
    await until(lambda: q.queued() == [] and len(net.good.messages()) >= 1)
    [dsn] = net.good.messages()  # one bounce: none for the null-sender message
    assert dsn.mail_from == "" and dsn.recipients == ["alice@big.test"]
    text = dsn.raw.decode()
    assert "Status: 5." in text and "Remote-MTA: dns; mx.bad.test" in text and "nobody@bad.test" in text
    assert net.bad.messages() == []


@pytest_twisted.ensureDeferred
async def test_unknown_domain_bounces_with_5_1_2(tmp_path, net, queues):
    q = make_queue(tmp_path / "spool", net)
    queues.append(q)
    await enqueue(q, b"Subject: nowhere\n\nx\n", sender="alice@big.test", rcpts=("x@nosuch.test",))
    await until(lambda: q.queued() == [] and net.good.messages())
    [dsn] = net.good.messages()
    assert "Status: 5.1.2" in dsn.raw.decode() and "nosuch.test does not exist" in dsn.raw.decode()


@pytest_twisted.ensureDeferred
async def test_many_messages_to_one_domain_share_few_connections(tmp_path, net, queues):
    q = make_queue(tmp_path / "spool", net)
    queues.append(q)
    count = 8
    for i in range(count):
        await enqueue(q, f"Subject: n{i}\n\n{i}\n".encode(), rcpts=(f"u{i}@plain.test",))
    await until(lambda: q.queued() == [])
    assert sorted(m.recipients[0] for m in net.good.messages()) == sorted(f"u{i}@plain.test" for i in range(count))
    assert q.mx.connections_opened <= mx.MAX_SESSIONS_PER_DOMAIN  # the rest went over them after RSET


@pytest_twisted.ensureDeferred
async def test_one_message_to_two_domains_and_8bitmime_declared(tmp_path, net, queues):
    q = make_queue(tmp_path / "spool", net)
    queues.append(q)
    data = "Subject: caf\u00e9\n\n\u00e9t\u00e9\n".encode()
    await enqueue(q, data, rcpts=("bob@big.test", "carol@plain.test"))
    await until(lambda: q.queued() == [])
    got = net.good.messages()
    assert sorted(m.recipients[0] for m in got) == ["bob@big.test", "carol@plain.test"]
    assert [(m.raw, m.mail_params) for m in got] == [(data, "BODY=8BITMIME")] * 2

"""STARTTLS to MX hosts: ``may`` falls back to plaintext after a failed
handshake and does not check certificates; ``verify`` delivers only over
TLS with a certificate valid for the MX host name.

The MX host is a small in-process ESMTP server on 127.0.0.6 (smtp-sink has
no STARTTLS) that can break the handshake on purpose; dnsmasq serves its
MX and A records.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver

from phaserlink.config import TLSFiles
from phaserlink.tls import server_options
from support.dns_server import DnsServer
from support.peers import free_port
from test_mx_delivery import make_queue
from test_queue_delivery import enqueue, until

pytestmark = pytest.mark.peer

ADDRESS = "127.0.0.6"


class MiniMX(LineReceiver):
    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.tls = False
        self.lines: list[bytes] | None = None
        self.sendLine(b"220 mx.tls.test ESMTP")

    def lineReceived(self, line: bytes) -> None:
        if self.lines is not None:
            if line == b".":
                self.factory.messages.append((self.tls, b"\n".join(self.lines) + b"\n"))
                self.lines = None
                self.sendLine(b"250 2.0.0 queued")
            else:
                self.lines.append(line[1:] if line.startswith(b".") else line)
            return
        verb = line.split(b" ")[0].upper()
        if verb == b"EHLO":
            offer = [b"8BITMIME"] + ([b"STARTTLS"] if self.factory.offer and not self.tls else [])
            self.sendLine(b"250-mx.tls.test")
            for i, ext in enumerate(offer):
                self.sendLine((b"250 " if i == len(offer) - 1 else b"250-") + ext)
        elif verb == b"STARTTLS":
            self.sendLine(b"220 2.0.0 go ahead")
            if self.factory.options is None:
                self.transport.abortConnection()  # the handshake cannot succeed
            else:
                self.transport.startTLS(self.factory.options)
                self.tls = True
        elif verb == b"DATA":
            self.lines = []
            self.sendLine(b"354 go on")
        elif verb == b"QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"250 ok")


class MiniMXFactory(protocol.ServerFactory):
    protocol = MiniMX

    def __init__(self, options, offer: bool = True) -> None:
        self.options = options
        self.offer = offer
        self.connections = 0
        self.messages: list[tuple[bool, bytes]] = []


@pytest.fixture
def mx_net(tmp_path):
    port = free_port()
    dns = DnsServer(tmp_path / "dns")
    dns.mx("tls.test", "mx.tls.test", 10).host("mx.tls.test", ADDRESS).start()
    listening = []

    def serve(options, offer: bool = True) -> MiniMXFactory:
        factory = MiniMXFactory(options, offer)
        listening.append(reactor.listenTCP(port, factory, interface=ADDRESS))
        return factory

    yield SimpleNamespace(dns=dns, port=port, serve=serve)
    for p in listening:
        p.stopListening()
    dns.stop()


def tls_options(test_ca, hostname: str):
    issued = test_ca.issue(hostname=hostname, ips=(ADDRESS,))
    return server_options(TLSFiles(issued.certificate, issued.key))


@pytest.fixture
def queues():
    made = []
    yield made
    for q in made:
        q.stopService()


@pytest_twisted.ensureDeferred
async def test_may_falls_back_to_a_new_plaintext_connection_after_a_failed_handshake(tmp_path, mx_net, queues):
    server = mx_net.serve(None)
    q = make_queue(tmp_path / "spool", mx_net)
    queues.append(q)
    await enqueue(q, b"Subject: fallback\n\nstill arrives\n", rcpts=("bob@tls.test",))
    await until(lambda: q.queued() == [])
    assert server.messages == [(False, b"Subject: fallback\n\nstill arrives\n")]
    assert server.connections == 2


@pytest_twisted.ensureDeferred
async def test_may_encrypts_without_checking_the_certificate(tmp_path, mx_net, queues, test_ca):
    server = mx_net.serve(tls_options(test_ca, "some-other-name.test"))  # and a CA nobody trusts
    q = make_queue(tmp_path / "spool", mx_net)
    queues.append(q)
    await enqueue(q, b"Subject: tls\n\nx\n", rcpts=("bob@tls.test",))
    await until(lambda: q.queued() == [])
    assert [tls for tls, _ in server.messages] == [True] and server.connections == 1


@pytest_twisted.ensureDeferred
async def test_verify_delivers_over_tls_with_a_valid_certificate(tmp_path, mx_net, queues, test_ca):
    server = mx_net.serve(tls_options(test_ca, "mx.tls.test"))
    q = make_queue(tmp_path / "spool", mx_net, outbound_tls_ca=test_ca.issue().ca)
    q.site.appliance.outbound_tls = "verify"
    queues.append(q)
    await enqueue(q, b"Subject: verified\n\nx\n", rcpts=("bob@tls.test",))
    await until(lambda: q.queued() == [])
    assert [tls for tls, _ in server.messages] == [True]


@pytest.mark.parametrize("certificate_for, offer", [("wrong.tls.test", True), (None, False)])
@pytest_twisted.ensureDeferred
async def test_verify_never_sends_in_clear_or_to_the_wrong_certificate(tmp_path, mx_net, queues, test_ca,
                                                                        certificate_for, offer):
    server = mx_net.serve(tls_options(test_ca, certificate_for) if certificate_for else None, offer)
    q = make_queue(tmp_path / "spool", mx_net, outbound_tls_ca=test_ca.issue().ca)
    q.site.appliance.outbound_tls = "verify"
    queues.append(q)
    await enqueue(q, b"Subject: must not leak\n\nx\n", rcpts=("bob@tls.test",))
    await until(lambda: q.queued() and q.queued()[0].attempts == 1)
    assert server.messages == []  # not in clear, not to a host that cannot prove its name
    assert "TLS" in q.queued()[0].last_error or "STARTTLS" in q.queued()[0].last_error

"""Driving the SMTP server on fake transports, with real or failing stores.

A :class:`Session` is one connection to ``phaserlink.smtp_relay.server`` over
a ``StringTransport`` and a ``MemoryReactorClock``: ``send`` bytes, get back
exactly the reply bytes they caused.  The site is a real site.ini parsed by
``phaserlink.config``, the store a real Maildir under ``tmp_path``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer

from phaserlink import config
from phaserlink.pop3_store.maildir import Delivery, MaildirStore
from phaserlink.smtp_relay.interfaces import IOutboundQueue, IQueuedMessage
from phaserlink.smtp_relay.server import build_factory

HOST = "phaserlink.test"

PRINTERS = """\
[printer:demo]
sender_auth = none
addresses = demo@phaserlink.test, Demo2@phaserlink.test
allowed_senders = *

[printer:strict]
sender_auth = none
addresses = strict@phaserlink.test
output = socket://127.0.0.1:9
allowed_senders = *@good.example, boss@example.org

[printer:open]
sender_auth = none
addresses = open@phaserlink.test
allowed_senders = *

[group:all]
address = all@phaserlink.test
members = strict, open

[group:stricts]
address = stricts@phaserlink.test
members = strict
"""


def make_site(directory: Path, appliance: str = "", sections: str = PRINTERS) -> config.SiteConfig:
    directory.mkdir(parents=True, exist_ok=True)
    text = (
        f"[appliance]\nhostname = {HOST}\nspool = {directory / 'var'}\n"
        + textwrap.dedent(appliance)
        + "\n"
        + textwrap.dedent(sections)
    )
    path = directory / "site.ini"
    path.write_text(text)
    return config.load(path)


def mailbox_files(site: config.SiteConfig, name: str) -> list[bytes]:
    """Contents of ``new/`` of one mailbox, oldest name first."""
    new = site.appliance.spool / "mail" / name / "new"
    if not new.exists():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir())]


def strip_received(stored: bytes) -> bytes:
    """Drop our own Return-Path: (mailbox copies), Authentication-Results:
    and Received: fields (first line plus folded lines)."""
    if stored.startswith(b"Return-Path: <"):
        stored = stored.partition(b"\n")[2]
    stored = strip_results(stored)
    assert stored.startswith(b"Received: from "), stored[:200]
    lines = stored.split(b"\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\n".join(lines[i:])


def strip_results(stored: bytes) -> bytes:
    """Drop the Authentication-Results: field the appliance puts first
    (docs/trust.md), if there is one."""
    if not stored.startswith(f"Authentication-Results: {HOST};".encode()):
        return stored
    lines = stored.split(b"\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\n".join(lines[i:])


@implementer(IQueuedMessage)
class QueuedMessage:
    def __init__(self, queue: "FakeQueue", mail_from: str, recipients: list[str], body=None):
        self.queue, self.mail_from, self.recipients = queue, mail_from, recipients
        self.body = body
        self.data = b""
        self.state = "open"

    def write(self, data: bytes) -> None:
        self.data += data

    def commit(self):
        if self.queue.fail_commit:
            return defer.fail(OSError(28, "No space left on device"))
        self.state = "committed"
        self.queue.committed.append(self)
        return defer.succeed(f"Q{len(self.queue.committed)}")

    def commit_in_background(self) -> str:
        self.commit()
        return f"Q{len(self.queue.committed)}"

    def abort(self) -> None:
        self.state = "aborted"



@implementer(IOutboundQueue)
class FakeQueue:
    """Records what would be relayed."""

    def __init__(self) -> None:
        self.fail_commit = False
        self.submitted: list[QueuedMessage] = []
        self.committed: list[QueuedMessage] = []

    def submit(self, mail_from: str, recipients: list[str], body=None) -> QueuedMessage:
        m = QueuedMessage(self, mail_from, recipients, body)
        self.submitted.append(m)
        return m


class FailingDelivery(Delivery):
    """A Delivery whose disk fills up at write or at commit."""

    fail_at = "commit"
    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.fail_at == "write" and self.writes > 2:  # Return-Path: and Received: pass
            raise OSError(28, "No space left on device")
        super().write(data)

    def commit(self):
        if self.fail_at == "commit":
            self.abort()
            raise OSError(5, "Input/output error")
        return super().commit()


class FailingStore(MaildirStore):
    """A MaildirStore whose deliveries fail where ``fail_at`` says."""

    fail_at = "commit"  # or "write" or "open"

    def deliver(self, names):
        if self.fail_at == "open":
            raise OSError(24, "Too many open files")
        unique = list(dict.fromkeys(names))
        d = FailingDelivery(self, [self.boxes[n] for n in unique])
        d.fail_at = self.fail_at
        return d


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS (no real handshake)."""

    tls_options = None

    def startTLS(self, options) -> None:
        self.tls_options = options


class Session:
    """One client connection to a server factory built for *site*."""

    def __init__(self, site, store=None, queue=None, peer: str = "127.0.0.1", factory=None,
                 reactor=None, transport=None):
        self.site = site
        self.reactor = reactor or MemoryReactorClock()
        if store is None:
            store = MaildirStore(site.appliance.spool / "mail", list(site.printers))
        self.store = store
        self.queue = queue if queue is not None else FakeQueue()
        self.factory = factory or build_factory(site, store, self.queue, reactor=self.reactor)
        self.transport = transport or TLSStringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        self.proto = self.factory.buildProtocol(self.transport.getPeer())
        self.proto.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, data: bytes | str) -> bytes:
        if isinstance(data, str):
            data = data.encode()
        self.proto.dataReceived(data)
        return self.take()

    def cmd(self, line: str) -> bytes:
        return self.send(line + "\r\n")

    def ehlo(self, name: str = "client.example") -> bytes:
        reply = self.cmd(f"EHLO {name}")
        assert reply.startswith(b"250-"), reply
        return reply

    def envelope(self, sender: str = "a@good.example", *rcpts: str) -> None:
        self.ehlo()
        assert self.cmd(f"MAIL FROM:<{sender}>").startswith(b"250 "), sender
        for rcpt in rcpts or ("demo@phaserlink.test",):
            reply = self.cmd(f"RCPT TO:<{rcpt}>")
            assert reply.startswith(b"250 "), reply

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

"""Helpers for POP3 store tests: a small site, a store, and a scripted session
on a fake transport and clock."""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from phaserlink import config
from phaserlink.pop3_store.maildir import MaildirStore
from phaserlink.pop3_store.server import POP3Factory, build_factory
from support.appliance import password_hash

APOP_SECRET = b"tanstaaf-shared-secret"


def make_site(directory: Path, tls=None, extra: str = "") -> config.SiteConfig:
    """A site with printers ``pull`` (password "pull", an APOP secret),
    ``other`` (password "other", no APOP secret) and ``local`` (printed by
    the appliance itself, password "local" and the APOP secret: no login)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "apop.secret"
    secret.write_bytes(APOP_SECRET + b"\n")
    tls_lines = ""
    if tls is not None:
        tls_lines = f"tls_certificate = {tls.certificate}\ntls_key = {tls.key}\n"
    text = textwrap.dedent(
        f"""\
        [appliance]
        hostname = phaserlink.test
        spool = {directory / 'var'}
        smtp_listen = tcp:0:interface=127.0.0.1
        pop3_listen = tcp:0:interface=127.0.0.1
        pop3_timeout = 10m
        """
    ) + tls_lines + extra + textwrap.dedent(
        f"""
        [printer:pull]
        sender_auth = none
        output = pull
        allowed_senders = *
        pop3_password = {password_hash("pull")}
        pop3_apop_secret_file = {secret}

        [printer:other]
        sender_auth = none
        output = pull
        allowed_senders = *
        pop3_password = {password_hash("other")}

        [printer:local]
        sender_auth = none
        output = file:{directory / 'printed'}
        allowed_senders = *
        pop3_password = {password_hash("local")}
        pop3_apop_secret_file = {secret}
        """
    )
    path = directory / "site.ini"
    path.write_text(text)
    return config.load(path)


def make_store(site: config.SiteConfig) -> MaildirStore:
    return MaildirStore(site.appliance.spool / "mail", list(site.printers))


def deliver(store: MaildirStore, name: str, data: bytes) -> None:
    delivery = store.deliver([name])
    delivery.write(data)
    delivery.commit()


class FakeTLSTransport(StringTransport):
    """A StringTransport that records STLS instead of doing a handshake."""

    tls_options = None

    def startTLS(self, options):
        self.tls_options = options


class Session:
    """One scripted POP3 connection: ``send`` lines, ``take`` the replies."""

    def __init__(self, factory: POP3Factory, peer: str = "127.0.0.1"):
        self.factory = factory
        self.clock: MemoryReactorClock = factory.reactor
        self.transport = FakeTLSTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.greeting = self.take()

    def send(self, data: bytes) -> None:
        """Deliver *data* and run everything due now (streaming steps)."""
        self.protocol.dataReceived(data)
        self.clock.advance(0)

    def take(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.take()

    def login(self, user: bytes = b"pull", password: bytes = b"pull") -> bytes:
        assert self.command(b"USER " + user).startswith(b"+OK")
        return self.command(b"PASS " + password)

    def drop(self) -> None:
        """The client vanishes (no QUIT)."""
        self.transport.loseConnection()
        self.protocol.connectionLost(None)


def factory_for(site: config.SiteConfig, store: MaildirStore) -> POP3Factory:
    return build_factory(site, store, reactor=MemoryReactorClock())

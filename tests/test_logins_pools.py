"""Which thread pool does which work, with the real reactor: PBKDF2 in
``phaserlink-cpu``, the fsyncs of a commit or a POP3 deletion in
``phaserlink-durable`` (docs/threads.md), never the reactor's shared pool."""

from __future__ import annotations

import base64
import hashlib
import os
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from support.appliance import password_hash
from support.ca import TestCA
from support.smtp import PRINTERS, Session, make_site


@pytest.fixture
def seen(monkeypatch):
    """Thread names PBKDF2 and fsync ran in: {"pbkdf2": [...], "fsync": [...]}."""
    names: dict[str, list[str]] = {"pbkdf2": [], "fsync": []}
    real_pbkdf2, real_fsync = hashlib.pbkdf2_hmac, os.fsync

    def pbkdf2(*args):
        names["pbkdf2"].append(threading.current_thread().name)
        return real_pbkdf2(*args)

    def fsync(fd):
        names["fsync"].append(threading.current_thread().name)
        return real_fsync(fd)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", pbkdf2)
    monkeypatch.setattr(os, "fsync", fsync)
    return names


@defer.inlineCallbacks
def until(predicate, what: str, timeout: float = 10.0):
    from twisted.internet import reactor

    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def pool_of(name: str) -> str:
    assert "phaserlink-" in name, name
    return name.split("phaserlink-")[1].split("-")[0]


@pytest_twisted.inlineCallbacks
def test_smtp_auth_runs_pbkdf2_in_cpu_pool_and_commit_fsyncs_in_durable_pool(tmp_path, seen):
    from twisted.internet import reactor

    cert = TestCA(tmp_path / "ca").issue()
    users = f"\n[user:alice]\npassword = {password_hash('wonderland')}\n"
    site = make_site(tmp_path / "site", f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\n",
                     PRINTERS + users)
    s = Session(site, reactor=reactor)
    seen["pbkdf2"].clear()  # making the test's hash ran here
    try:
        s.ehlo()
        s.cmd("STARTTLS")
        s.ehlo()
        good = base64.b64encode(b"\0alice\0wonderland").decode()
        replies = [s.cmd(f"AUTH PLAIN {good}")]
        yield until(lambda: replies.append(s.take()) or b"235" in b"".join(replies), "the 235")
        assert {pool_of(n) for n in seen["pbkdf2"]} == {"cpu"}
        s.cmd("MAIL FROM:<alice@x.example>")
        s.cmd("RCPT TO:<demo@phaserlink.test>")
        s.cmd("DATA")
        replies = [s.send(b"Subject: t\r\n\r\nbody\r\n.\r\n")]
        yield until(lambda: replies.append(s.take()) or b"250 2.0.0 Ok: queued" in b"".join(replies), "the 250")
        assert seen["fsync"] and {pool_of(n) for n in seen["fsync"]} == {"durable"}
    finally:
        s.proto.connectionLost(None)


@pytest_twisted.inlineCallbacks
def test_pop3_pbkdf2_in_cpu_pool_and_quit_deletion_in_durable_pool(tmp_path, seen):
    from twisted.internet import reactor

    from phaserlink.pop3_store.server import build_factory
    from support.pop3 import deliver, make_site as pop3_site, make_store

    site = pop3_site(tmp_path / "site")
    store = make_store(site)
    deliver(store, "pull", b"Subject: one\n\nbody\n")
    seen["fsync"].clear()  # the delivery above ran in this thread
    seen["pbkdf2"].clear()  # and so did making the test's hashes
    factory = build_factory(site, store, reactor=reactor)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    try:
        protocol.dataReceived(b"USER pull\r\nPASS pull\r\n")
        yield until(lambda: b"+OK mailbox pull" in transport.value(), "the login")
        assert {pool_of(n) for n in seen["pbkdf2"]} == {"cpu"}
        protocol.dataReceived(b"DELE 1\r\nQUIT\r\n")
        yield until(lambda: b"1 messages deleted" in transport.value(), "the deletion")
        assert store.mailbox("pull").messages() == []
        assert seen["fsync"] and {pool_of(n) for n in seen["fsync"]} == {"durable"}
    finally:
        protocol.connectionLost(None)

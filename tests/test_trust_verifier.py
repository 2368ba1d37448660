"""Where verification runs (docs/trust.md, trust/verifier.py): a worker
process spawned by the real reactor, given the stored file's path, against a
real DNS server (dnsmasq).  What is checked is what a site would see: the
stored message stamped with the same Authentication-Results as the in-process
lookup pool writes, a worker that dies answered with a temporary error (the
SMTP session's 451) and replaced for the next message, and a DKIM key that
changes in DNS used at once, although parsed keys are kept."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import dkim
import pytest
import pytest_twisted
from twisted.internet import defer, task

from phaserlink.trust import verify as V
from phaserlink.trust.dns import Resolver
from phaserlink.trust.verifier import ProcessVerifier, ThreadVerifier, VerifierError
from support.dnsmasq import DnsServer, dkim_key

OURS = b"Return-Path: <bounce@elsewhere.test>\nReceived: from client.test ([127.0.0.1])\n\tby phaserlink.test; x\n"
CHECKS = V.Checks(dkim=True, dmarc=True)


def signed(key, subject: str = "job") -> bytes:
    msg = (f"From: Alice <alice@good.test>\r\nTo: lp@phaserlink.test\r\nSubject: {subject}\r\n\r\n"
           "%!PS\r\nshowpage\r\n").encode()
    sig = dkim.sign(msg, b"sel", b"good.test", key.read_bytes(), include_headers=[b"from", b"subject"],
                    canonicalize=(b"relaxed", b"relaxed"))
    return OURS + (sig + msg).replace(b"\r\n", b"\n")


@pytest.fixture
def dns(tmp_path):
    key, txt = dkim_key(tmp_path, "good")
    server = DnsServer(tmp_path / "dns")
    server.add_txt("sel._domainkey.good.test", txt)
    server.add_txt("good.test", "v=spf1 -all")
    server.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    server.start()
    server.key = key
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_the_worker_stamps_the_stored_file_as_the_lookup_pool_does(tmp_path, dns):
    from twisted.internet import reactor

    workers = ProcessVerifier(reactor, [dns.server], processes=1)
    threads = ThreadVerifier(reactor, Resolver([dns.server]))
    try:
        data = signed(dns.key)
        results = []
        for name, verifier in (("worker", workers), ("threads", threads)):
            path = tmp_path / name
            path.write_bytes(data)
            found = yield verifier.examine(path, len(OURS), None, CHECKS, frozenset(), "phaserlink.test",
                                           ("127.0.0.1", "alice@good.test", "client.test"))
            assert found.size == path.stat().st_size
            results.append((found.evidence, path.read_bytes()))
        (evidence, stamped), other = results
        assert (evidence, stamped) == other
        assert evidence.dmarc.result == "pass" and [r.result for r in evidence.dkim] == ["pass"]
        assert evidence.spf.result == "fail"  # checked in the same trip (good.test: v=spf1 -all)
        assert stamped.startswith(b"Return-Path: <bounce@elsewhere.test>\nAuthentication-Results: phaserlink.test;\n")
        assert b"dkim=pass header.d=good.test" in stamped and b"dmarc=pass header.from=good.test" in stamped
        assert stamped.endswith(data[len(OURS):])  # the sender's message, byte for byte
    finally:
        yield workers.stop()


@pytest_twisted.inlineCallbacks
def test_a_dead_worker_is_a_temporary_error_and_is_replaced(tmp_path, dns):
    """While DNS does not answer, the worker waits (seconds); killed then,
    its request fails at once (the session answers 451, the client retries)
    and the next message gets a new worker."""
    from twisted.internet import reactor

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes queries, never answers
    silent.bind(("127.0.0.1", 0))
    dead_dns = ProcessVerifier(reactor, [silent.getsockname()], processes=1)
    try:
        path = tmp_path / "m"
        path.write_bytes(signed(dns.key))
        yield task.deferLater(reactor, 0.1, lambda: None)
        first = dead_dns.workers[0]
        pending = dead_dns.examine(path, len(OURS), None, CHECKS, frozenset(), "phaserlink.test")
        yield task.deferLater(reactor, 0.5, lambda: None)
        assert not pending.called  # waiting for DNS, in the worker
        started = time.monotonic()
        os.kill(first.transport.pid, signal.SIGKILL)
        with pytest.raises(VerifierError, match="ended"):
            yield pending
        assert time.monotonic() - started < 2
        again = dead_dns.spf("127.0.0.1", "", "client.test")  # SPF of the HELO name: asks the silent DNS
        result = yield defer.DeferredList([again], consumeErrors=True)
        assert dead_dns.workers[0] is not first and dead_dns.workers[0].alive
        assert result[0][0]  # answered (a temperror result: DNS is still silent), not failed
        assert result[0][1].result == V.TEMPERROR
    finally:
        silent.close()
        yield dead_dns.stop()


def test_a_key_rotated_under_the_same_selector_is_used_at_once(tmp_path, monkeypatch):
    """Parsed keys are kept by their record's text: a second message with the
    same key parses nothing; a new key published under the same selector
    (answers with TTL 0 here) verifies the next message, and the old one's
    signature no longer does."""
    parsed = []
    real = V._evaluate_pk

    def counting(name, s):
        parsed.append(s)
        return real(name, s)

    monkeypatch.setattr(V, "_evaluate_pk", counting)
    monkeypatch.setattr(V, "_parsed_keys", {})
    old_key, old_txt = dkim_key(tmp_path, "old")
    new_key, new_txt = dkim_key(tmp_path, "new")
    server = DnsServer(tmp_path / "dns")
    server.add_txt("sel._domainkey.good.test", old_txt)
    server.start()
    try:
        resolver = Resolver([server.server])

        def verify(key) -> str:
            wire = signed(key)[len(OURS):].replace(b"\n", b"\r\n")
            return V.check_dkim(resolver, wire)[0].result

        assert verify(old_key) == "pass" and verify(old_key) == "pass"
        assert len(parsed) == 1
        server.stop()
        server.records["sel._domainkey.good.test"] = [new_txt]
        server.start()
        assert verify(new_key) == "pass"
        assert verify(old_key) == "fail"
        assert len(parsed) == 2
    finally:
        server.stop()


@pytest_twisted.inlineCallbacks
def test_a_worker_that_cannot_start_is_a_temporary_error_not_a_process_per_message(tmp_path, dns):
    """A broken install (the worker exits at once): each message gets the
    451 at once, and the appliance does not start a process per message."""
    from twisted.internet import reactor

    class Broken(ProcessVerifier):
        started = 0

        def command(self):
            Broken.started += 1
            return [sys.executable, "-c", "import sys; sys.exit(3)"]

    verifier = Broken(reactor, [dns.server], processes=1)
    try:
        path = tmp_path / "m"
        path.write_bytes(signed(dns.key))
        for _ in range(5):
            with pytest.raises(VerifierError):
                yield verifier.examine(path, len(OURS), None, CHECKS, frozenset(), "phaserlink.test")
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert Broken.started <= 2
    finally:
        yield verifier.stop()

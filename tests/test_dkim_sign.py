"""DKIM on the appliance's own mail: signed as queued, valid at the receiver.

The receiving end checks with dkimpy's verifier, the public key fetched from
a real DNS server (dnsmasq) by dnspython, not from our code; the key comes
from ``phaserlink-dkim-keygen``, whose printed TXT record is what dnsmasq
serves.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import dkim
import dns.resolver
import pytest
import pytest_twisted
from twisted.internet import task

from phaserlink import config, dkim_keygen
from phaserlink.smtp_relay.queue import OutboundQueue
from support.dns_server import DnsServer
from test_config import error_of, write
from test_mx_delivery import LoopbackSink, make_queue as make_mx_queue
from test_queue_delivery import enqueue, until
from support.peers import free_port

STATUS = (b"From: PhaserLink <postmaster@big.test>\nTo: alice@big.test\nSubject: job 7 printed\n"
          b"Date: Wed, 02 Dec 2026 00:00:00 +0000\nMessage-ID: <s7@big.test>\n\nJob 7 printed: 2 pages.\n")


def keygen(tmp_path: Path, capsys, selector="pl1", domain="big.test") -> tuple[Path, str]:
    key = tmp_path / "dkim.pem"
    assert dkim_keygen.main(["--selector", selector, "--domain", domain, str(key)]) == 0
    out = capsys.readouterr().out
    [zone] = [line for line in out.splitlines() if "IN TXT" in line]
    assert zone.startswith(f"{selector}._domainkey.{domain}. IN TXT")
    txt = "".join(re.findall(r'"([^"]*)"', zone))
    assert (key.stat().st_mode & 0o777) == 0o600
    return key, txt


def verify_with(txt: str, message: bytes) -> bool:
    def dnsfunc(name, timeout=5):
        assert name == b"pl1._domainkey.big.test."
        return txt.encode()

    return dkim.verify(message.replace(b"\n", b"\r\n"), dnsfunc=dnsfunc)


def signing_queue(tmp_path, key, clock):
    appliance = SimpleNamespace(
        spool=tmp_path / "spool", hostname="phaserlink.test", status_sender="postmaster@big.test",
        smarthost=config.Smarthost("smarthost.test", 25, "none", False, None, None, None),
        queue_retry_min=60.0, queue_retry_max=60.0, queue_max_age=3600.0,
        dkim_key=key, dkim_selector="pl1", dkim_domain="big.test",
    )
    return OutboundQueue(SimpleNamespace(appliance=appliance), reactor=clock)


def committed(q, sender, data):
    m = q.submit(sender, ["alice@big.test"])
    m.write(data)
    out = []
    m.commit().addBoth(out.append)
    return out[0]


def test_status_mail_is_signed_when_queued_and_relayed_mail_is_not(tmp_path, capsys):
    key, txt = keygen(tmp_path, capsys)
    q = signing_queue(tmp_path, key, task.Clock())  # not started: nothing is sent
    status_id = committed(q, "", STATUS)
    relayed_id = committed(q, "bob@client.test", STATUS)
    signed = q.data_path(status_id).read_bytes()
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(STATUS)
    assert b"c=relaxed/relaxed" in signed and b"d=big.test" in signed and b"s=pl1" in signed
    assert verify_with(txt, signed)
    assert not verify_with(txt, signed.replace(b"2 pages", b"3 pages"))  # the check can fail
    env = {e.id: e for e in q._entries.values()}[status_id]
    assert env.size == len(signed.replace(b"\n", b"\r\n"))  # SIZE= counts the signature
    assert q.data_path(relayed_id).read_bytes() == STATUS


def test_keygen_refuses_to_overwrite(tmp_path, capsys):
    key, _ = keygen(tmp_path, capsys)
    before = key.read_bytes()
    assert dkim_keygen.main(["--selector", "pl1", "--domain", "big.test", str(key)]) == 1
    assert key.read_bytes() == before


@pytest.mark.parametrize("lines, key, why", [
    ("dkim_key = {bad}\ndkim_selector = pl1\ndkim_domain = big.test", "dkim_key", "not a PEM RSA private key"),
    ("dkim_key = {good}\ndkim_domain = big.test", "dkim_selector", "dkim_selector missing"),
    ("dkim_key = {good}\ndkim_selector = a b\ndkim_domain = big.test", "dkim_selector", "not a DKIM selector"),
    ("outbound_tls = sometimes", "outbound_tls", "sometimes"),
    ("dns_servers = dns.example", "dns_servers", "IP[:PORT]"),
])
def test_config_errors_name_the_key(tmp_path, capsys, lines, key, why):
    good, _ = keygen(tmp_path, capsys)
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    text = f"[appliance]\nspool = {tmp_path / 'var'}\n" + lines.format(good=good, bad=bad) + "\n"
    err = error_of(write(tmp_path, "", appliance=text))
    assert (err.section, err.key) == ("appliance", key) and why in err.why


def test_config_reads_the_outbound_keys(tmp_path, capsys):
    good, _ = keygen(tmp_path, capsys)
    text = (f"[appliance]\nspool = {tmp_path / 'var'}\nsmtp_listen = tcp:0\npop3_listen = tcp:0\n"
            f"dns_servers = 127.0.0.1:5353 192.0.2.1\nmx_port = 2525\noutbound_tls = verify\n"
            f"dkim_key = {good}\ndkim_selector = pl1\ndkim_domain = Big.Test.\n")
    a = config.load(write(tmp_path, "", appliance=text)).appliance
    assert a.dns_servers == (("127.0.0.1", 5353), ("192.0.2.1", 53)) and a.mx_port == 2525
    assert a.outbound_tls == "verify" and a.dkim_domain == "big.test" and a.dkim_selector == "pl1"


@pytest.mark.peer
@pytest_twisted.ensureDeferred
async def test_status_mail_arrives_by_mx_dkim_valid_with_the_key_from_dns(tmp_path, capsys):
    key, txt = keygen(tmp_path, capsys)
    port = free_port()
    server = DnsServer(tmp_path / "dns")
    server.mx("big.test", "mx.big.test", 10).host("mx.big.test", "127.0.0.4").txt("pl1._domainkey.big.test", txt)
    sink = LoopbackSink(tmp_path / "mx", "127.0.0.4", port)
    server.start()
    sink.start()
    q = None
    try:
        q = make_mx_queue(tmp_path / "spool", SimpleNamespace(dns=server, port=port),
                          dkim_key=key, dkim_selector="pl1", dkim_domain="big.test")
        await enqueue(q, STATUS, sender="", rcpts=("alice@big.test",))
        await until(lambda: q.queued() == [])
        [got] = sink.messages()
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], server.port

        def from_dnsmasq(name, timeout=5):
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
            return b"".join(b"".join(r.strings) for r in answer)

        assert got.raw.startswith(b"DKIM-Signature:")
        assert dkim.verify(got.raw.replace(b"\n", b"\r\n"), dnsfunc=from_dnsmasq)
    finally:
        if q is not None:
            q.stopService()
        sink.stop()
        server.stop()

"""Acceptance (issue 11, "Outbound mail without a smarthost" and "Tests on
real peers"): the real appliance (twistd) with no ``smarthost`` sends a
printed job's status mail by MX, DKIM-signed with a key made by the
``phaserlink-dkim-keygen`` command, and an independent verifier takes it.

Peers, all real and none ours:

- dnsmasq serving big.test's MX records (preferences 10, 20, 30), the
  hosts' A records and the DKIM TXT record exactly as
  ``phaserlink-dkim-keygen`` printed it;
- MX 10 (127.0.0.2): ``smtp-sink -r RCPT`` (450 to every RCPT);
- MX 20 (127.0.0.3): nothing listening (down);
- MX 30 (127.0.0.4): a real Postfix, the final destination, delivering into
  a Maildir; ``mx_port`` is the one port all three use.

The mail Postfix delivered is checked by ``opendkim-testmsg`` (OpenDKIM's
library, not dkimpy, which signs) and by dkimpy's ``dkimverify`` command,
each in a private network and mount namespace whose /etc/resolv.conf points
at a dnsmasq there publishing the printed record; a copy with one byte of
the body changed must fail, so the verifier is really checking.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted

from support.dns_server import DnsServer
from support.peers import free_port, require_program, require_root
from support.postfix import Postfix
from test_mx_delivery import LoopbackSink
from test_printer_appliance import job_mail, printed_files, send

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

SELECTOR, DOMAIN = "pl1", "big.test"


def dkim_keygen_command(directory: Path) -> tuple[Path, str, str]:
    """Run ``phaserlink-dkim-keygen`` as an operator would; the key file,
    the zone line it printed and the TXT value in it."""
    key = directory / "dkim.pem"
    out = subprocess.run([sys.executable, "-m", "phaserlink.dkim_keygen", "--selector", SELECTOR,
                          "--domain", DOMAIN, str(key)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    [zone] = [line for line in out.stdout.splitlines() if " IN TXT " in line]
    assert zone.startswith(f"{SELECTOR}._domainkey.{DOMAIN}. IN TXT")
    txt = "".join(re.findall(r'"([^"]*)"', zone))
    assert txt.startswith("v=DKIM1; k=rsa; p=")
    return key, zone, txt


def verify_independently(message: Path, txt: str) -> dict[str, subprocess.CompletedProcess]:
    """``opendkim-testmsg`` and ``dkimverify`` on *message*, each looking
    the key up through the system resolver, which in a private network and
    mount namespace is a dnsmasq there publishing *txt*."""
    require_root("a private network namespace for the verifier's DNS")
    dnsmasq = require_program("dnsmasq", "dnsmasq-base")
    testmsg = require_program("opendkim-testmsg", "opendkim-tools")
    dkimverify = require_program("dkimverify", "dkimpy")
    resolv = message.parent / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    chunks = ",".join(txt[i:i + 250] for i in range(0, len(txt), 250))
    results = {}
    for name, verifier in (("opendkim-testmsg", testmsg), ("dkimverify", dkimverify)):
        script = f"""
            ip link set lo up || exit 90
            {shlex.quote(dnsmasq)} -k --conf-file=/dev/null --no-resolv --no-hosts --port=53 \
                --listen-address=127.0.0.1 --bind-interfaces --local=/test/ --user=root --pid-file= \
                {shlex.quote(f"--txt-record={SELECTOR}._domainkey.{DOMAIN},{chunks}")} 2>/dev/null &
            dns=$!
            mount --bind {shlex.quote(str(resolv))} /etc/resolv.conf || exit 91
            for i in $(seq 50); do
                {shlex.quote(sys.executable)} -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 53))' 2>/dev/null || break
                sleep 0.05
            done
            {shlex.quote(verifier)} < {shlex.quote(str(message))}
            rc=$?
            kill $dns
            exit $rc
            """
        results[name] = subprocess.run(["unshare", "-m", "-n", "sh", "-c", script], capture_output=True,
                                       text=True, timeout=60)
    return results


def test_status_mail_goes_by_mx_past_a_refusing_and_a_dead_mx_to_postfix_and_verifies_with_opendkim(
        appliance, tmp_path):
    key, zone, txt = dkim_keygen_command(tmp_path)
    port = free_port()
    dns = DnsServer(tmp_path / "dns")
    dns.mx(DOMAIN, "mx1.big.test", 10).mx(DOMAIN, "mx2.big.test", 20).mx(DOMAIN, "mx3.big.test", 30)
    dns.host("mx1.big.test", "127.0.0.2").host("mx2.big.test", "127.0.0.3").host("mx3.big.test", "127.0.0.4")
    dns.txt(f"{SELECTOR}._domainkey.{DOMAIN}", txt)
    refusing = LoopbackSink(tmp_path / "mx1", "127.0.0.2", port, soft_reject=["RCPT"])
    assert "-r" in refusing.command_line()  # smtp-sink's own 450-to-RCPT switch
    postfix = Postfix(tmp_path / "mx3", port=port, myhostname="mx3.big.test", address="127.0.0.4")
    out = tmp_path / "printed"
    try:
        dns.start()
        refusing.start()
        postfix.start()
        appliance.appliance_extra = (
            f"status_sender = printers@{DOMAIN}\n"
            f"dns_servers = 127.0.0.1:{dns.port}\n"
            f"mx_port = {port}\n"
            f"dkim_key = {key}\ndkim_selector = {SELECTOR}\ndkim_domain = {DOMAIN}\n"
            "queue_retry_min = 30s\n")
        appliance.sections = ("[printer:demo]\naddresses = demo@phaserlink.test\n"
                              f"output = file:{out}\nallowed_senders = *@big.test\nsender_auth = none\n"
                              "formats = postscript\nnotify = printed, errors\n")
        appliance.start()
        appliance.wait_for(lambda: "no smarthost configured; delivering by MX records" in appliance.log(), 20,
                           "the queue saying it delivers by MX")
        send(appliance, job_mail(sender="alice@big.test", subject="MX acceptance"))
        [path] = postfix.wait_for(1, timeout=60)
        assert printed_files(out)
        raw = path.read_bytes()
        assert b"MX acceptance" in raw
        assert re.search(rb"^To:.*alice@big\.test", raw, re.MULTILINE | re.IGNORECASE), raw[:2000]
        assert refusing.messages() == []  # it was asked first and said 450
        log = appliance.log()
        assert "mx1.big.test [127.0.0.2]" in log and "next host" in log, log[-3000:]
        assert "mx2.big.test [127.0.0.3]" in log, log[-3000:]  # tried, refused the connection
        signature = re.search(rb"^DKIM-Signature:(.*(?:\n[ \t].*)*)", raw, re.MULTILINE)
        assert signature, raw[:2000]
        fields = re.sub(rb"\s+", b"", signature.group(1))
        assert b"d=big.test" in fields and b"s=pl1" in fields and b"c=relaxed/relaxed" in fields, fields
        assert b"a=rsa-sha256" in fields, fields

        message = tmp_path / "delivered.eml"
        message.write_bytes(raw)
        for name, result in verify_independently(message, txt).items():
            assert result.returncode == 0, (name, result.returncode, result.stdout, result.stderr)
        tampered = tmp_path / "tampered.eml"
        body_at = raw.index(b"\n\n") + 2
        tampered.write_bytes(raw[:body_at] + raw[body_at:].replace(b"a", b"e", 1))
        assert tampered.read_bytes() != raw
        for name, result in verify_independently(tampered, txt).items():
            assert result.returncode != 0, (name, "took a tampered message", result.stdout)
    finally:
        appliance.stop()
        postfix.stop()
        refusing.stop()
        dns.stop()


# -- many recipients at few domains: bounded concurrency, shared connections ---------


def established(address: str, port: int) -> int:
    """Established TCP connections to *address*:*port* right now (ss)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", f"{address}:{port}"],
                         capture_output=True, text=True, timeout=10)
    return len([line for line in out.stdout.splitlines() if line.strip()])


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_concurrency_is_bounded_per_domain_and_overall_and_connections_carry_several_messages(tmp_path):
    """smtp-sink answering DATA after 1 s (``-w 1``) as the one MX of many
    domains; ss counts the connections open to it while the queue drains."""
    import threading
    from types import SimpleNamespace

    from phaserlink.smtp_relay import mx
    from test_mx_delivery import make_queue
    from test_queue_delivery import enqueue, until

    require_program("ss", "iproute2")
    port = free_port()
    address = "127.0.0.8"
    dns = DnsServer(tmp_path / "dns")
    domains = [f"d{i}.test" for i in range(3 * mx.MAX_SESSIONS_TOTAL)]
    for d in ["one.test", *domains]:
        dns.host(d, address)
    sink = LoopbackSink(tmp_path / "slow", address, port, data_delay=1)
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], established(address, port))
            sampling.wait(0.02)

    dns.start()
    sink.start()
    q = None
    try:
        q = make_queue(tmp_path / "spool", SimpleNamespace(dns=dns, port=port))
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        # Eight messages to one domain: at most MAX_SESSIONS_PER_DOMAIN at once, reused after RSET.
        for i in range(8):
            await enqueue(q, f"Subject: one {i}\n\n{i}\n".encode(), rcpts=(f"u{i}@one.test",))
        await until(lambda: q.queued() == [], timeout=60)
        assert len(sink.messages()) == 8
        assert 1 <= peak[0] <= mx.MAX_SESSIONS_PER_DOMAIN, peak[0]
        assert q.mx.connections_opened <= mx.MAX_SESSIONS_PER_DOMAIN  # one connection carried several
        await task_sleep(mx.IDLE_SESSION_TIME + 1)  # parked sessions close
        peak[0] = 0
        # One message to each of many domains: parallel, but never more than MAX_SESSIONS_TOTAL.
        for i, d in enumerate(domains):
            await enqueue(q, f"Subject: many {i}\n\n{i}\n".encode(), rcpts=(f"u@{d}",))
        await until(lambda: q.queued() == [], timeout=90)
        assert len(sink.messages()) == 8 + len(domains)
        assert mx.MAX_SESSIONS_PER_DOMAIN < peak[0] <= mx.MAX_SESSIONS_TOTAL, peak[0]
    finally:
        sampling.set()
        if q is not None:
            q.stopService()
        sink.stop()
        dns.stop()


async def task_sleep(seconds: float) -> None:
    from twisted.internet import reactor, task

    await task.deferLater(reactor, seconds, lambda: None)


# -- STARTTLS to a real Postfix MX ------------------------------------------------


@pytest.mark.parametrize("certificate_name, policy, delivered", [
    ("mx.tls.test", "verify", True),     # verified against outbound_tls_ca
    ("other.test", "verify", False),     # the wrong name: never sent, in clear or otherwise
    ("other.test", "may", True),         # opportunistic: encrypted, not checked (Postfix's "may")
])
def test_starttls_to_a_real_postfix_mx(appliance, tmp_path, test_ca, certificate_name, policy, delivered):
    port = free_port()
    dns = DnsServer(tmp_path / "dns")
    dns.mx("tls.test", "mx.tls.test", 10).host("mx.tls.test", "127.0.0.4")
    postfix = Postfix(tmp_path / "mx", port=port, myhostname="mx.tls.test", address="127.0.0.4",
                      tls=test_ca.issue(certificate_name, ips=("127.0.0.4",)))
    out = tmp_path / "printed"
    try:
        dns.start()
        postfix.start()
        appliance.appliance_extra = (
            f"status_sender = printers@phaserlink.test\ndns_servers = 127.0.0.1:{dns.port}\nmx_port = {port}\n"
            f"outbound_tls = {policy}\noutbound_tls_ca = {test_ca.ca_path}\nqueue_retry_min = 30s\n")
        appliance.sections = ("[printer:demo]\naddresses = demo@phaserlink.test\n"
                              f"output = file:{out}\nallowed_senders = *@tls.test\nsender_auth = none\n"
                              "formats = postscript\nnotify = printed, errors\n")
        appliance.start()
        send(appliance, job_mail(sender="bob@tls.test", subject=f"TLS {policy}"))
        appliance.wait_for(lambda: printed_files(out), 30, "the print")
        if delivered:
            [path] = postfix.wait_for(1, timeout=60)
            raw = path.read_bytes()
            received = raw[:raw.index(b"\n\n")].decode(errors="replace")
            assert "using TLS" in received, received  # smtpd_tls_received_header
        else:
            appliance.wait_for(lambda: "deferred" in appliance.log() and "DNSMismatch" in appliance.log(), 30,
                               "the refused certificate in the log")
            time.sleep(2)
            assert postfix.message_paths() == []  # not sent in clear after the failed verification
    finally:
        appliance.stop()
        postfix.stop()
        dns.stop()


def test_a_status_mail_refused_with_5xx_is_dropped_never_bounced(appliance, tmp_path):
    """The appliance's own status mail (null sender) to a domain whose one
    MX answers 5xx to RCPT (smtp-sink -f RCPT): no retry, no bounce (RFC
    5321 6.1), said in the log."""
    port = free_port()
    dns = DnsServer(tmp_path / "dns")
    dns.mx("hard.test", "mx.hard.test", 10).host("mx.hard.test", "127.0.0.5")
    refusing = LoopbackSink(tmp_path / "mx", "127.0.0.5", port, hard_reject=["RCPT"])
    out = tmp_path / "printed"
    try:
        dns.start()
        refusing.start()
        appliance.appliance_extra = (f"status_sender = printers@phaserlink.test\ndns_servers = 127.0.0.1:{dns.port}\n"
                                     f"mx_port = {port}\nqueue_retry_min = 1s\nqueue_retry_max = 2s\n")
        appliance.sections = ("[printer:demo]\naddresses = demo@phaserlink.test\n"
                              f"output = file:{out}\nallowed_senders = *@hard.test\nsender_auth = none\n"
                              "formats = postscript\nnotify = printed, errors\n")
        appliance.start()
        send(appliance, job_mail(sender="carol@hard.test", subject="5xx status"))
        appliance.wait_for(lambda: "from the null sender failed for carol@hard.test; dropped (never bounced)"
                           in appliance.log(), 30, "the dropped status mail")
        assert printed_files(out)
        time.sleep(3)  # past the retry back-off: nothing is tried again
        log = appliance.log()
        assert log.count("dropped (never bounced)") == 1, log[-3000:]
        assert "deferred" not in log  # 5xx is final: not retried
        assert "bounced to" not in log
        assert refusing.messages() == []
        queue = appliance.spool / "queue"
        left = [p for p in queue.rglob("*") if p.is_file()] if queue.exists() else []
        assert not [p for p in left if p.suffix in ("", ".json", ".env")], left
    finally:
        appliance.stop()
        refusing.stop()
        dns.stop()

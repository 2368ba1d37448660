"""Several boxes (issue 11, "Scaling out"): a real Postfix as the site's MX
routes printer addresses with ``transport_maps`` to two appliances, each
owning half the printers, on 127.0.0.2 and 127.0.0.3.

Proven here: each printer's mail prints once, on its own appliance; with one
appliance stopped its mail waits in Postfix's queue (``postqueue -p`` lists
it) while the other keeps printing, and it prints when the appliance is
back; the status mail of both goes out by MX to the sender's domain
(dnsmasq's records, smtp-sink on 127.0.0.4) and is DKIM-valid for the key
in DNS.  A second test gives both appliances one Dovecot mailbox: POP3's
lock lets one in at a time and every job prints once.
"""

from __future__ import annotations

import smtplib
import subprocess
import textwrap
import time
from pathlib import Path

import dkim
import dns.resolver
import pytest

from support.appliance import Appliance
from support.dns_server import DnsServer
from support.peers import free_port, require_program, wait_for_port
from support.postfix import Postfix
from support.twistd import TWISTD
from test_dkim_sign import keygen
from test_mx_delivery import LoopbackSink
from test_printer_appliance import job_mail, printed_files

pytestmark = pytest.mark.peer

PRINTERS = {"127.0.0.2": ("a1", "a2"), "127.0.0.3": ("b1", "b2")}


class BoxAppliance(Appliance):
    """An appliance listening on its own loopback address."""

    address: str = "127.0.0.1"

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text().replace("interface=127.0.0.1", f"interface={self.address}")
        path.write_text(text)
        return path

    def start(self, timeout: float = 20.0) -> "BoxAppliance":
        self.write_config()
        self.proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "--logfile",
             str(self.log_path), "phaserlink", "--config", str(self.config_path)],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.smtp_port, host=self.address, timeout=timeout)
        return self


def mailq(postfix: Postfix) -> str:
    program = require_program("postqueue", "postfix")
    return subprocess.run([program, "-c", str(postfix.etc), "-p"], capture_output=True, text=True,
                          timeout=30).stdout


def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_appliances_behind_postfix(tmp_path, capsys):
    key, txt = keygen(tmp_path, capsys)
    smtp_port, mx_port = free_port(), free_port()
    server = DnsServer(tmp_path / "dns")
    server.mx("big.test", "mx.big.test", 10).host("mx.big.test", "127.0.0.4")
    server.txt("pl1._domainkey.big.test", txt)
    status_sink = LoopbackSink(tmp_path / "status-mx", "127.0.0.4", mx_port)
    transport = tmp_path / "transport"
    transport.write_text("".join(f"{p}@printers.test smtp:[{addr}]:{smtp_port}\n"
                                 for addr, names in PRINTERS.items() for p in names))
    postfix = Postfix(tmp_path / "postfix", relayhost="[127.0.0.9]:9", main_extra={
        "relay_domains": "printers.test", "transport_maps": f"texthash:{transport}",
        "smtp_connect_timeout": "2s",
    })
    boxes: dict[str, BoxAppliance] = {}
    out = tmp_path / "printed"
    try:
        server.start()
        status_sink.start()
        postfix.start()
        for addr, names in PRINTERS.items():
            box = BoxAppliance(tmp_path / f"box-{addr}", smtp_port=smtp_port)
            box.directory.mkdir()
            box.address = addr
            box.appliance_extra = (
                f"status_sender = printers@big.test\ndns_servers = 127.0.0.1:{server.port}\n"
                f"mx_port = {mx_port}\ndkim_key = {key}\ndkim_selector = pl1\ndkim_domain = big.test\n")
            box.sections = "".join(textwrap.dedent(f"""\
                [printer:{p}]
                addresses = {p}@printers.test
                output = file:{out / p}
                allowed_senders = *@big.test
                sender_auth = none
                formats = postscript
                notify = printed
                """) for p in names)
            boxes[addr] = box.start()

        def send(printer: str) -> None:
            with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as smtp:
                smtp.send_message(job_mail(sender="alice@big.test", to=f"{printer}@printers.test",
                                           subject=f"job for {printer}"))

        for printer in ("a1", "a2", "b1", "b2"):
            send(printer)
        for printer in ("a1", "a2", "b1", "b2"):
            until(lambda: printed_files(out / printer), 30, f"{printer} to print")
        # B stops: its mail waits in Postfix's queue, A keeps printing.
        boxes["127.0.0.3"].stop()
        send("b2")
        send("a2")
        until(lambda: len(printed_files(out / "a2")) == 2, 30, "a2's second job")
        until(lambda: "b2@printers.test" in mailq(postfix), 30, "b2's mail in Postfix's queue")
        assert len(printed_files(out / "b2")) == 1
        boxes["127.0.0.3"].start()
        postfix.flush()
        until(lambda: len(printed_files(out / "b2")) == 2, 30, "b2's mail after B came back")
        time.sleep(1.0)
        counts = {p: len(printed_files(out / p)) for p in ("a1", "a2", "b1", "b2")}
        assert counts == {"a1": 1, "a2": 2, "b1": 1, "b2": 2}  # exactly once each, on its own box
        # Status mail from both boxes, by MX, DKIM-valid.
        statuses = until(lambda: (m := status_sink.messages()) and len(m) >= 6 and m, 30, "six status mails")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], server.port

        def from_dnsmasq(name, timeout=5):
            return b"".join(b"".join(r.strings) for r in resolver.resolve(name.decode(), "TXT", lifetime=timeout))

        for m in statuses:
            assert m.recipients == ["alice@big.test"]
            assert dkim.verify(m.raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), dnsfunc=from_dnsmasq)
        assert len(status_sink.messages()) == 6  # one per printed job, none twice
        named = {p for m in statuses for p in ("a1", "a2", "b1", "b2") if f"{p}@printers.test" in m.raw.decode()}
        assert named == {"a1", "a2", "b1", "b2"}  # from both boxes
    finally:
        for box in boxes.values():
            box.stop()
        postfix.stop()
        status_sink.stop()
        server.stop()


def test_two_appliances_never_both_retrieve_one_dovecot_mailbox(tmp_path):
    """Both appliances are (wrongly) given the same Dovecot mailbox: POP3's
    lock (``pop3_lock_session = yes``) lets one in at a time, the other is
    refused and says so in its log, and every job prints exactly once."""
    import poplib

    from support.dovecot import Dovecot

    class LockingDovecot(Dovecot):
        def _config(self) -> str:
            return super()._config() + "pop3_lock_session = yes\n"

    dovecot = LockingDovecot()
    boxes: list[BoxAppliance] = []
    out = tmp_path / "printed"
    try:
        dovecot.start(users={"printer1": "pw"})
        password = tmp_path / "mailbox.password"
        password.write_text("pw\n")
        for i in range(3):
            dovecot.deliver("printer1", bytes(job_mail(sender="alice@big.test", to="remote@printers.test",
                                                       Message_ID=f"<shared-{i}@big.test>")))
        holder = poplib.POP3("127.0.0.1", dovecot.port, timeout=10)  # a session in progress
        holder.user("printer1")
        holder.pass_("pw")
        for n, addr in enumerate(("127.0.0.2", "127.0.0.3")):
            box = BoxAppliance(tmp_path / f"box{n}")
            box.directory.mkdir()
            box.address = addr
            box.sections = textwrap.dedent(f"""\
                [printer:remote]
                addresses = remote@printers.test
                output = file:{out / str(n)}
                allowed_senders = *@big.test
                sender_auth = none
                formats = postscript
                notify = none
                mailbox = pop3://printer1@127.0.0.1:{dovecot.port}
                mailbox_password_file = {password}
                mailbox_tls = none
                poll_interval = 1s
                """)
            boxes.append(box.start())
        for box in boxes:
            until(lambda: "IN-USE" in box.log() or "locked" in box.log(), 30, "the lock refusal in the log")
        holder.quit()
        until(lambda: dovecot.messages("printer1") == [], 30, "Dovecot emptied")
        time.sleep(2.5)  # more polls from both: nothing more prints
        printed = [p for n in range(2) for p in printed_files(out / str(n))]
        assert len(printed) == 3
    finally:
        for box in boxes:
            box.stop()
        dovecot.stop()

"""End to end, the whole chain with real peers (issue 4, "End-to-end tests
on real peers"):

    phaserlink send --(STARTTLS, verified)--> Postfix relay --> appliance
        --> p910nd (socket://)
    appliance outbound queue --(STARTTLS, verified)--> the same Postfix
        --> Maildir of a private Dovecot --(POP3 STLS, verified)-->
        phaserlink status / send --wait

One set of peers serves the module: the private Postfix relays mail for the
printers' domain (phaserlink.test) to the appliance and delivers mail for
the senders' domain (example.com) into the Dovecot user's Maildir with its
virtual agent, so status mail travels over SMTP twice and is read over POP3,
as it would be at a site.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.appliance import Appliance
from support.dovecot import Dovecot
from support.e2e import (
    MARKER,
    SENDER,
    job_states,
    phaserlink,
    postscript,
    printer_idle,
    printer_section,
    rendered_text,
    sha256,
    user_env,
    wait_until,
    write_destinations,
)
from support.p910nd import P910ndPrinter
from support.postfix import MAILDIR_OWNER, Postfix

pytestmark = pytest.mark.timeout(300)

MAILBOX_USER = "alice"
MAILBOX_PASSWORD = "alice-status-pw"
FRAGMENT_LIMIT = 5 * 1024 * 1024
# What the appliance accepts per message: the 5 MB fragment plus room for the
# one Received header the Postfix relay adds.  Any fragment over the limit is
# refused with 552 by the appliance, so the job could not print.
APPLIANCE_LIMIT = "5121K"


class Chain:
    """The running peers of the module, and a user to run commands as."""

    def __init__(self, base: Path, test_ca):
        self.base = base
        self.ca = test_ca.ca_path
        self.dovecot = Dovecot(cert=test_ca.issue("e2e-dovecot.test"))
        self.printer = P910ndPrinter()
        self.appliance = Appliance(base / "appliance")
        self.appliance.directory.mkdir()
        self.relay = Postfix(
            base / "relay",
            myhostname="relay.e2e.test",
            tls=test_ca.issue("e2e-relay.test"),
            relayhost=f"[127.0.0.1]:{self.appliance.smtp_port}",
            main_extra={
                # Fragments are 5 MB; Postfix's default limit is 10 MB.
                "message_size_limit": str(64 * 1024 * 1024),
                "virtual_mailbox_limit": "0",  # else it must be >= message_size_limit
                # The senders' domain is delivered here, into Dovecot's Maildir.
                "virtual_mailbox_domains": "example.com",
                "virtual_mailbox_base": str(self.dovecot.dir / "mail"),
                "virtual_mailbox_maps": f"static:{MAILBOX_USER}/",
                "virtual_uid_maps": f"static:{MAILDIR_OWNER}",
                "virtual_gid_maps": f"static:{MAILDIR_OWNER}",
                "virtual_minimum_uid": "1",
                # The appliance is a loopback peer: relay to it without DNS.
                "smtp_tls_security_level": "may",
            },
        )
        self.home = base / "home"
        self.env = user_env(self.home)

    def start(self) -> "Chain":
        self.dovecot.start(users={MAILBOX_USER: MAILBOX_PASSWORD})
        self.printer.start()
        app = self.appliance
        app.appliance_extra = f"""\
            max_message_size = {APPLIANCE_LIMIT}
            smarthost = 127.0.0.1:{self.relay.port}
            smarthost_tls = required
            smarthost_ca = {self.ca}
            status_sender = postmaster@phaserlink.test
            queue_retry_min = 1s
            queue_retry_max = 2s
            """
        app.sections = printer_section("raw", self.printer.uri(), senders=SENDER)
        app.start()
        self.relay.start()
        password_file = self.home / "mailbox.password"
        self.home.mkdir(exist_ok=True)
        password_file.write_text(MAILBOX_PASSWORD + "\n")
        password_file.chmod(0o600)
        write_destinations(self.env, f"""\
[defaults]
from = {SENDER}
server = relay

[server:relay]
endpoint = 127.0.0.1:{self.relay.port}
tls = required
ca_file = {self.ca}

[printer:raw]
address = raw@phaserlink.test

[mailbox]
endpoint = pop3://127.0.0.1:{self.dovecot.port}
username = {MAILBOX_USER}
tls = required
ca_file = {self.ca}
password_file = {password_file}
""")
        return self

    def stop(self) -> None:
        for stop in (self.appliance.stop, self.relay.stop, self.printer.cleanup, self.dovecot.stop):
            try:
                stop()
            except Exception:  # one peer's trouble must not leave the others running
                pass

    def logs(self) -> str:
        return (f"--- appliance ---\n{self.appliance.log()[-4000:]}\n"
                f"--- postfix ---\n{self.relay.log()[-3000:]}\n"
                f"--- dovecot ---\n{self.dovecot.log_text[-1500:]}")

    def status_mails(self) -> list[bytes]:
        return self.dovecot.messages(MAILBOX_USER)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, test_ca):
    c = Chain(tmp_path_factory.mktemp("e2e-chain"), test_ca)
    try:
        yield c.start()
    finally:
        c.stop()


def job_id_of(stdout: str) -> str:
    match = re.search(r"^job (\S+):", stdout, re.M)
    assert match, stdout
    return match.group(1)


def test_30mb_job_split_in_5mb_fragments_through_postfix_prints_byte_identical(chain, tmp_path):
    data = postscript(size=30 * 1024 * 1024, seed=b"30MB")
    job = tmp_path / "big.ps"
    job.write_bytes(data)
    chain.printer.clear_jobs()

    out = phaserlink(chain.env, "send", str(job), "--to", "raw", "--max-message-size", "5M",
                     "--title", "thirty megabytes")
    assert out.returncode == 0, out.stderr + chain.logs()
    fragments = re.findall(r"sent fragment (\d+)/(\d+): Message-ID <", out.stdout)
    count = int(fragments[0][1])
    # 30 MB of PostScript is 40 MB of base64: at least 8 fragments of 5 MB.
    assert count >= 8 and [int(n) for n, _ in fragments] == list(range(1, count + 1)), out.stdout
    job_id = job_id_of(out.stdout)

    [printed] = wait_until(lambda: chain.printer.jobs(), 120, "the job at p910nd", chain.logs)
    assert printed.stat().st_size == len(data)
    assert sha256(printed) == sha256(data)
    wait_until(lambda: printer_idle(chain.appliance, "raw"), 30, "the appliance's spool to empty", chain.logs)
    assert len(chain.printer.jobs()) == 1

    # Every fragment went through Postfix (not around it) and was at most
    # 5 MB when it reached the appliance (which refuses more with 552).
    sizes = [int(s) for s in re.findall(r"from=<alice@example\.com>, size=(\d+), nrcpt=1", chain.relay.log())]
    assert len(sizes) >= count and max(sizes) <= FRAGMENT_LIMIT + 1024, sizes
    relayed = re.findall(rf"to=<raw@phaserlink\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                         rf"{chain.appliance.smtp_port}.*status=sent", chain.relay.log())
    assert len(relayed) >= count

    # The status mail came back through the appliance's queue, Postfix and
    # Dovecot: `phaserlink status JOB` shows the job printed.
    status = wait_until(
        lambda: (s := phaserlink(chain.env, "status", job_id)).returncode == 0 and "completed" in s.stdout and s,
        60, "phaserlink status to show the job completed", chain.logs, interval=0.5)
    [header, row] = status.stdout.strip().splitlines()
    assert header.split()[:3] == ["JOB", "PRINTER", "STATE"]
    assert row.split()[:3] == [job_id, "raw", "completed"], status.stdout
    # The report came in over STLS, verified against the test CA.
    assert any("TLS" in line for line in chain.dovecot.logins(MAILBOX_USER)), chain.dovecot.logins(MAILBOX_USER)


def test_send_wait_exits_0_once_the_status_mail_says_printed(chain, tmp_path):
    job = tmp_path / "page.ps"
    job.write_bytes(postscript(marker=MARKER))
    chain.printer.clear_jobs()
    out = phaserlink(chain.env, "send", str(job), "--to", "raw", "--wait", "--wait-interval", "0.5",
                     "--wait-timeout", "90")
    assert out.returncode == 0, out.stdout + out.stderr + chain.logs()
    job_id = job_id_of(out.stdout)
    assert re.search(rf"^job {re.escape(job_id)}: completed on raw", out.stdout, re.M), out.stdout
    [printed] = chain.printer.jobs()  # printed before the status mail was written
    assert printed.read_bytes() == job.read_bytes()
    assert MARKER in rendered_text(printed)


def test_send_wait_exits_1_when_the_job_did_not_print(chain, tmp_path):
    """PCL for a PostScript-only printer cannot be converted: the appliance
    aborts the job (document-format-error), says so in the status mail, and
    `send --wait` reports it and exits 1."""
    job = tmp_path / "page.pcl"
    job.write_bytes(b"\x1bE\x1b&l0O\x1b(s0p12h10v0s0b3T Hello PCL\r\n\x1bE")
    chain.printer.clear_jobs()
    out = phaserlink(chain.env, "send", str(job), "--to", "raw", "--wait", "--wait-interval", "0.5",
                     "--wait-timeout", "90")
    assert out.returncode == 1, out.stdout + out.stderr + chain.logs()
    job_id = job_id_of(out.stdout)
    assert re.search(rf"^job {re.escape(job_id)}: aborted on raw.*document-format-error", out.stderr, re.M), \
        out.stderr
    assert chain.printer.jobs() == []


def test_status_mail_travelled_as_a_report_with_a_null_sender(chain, tmp_path):
    """What Dovecot holds is the appliance's status mail as sent: a
    multipart/report from the status sender, with Postfix's Received line
    from the appliance and an empty Return-Path (bounces never loop)."""
    import email
    import email.policy

    job = tmp_path / "report.ps"
    job.write_bytes(postscript(marker=MARKER, seed=b"report"))
    out = phaserlink(chain.env, "send", str(job), "--to", "raw")
    assert out.returncode == 0, out.stderr
    [message_id] = re.findall(r"Message-ID (<[^>]+>)", out.stdout)

    def report():
        for raw in chain.status_mails():
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            if msg["In-Reply-To"] == message_id:
                return msg
        return None

    msg = wait_until(report, 60, "the status mail in Dovecot", chain.logs)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    assert msg["Return-Path"] == "<>"
    assert msg["Auto-Submitted"].startswith("auto-replied")
    assert "postmaster@phaserlink.test" in msg["From"] and msg["To"] == SENDER
    assert "relay.e2e.test" in str(msg["Received"])


def test_status_refuses_a_mailbox_whose_certificate_is_not_from_the_given_ca(chain, tmp_path):
    """The STLS check is real: with another CA as ca_file, `phaserlink
    status` does not log in and says why (temporary failure, 75)."""
    from support.ca import TestCA

    other = TestCA(tmp_path / "other-ca", name="Some Other CA")
    env = dict(chain.env, XDG_CONFIG_HOME=str(tmp_path / "config"))
    password_file = chain.home / "mailbox.password"
    write_destinations(env, f"""\
[mailbox]
endpoint = pop3://127.0.0.1:{chain.dovecot.port}
username = {MAILBOX_USER}
tls = required
ca_file = {other.ca_path}
password_file = {password_file}
""")
    logins = len(chain.dovecot.logins(MAILBOX_USER))
    out = phaserlink(env, "status")
    assert out.returncode == 75, out.stdout + out.stderr
    assert "certificate" in out.stderr.lower(), out.stderr
    assert len(chain.dovecot.logins(MAILBOX_USER)) == logins


@pytest.mark.parametrize("to, sender, size, reply, words", [
    ("raw@phaserlink.test", "mallory@evil.example", 0, "550 5.7.1", "not allowed"),
    ("nosuch@phaserlink.test", SENDER, 0, "550 5.1.1", ""),
    ("raw@phaserlink.test", SENDER, 6 * 1024 * 1024, "552", ""),
], ids=["sender-not-allowed", "unknown-printer", "over-size-limit"])
def test_refused_job_ends_with_the_servers_reply_and_exit_1(chain, tmp_path, to, sender, size, reply, words):
    """Sent straight to the appliance (--server HOST:PORT, no destinations
    entry needed): the appliance's own refusal reaches the user."""
    job = tmp_path / "refused.ps"
    job.write_bytes(postscript(size=size, seed=b"refused"))
    chain.printer.clear_jobs()
    before = len(chain.status_mails())
    out = phaserlink(chain.env, "send", str(job), "--to", to, "--from", sender,
                     "--server", f"127.0.0.1:{chain.appliance.smtp_port}", "--max-message-size", "20M")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    err = out.stderr
    assert f"127.0.0.1:{chain.appliance.smtp_port} refused" in err and reply in err, err
    assert words in err
    assert "FAILED" in err
    # Nothing was spooled or printed, and nobody got status mail.
    assert job_states(chain.appliance, "raw") == {}
    assert chain.printer.jobs() == []
    assert len(chain.status_mails()) == before

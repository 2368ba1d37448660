"""`phaserlink send` / `status` as a user runs them (subprocess), against
the real appliance (twistd) on loopback: byte-identical prints, split jobs,
refusals with the server's own words and the right exit codes, group sends,
`--wait` and `status` reading the status mail over the appliance's POP3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.appliance import password_hash
from support.e2e import user_env
from support.peers import free_port

PS = b"%!PS-Adobe-3.0\n/Courier findfont 12 scalefont setfont\n72 700 moveto (PhaserLink client test) show\nshowpage\n"


def big_ps(size: int) -> bytes:
    """PostScript with binary-ish payload in a comment-free string: any
    byte sequence exercises base64 and the split at line boundaries."""
    body = os.urandom(size)
    return b"%!PS-Adobe-3.0\n%%Title: big\n" + body + b"\nshowpage\n"


@pytest.fixture
def home(tmp_path):
    """An empty user: no destinations, no journal, no cache."""
    return user_env(tmp_path / "home")


def phaserlink(env, *args, stdin: bytes | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "phaserlink.client.cli", *args], env=env, input=stdin,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def site(appliance, tmp_path):
    printed = tmp_path / "printed"
    printed.mkdir()
    (tmp_path / "printed-other").mkdir()
    appliance.appliance_extra = f"""\
        max_message_size = 300K
        smarthost = 127.0.0.1:{appliance.smtp_port}
        smarthost_tls = none
        queue_retry_min = 1s
        """
    appliance.sections = f"""\
        [printer:demo]
        sender_auth = none
        addresses = demo@phaserlink.test
        output = file:{printed}
        allowed_senders = *@example.com, me@phaserlink.test
        notify = printed, errors

        [printer:other]
        sender_auth = none
        addresses = other@phaserlink.test
        output = file:{tmp_path / "printed-other"}
        allowed_senders = boss@example.com

        [printer:inbox]
        sender_auth = none
        addresses = me@phaserlink.test
        output = pull
        allowed_senders = *
        pop3_password = {password_hash("secret")}
        """
    appliance.start()
    appliance.printed = printed
    return appliance


def printed_files(app, count: int = 1, directory: Path | None = None) -> list[Path]:
    directory = directory or app.printed
    return app.wait_for(lambda: sorted(directory.glob("*")) if len(list(directory.glob("*"))) >= count else None,
                        timeout=20, what=f"{count} printed file(s) in {directory}")


def test_plain_address_and_server_need_no_destinations_file(site, home, tmp_path):
    job = tmp_path / "hello.ps"
    job.write_bytes(PS)
    out = phaserlink(home, "send", str(job), "--to", "demo@phaserlink.test",
                     "--server", f"127.0.0.1:{site.smtp_port}", "--from", "alice@example.com")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "job " in text and "sent as 1 message" in text and "Message-ID <" in text
    assert out.stderr == b""  # not a terminal: no progress bar
    (printed,) = printed_files(site)
    assert printed.read_bytes() == PS


def test_stdin_and_a_split_job_arrive_byte_identical(site, home):
    data = big_ps(700_000)
    out = phaserlink(home, "send", "-", "--to", "demo@phaserlink.test", "--server", f"127.0.0.1:{site.smtp_port}",
                     "--from", "alice@example.com", "--max-message-size", "100K", stdin=data)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    fragments = [line for line in text.splitlines() if "sent fragment" in line]
    assert len(fragments) >= 9 and "fragments (message/partial)" in text
    assert fragments[0].split("fragment ")[1].startswith("1/")
    (printed,) = printed_files(site)
    assert printed.read_bytes() == data


def test_default_limit_comes_from_the_servers_size(site, home, tmp_path):
    """The appliance advertises SIZE 300K: a 600 KB job must be split below
    it (with headroom) without any --max-message-size."""
    job = tmp_path / "big.ps"
    job.write_bytes(big_ps(600_000))
    out = phaserlink(home, "send", str(job), "--to", "demo@phaserlink.test",
                     "--server", f"127.0.0.1:{site.smtp_port}", "--from", "alice@example.com")
    assert out.returncode == 0, out.stderr
    assert "fragments (message/partial)" in out.stdout.decode()
    (printed,) = printed_files(site)
    assert printed.read_bytes() == job.read_bytes()


@pytest.mark.parametrize("to, sender, extra, code_text", [
    ("demo@phaserlink.test", "mallory@evil.example", [], "550 5.7.1"),
    ("nobody@phaserlink.test", "alice@example.com", [], "550 5.1.1"),
    ("demo@phaserlink.test", "alice@example.com", ["--max-message-size", "2M"], "552"),
])
def test_refusals_print_the_servers_reply_and_exit_1(site, home, tmp_path, to, sender, extra, code_text):
    job = tmp_path / "job.ps"
    job.write_bytes(big_ps(600_000) if extra else PS)
    out = phaserlink(home, "send", str(job), "--to", to, "--server", f"127.0.0.1:{site.smtp_port}",
                     "--from", sender, *extra)
    assert out.returncode == 1
    err = out.stderr.decode()
    assert "FAILED" in err and code_text in err
    assert f"127.0.0.1:{site.smtp_port} refused" in err
    if "5.7.1" in code_text:
        assert "not allowed" in err  # the appliance's own words
    assert list(site.printed.iterdir()) == []


def test_connection_refused_is_temporary(home, tmp_path):
    job = tmp_path / "job.ps"
    job.write_bytes(PS)
    out = phaserlink(home, "send", str(job), "--to", "p@example.com", "--server", f"127.0.0.1:{free_port()}",
                     "--from", "alice@example.com")
    assert out.returncode == 75
    assert "refused" in out.stderr.decode().lower()


def test_group_send_is_one_job_per_member_each_reported(site, home, tmp_path):
    assert phaserlink(home, "destinations", "add-server", "appliance", f"127.0.0.1:{site.smtp_port}",
                      "--tls", "none", "--default").returncode == 0
    assert phaserlink(home, "destinations", "add-printer", "demo", "demo@phaserlink.test").returncode == 0
    assert phaserlink(home, "destinations", "add-printer", "other", "other@phaserlink.test").returncode == 0
    assert phaserlink(home, "destinations", "add-group", "both", "demo", "other").returncode == 0
    assert phaserlink(home, "destinations", "set-defaults", "--from", "alice@example.com").returncode == 0
    job = tmp_path / "job.ps"
    job.write_bytes(PS)
    out = phaserlink(home, "send", str(job), "--to", "both")
    assert out.returncode == 1  # other refuses alice
    assert "demo <demo@phaserlink.test>: sent as 1 message" in out.stdout.decode()
    assert "other <other@phaserlink.test>: FAILED" in out.stderr.decode()
    (printed,) = printed_files(site)
    assert printed.read_bytes() == PS
    # --from wins over the file's default: now both accept it
    out = phaserlink(home, "send", str(job), "--to", "both", "--from", "boss@example.com")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().count("sent as 1 message") == 2
    printed_files(site, 2)
    (other,) = printed_files(site, 1, tmp_path / "printed-other")
    assert other.read_bytes() == PS


def test_wait_and_status_read_the_status_mail_over_pop3(site, home, tmp_path):
    """The appliance mails the status report to the sender; with the sender
    a mailbox on the same appliance, `send --wait` and `status` read it
    back over the appliance's own POP3 server."""
    assert phaserlink(home, "destinations", "set-mailbox", f"pop3://127.0.0.1:{site.pop3_port}",
                      "--username", "inbox", "--tls", "none").returncode == 0
    home = dict(home, PHASERLINK_PASSWORD="secret")
    import smtplib

    with smtplib.SMTP("127.0.0.1", site.smtp_port) as smtp:  # ordinary mail: status must leave it alone
        smtp.sendmail("friend@example.com", ["me@phaserlink.test"],
                      b"From: friend@example.com\r\nSubject: lunch?\r\n\r\nAt noon.\r\n")
    job = tmp_path / "job.ps"
    job.write_bytes(PS)
    out = phaserlink(home, "send", str(job), "--to", "demo@phaserlink.test", "--server",
                     f"127.0.0.1:{site.smtp_port}", "--from", "me@phaserlink.test", "--wait", "--wait-interval",
                     "0.5", "--wait-timeout", "60")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    job_id = text.split()[1].rstrip(":")
    assert f"job {job_id}: completed on demo" in text
    out = phaserlink(home, "status", job_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["JOB", "PRINTER", "STATE"]
    assert lines[1].split()[:3] == [job_id, "demo", "completed"]
    out = phaserlink(home, "status", "no-such-job")
    assert out.returncode == 1 and b"no status mail for job no-such-job" in out.stdout
    inbox = site.spool / "mail" / "inbox"
    kept = [p for p in inbox.rglob("*") if p.is_file() and b"Subject: lunch?" in p.read_bytes()]
    assert len(kept) == 1  # the ordinary mail is still there
    out = phaserlink(home, "status", "--delete")
    assert out.returncode == 0, out.stderr
    left = [p for p in inbox.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")]
    assert len(left) == 1 and b"Subject: lunch?" in left[0].read_bytes()


def test_starttls_verified_and_auth_password_from_a_file(appliance, test_ca, home, tmp_path):
    """A server entry with tls=required, a CA file and AUTH whose password
    comes from a file; a wrong CA is refused before anything is sent."""
    cert = test_ca.issue("localhost")
    printed = tmp_path / "printed"
    printed.mkdir()
    appliance.appliance_extra = f"""\
        tls_certificate = {cert.certificate}
        tls_key = {cert.key}
        relay_networks = 192.0.2.0/24
        """
    appliance.sections = f"""\
        [printer:demo]
        sender_auth = none
        addresses = demo@phaserlink.test
        output = file:{printed}
        allowed_senders = alice@example.com

        [user:alice]
        password = {password_hash("s3cret")}
        """
    appliance.start()
    pw = tmp_path / "smtp.password"
    pw.write_text("s3cret\n")
    assert phaserlink(home, "destinations", "add-server", "tls", f"localhost:{appliance.smtp_port}", "--tls",
                      "required", "--ca-file", str(cert.ca), "--username", "alice", "--password-file", str(pw),
                      "--default").returncode == 0
    job = tmp_path / "job.ps"
    job.write_bytes(PS)
    out = phaserlink(home, "send", str(job), "--to", "demo@phaserlink.test", "--from", "alice@example.com")
    assert out.returncode == 0, out.stderr
    (done,) = printed_files(appliance, directory=printed)
    assert done.read_bytes() == PS
    # a CA that did not sign the server's certificate: no send, temporary failure
    from support.ca import TestCA

    other = TestCA(tmp_path / "other-ca", name="Someone Else")
    out = phaserlink(home, "send", str(job), "--to", "demo@phaserlink.test", "--from", "alice@example.com",
                     "--server", f"localhost:{appliance.smtp_port}", "--tls", "required", "--ca-file",
                     str(other.ca_path))
    assert out.returncode == 75
    assert b"FAILED" in out.stderr
    # a wrong password: the server's 535 and exit 1
    pw.write_text("wrong\n")
    out = phaserlink(home, "send", str(job), "--to", "demo@phaserlink.test", "--from", "alice@example.com")
    assert out.returncode == 1, out.stderr
    assert b"535" in out.stderr

"""The SMTP server inside the real appliance (``twistd -n phaserlink``),
spoken to by real clients: swaks and smtplib, plain and over STARTTLS with
certificate verification, an open-relay attempt, and kill -9 after a 250.

The printer service is still a placeholder, so what a user checks is the
mailbox file under ``var/mail/NAME/new``.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess

import pytest

from support.appliance import password_hash
from support.peers import in_ci, require_program
from support.smtp import strip_received

PRINTERS = """\
[printer:demo]
sender_auth = none
addresses = demo@phaserlink.test
allowed_senders = *

[printer:strict]
sender_auth = none
addresses = strict@phaserlink.test
allowed_senders = *@good.example
"""

MESSAGE = (
    b"Subject: a print job\r\n"
    b"Message-ID: <job-1@client.example>\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b"\xc3\xa9t\xc3\xa9 8bit\r\n"
    b".\r\n"  # smtplib stuffs this line; it must come back as "."
    b"last line\r\n"
)
STORED = MESSAGE.replace(b"\r\n", b"\n")


def new_files(appliance, name="demo"):
    new = appliance.spool / "mail" / name / "new"
    return sorted(new.iterdir()) if new.exists() else []


@pytest.fixture
def plain(appliance):
    appliance.sections = PRINTERS
    appliance.appliance_extra = "relay_networks = 192.0.2.0/24\n"
    return appliance.start()


@pytest.fixture
def with_tls(appliance, test_ca):
    cert = test_ca.issue("localhost")
    appliance.sections = PRINTERS + f"\n[user:alice]\npassword = {password_hash('wonderland')}\n"
    appliance.appliance_extra = (
        f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\nrelay_networks = 192.0.2.0/24\n"
    )
    appliance.start()
    return appliance, cert


def test_smtplib_plain_delivery_byte_exact(plain):
    with smtplib.SMTP("127.0.0.1", plain.smtp_port, timeout=10) as client:
        code, text = client.ehlo("client.example")
        assert code == 250 and b"SIZE 52428800" in text and b"PIPELINING" in text and b"STARTTLS" not in text
        assert client.sendmail("anyone@x.example", ["demo@phaserlink.test"], MESSAGE) == {}
        code, text = client.noop()
    (path,) = new_files(plain)
    stored = path.read_bytes()
    assert strip_received(stored) == STORED
    assert stored.startswith(b"Return-Path: <anyone@x.example>\n"
                             b"Authentication-Results: phaserlink.test;\n\tnone\n"
                             b"Received: from client.example ([127.0.0.1])\n\tby phaserlink.test (PhaserLink) "
                             b"with ESMTP id ")


def test_swaks_plain_delivery(plain, tmp_path):
    swaks = require_program("swaks")
    body = tmp_path / "job.txt"
    body.write_bytes(b"Subject: swaks job\nX-Job: 7\n\n.dot\n..dots\nend\n")
    done = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{plain.smtp_port}", "--to", "demo@phaserlink.test",
         "--from", "someone@x.example", "--helo", "swaks.example", "--data", str(body)],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<-  250 2.0.0 Ok: queued as " in done.stdout
    (path,) = new_files(plain)
    # swaks ends the data with its own empty line before the "."
    assert strip_received(path.read_bytes()) == body.read_bytes() + b"\n"


def test_open_relay_and_forbidden_sender_refused(plain):
    swaks = require_program("swaks")
    done = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{plain.smtp_port}", "--to", "victim@example.com",
         "--from", "spammer@x.example", "--quit-after", "RCPT"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert "<** 550 5.7.1 <victim@example.com>: Relay access denied" in done.stdout
    with smtplib.SMTP("127.0.0.1", plain.smtp_port, timeout=10) as client:
        # allowed_senders is matched against From: (here absent: MAIL FROM), at the end of DATA
        with pytest.raises(smtplib.SMTPDataError) as e:
            client.sendmail("eve@bad.example", ["strict@phaserlink.test"], b"Subject: x\r\n\r\nx\r\n")
        assert (e.value.smtp_code, e.value.smtp_error) == (
            550, b"5.7.1 sender <eve@bad.example> is not allowed to print on strict")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            client.sendmail("a@good.example", ["nobody@phaserlink.test"], b"x\r\n")
        assert e.value.recipients["nobody@phaserlink.test"][0] == 550
    assert new_files(plain, "strict") == [] and new_files(plain) == []


def test_smtplib_starttls_verified_auth_relay(with_tls):
    appliance, cert = with_tls
    context = ssl.create_default_context(cafile=str(cert.ca))
    with smtplib.SMTP("localhost", appliance.smtp_port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        code, _ = client.docmd("MAIL", "FROM:<a@x.example>")
        assert code == 250
        assert client.docmd("RCPT", "TO:<u@elsewhere.example>")[0] == 550
        client.rset()
        client.starttls(context=context)  # raises unless the chain and name verify
        client.ehlo("client.example")
        assert client.has_extn("auth") and "PLAIN" in client.esmtp_features["auth"]
        client.login("alice", "wonderland")
        client.mail("a@x.example")
        assert client.rcpt("u@elsewhere.example") == (250, b"2.1.5 Ok, relayed")
        client.rset()
        assert client.sendmail("a@x.example", ["demo@phaserlink.test"], MESSAGE) == {}
    (path,) = new_files(appliance)
    stored = path.read_bytes()
    assert strip_received(stored) == STORED
    assert b"with ESMTPSA id " in stored.split(b"\nReceived: ")[1].split(b"\n\t")[1]


def test_starttls_untrusted_ca_fails(with_tls, tmp_path):
    from support.ca import TestCA

    appliance, _ = with_tls
    other = TestCA(tmp_path / "other")
    with smtplib.SMTP("localhost", appliance.smtp_port, timeout=10) as client:
        client.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=ssl.create_default_context(cafile=str(other.ca_path)))


def require_swaks_tls() -> str:
    """swaks does TLS only with Perl's Net::SSLeay (Debian: libnet-ssleay-perl)."""
    swaks = require_program("swaks")
    if subprocess.run(["perl", "-MNet::SSLeay", "-e1"], capture_output=True).returncode != 0:
        why = "swaks needs Net::SSLeay for TLS (apt-get install libnet-ssleay-perl)"
        if in_ci():
            pytest.fail(f"CI=true and {why}")
        pytest.skip(why)
    return swaks


def test_swaks_starttls_verified(with_tls, tmp_path):
    swaks = require_swaks_tls()
    appliance, cert = with_tls
    done = subprocess.run(
        [swaks, "--server", f"localhost:{appliance.smtp_port}", "--to", "demo@phaserlink.test",
         "--from", "a@x.example", "--tls", "--tls-verify", "--tls-ca-path", str(cert.ca),
         "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "wonderland",
         "--header", "Subject: over tls"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<~  235 2.7.0 Authentication successful" in done.stdout
    (path,) = new_files(appliance)
    assert b"Subject: over tls\n" in path.read_bytes()
    assert b" with ESMTPSA id " in path.read_bytes()


def test_kill9_right_after_250_keeps_message(appliance):
    appliance.sections = PRINTERS
    appliance.start()
    body = b"Subject: survive\r\n\r\n" + b"".join(b"line %06d of the job\r\n" % i for i in range(20000))
    with socket.create_connection(("127.0.0.1", appliance.smtp_port), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"EHLO c.example\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<demo@phaserlink.test>\r\nDATA\r\n")
        assert f.readline().startswith(b"250 2.1.0")
        assert f.readline().startswith(b"250 2.1.5")
        assert f.readline().startswith(b"354 ")
        sock.sendall(body + b".\r\n")
        reply = f.readline()
        appliance.kill9()  # the instant the 250 is read
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    message_id = reply.split()[-1]
    appliance.start()  # the store is cleaned (tmp/) at start
    (path,) = new_files(appliance)
    stored = path.read_bytes()
    assert strip_received(stored) == body.replace(b"\r\n", b"\n")
    assert b" id " + message_id + b"\n" in stored
    assert list((appliance.spool / "mail" / "demo" / "tmp").iterdir()) == []

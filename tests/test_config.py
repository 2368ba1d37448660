"""site.ini validation: each mistake is one message naming file, section, key, why."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from phaserlink import config
from phaserlink.passwords import PasswordHash, hash_password
from support.twistd import TWISTD

ROOT = Path(__file__).resolve().parent.parent

GOOD_HASH = hash_password("pw", iterations=1000)


def write(tmp_path: Path, body: str, appliance: str | None = None) -> Path:
    if appliance is None:
        appliance = f"[appliance]\nspool = {tmp_path / 'var'}\nsmtp_listen = tcp:0\npop3_listen = tcp:0\n"
    path = tmp_path / "site.ini"
    path.write_text(appliance + textwrap.dedent(body))
    return path


def error_of(path: Path) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    return info.value


def test_demo_config_loads():
    site = config.load(ROOT / "etc" / "site.ini")
    assert site.appliance.smtp_listen == ("tcp:2525:interface=127.0.0.1",)
    assert site.appliance.pop3_listen == ("tcp:1110:interface=127.0.0.1",)
    assert site.printers["demo"].addresses == ("demo@phaserlink.localhost",)
    assert site.printers["demo"].output == "file:var/printed/demo"
    pull = site.printers["pull"]
    assert pull.output == "pull" and pull.pop3_user == "pull"
    assert pull.pop3_password is not None and pull.pop3_password.check("pull")
    assert not pull.pop3_password.check("wrong")


def test_good_config_types(tmp_path):
    path = write(tmp_path, f"""
        [printer:lab]
        addresses = Lab@Example.COM, lab2@example.com
        output = lpd://printer.example.com:515/raw
        allowed_senders = *@example.com
        pop3_password = {GOOD_HASH}
        poll_interval = 2m
        [group:all]
        address = all@example.com
        members = lab
        [user:relay]
        password = {GOOD_HASH}
    """)
    site = config.load(path)
    lab = site.printers["lab"]
    assert lab.addresses == ("lab@example.com", "lab2@example.com")
    assert lab.poll_interval == 120.0
    assert lab.sender_allowed("Alice@example.com")
    assert not lab.sender_allowed("mallory@example.org")
    assert site.printers_for_address("ALL@example.com") == (lab,)
    assert site.printers_for_address("nobody@example.com") is None
    assert site.is_local_domain("x@example.com")
    assert site.users["relay"].password.check("pw")


@pytest.mark.parametrize(
    "body, section, key, why",
    [
        ("[printer:p]\nallowed_senders = *\ncolour = yes\n", "printer:p", "colour", "unknown key"),
        ("[printr:p]\n", "printr:p", None, "unknown section"),
        ("[printer:p]\nallowed_senders = *\noutput = ftp://x/\n", "printer:p", "output", "use file:"),
        ("[printer:p]\nallowed_senders = *\npop3_password = secret\n", "printer:p", "pop3_password", "not a pbkdf2-sha256 hash"),
        ("[printer:p]\nallowed_senders = *\npop3_password = $pbkdf2-sha256$10$AA$AA\n", "printer:p", "pop3_password", "iterations"),
        ("[printer:p]\n", "printer:p", "allowed_senders", "is required"),
        ("[printer:p]\nallowed_senders = *\naddresses = not-an-address\n", "printer:p", "addresses", "not a mail address"),
        ("[printer:p]\nallowed_senders = *\naddresses = a@x\n[printer:q]\nallowed_senders = *\naddresses = A@x\n",
         "printer:q", "addresses", "already used by [printer:p]"),
        ("[printer:p]\nallowed_senders = *\n[group:g]\naddress = g@x\nmembers = p, ghost\n", "group:g", "members", "'ghost' is not a [printer:NAME]"),
        ("[printer:p]\nallowed_senders = *\npoll_interval = soon\n", "printer:p", "poll_interval", "not a duration"),
        ("[printer:p]\nallowed_senders = *\nformats = postscript, docx\n", "printer:p", "formats", "'docx'"),
        ("[printer:p]\nallowed_senders = *\nmailbox = imap://u@h\n", "printer:p", "mailbox", "pop3://"),
        ("[printer:p]\nallowed_senders = *\nmailbox = pop3://u@h\n", "printer:p", "mailbox_password_file", "password file"),
    ],
)
def test_bad_config_names_section_and_key(tmp_path, body, section, key, why):
    err = error_of(write(tmp_path, body))
    assert (err.section, err.key) == (section, key)
    assert why in err.why
    assert str(tmp_path / "site.ini") in str(err)


@pytest.mark.parametrize(
    "line, key, why",
    [
        ("smtp_listen = tcp:notaport", "smtp_listen", "not a Twisted server endpoint"),
        ("pop3_listen = bogus:1", "pop3_listen", "not a Twisted server endpoint"),
        ("max_message_size = lots", "max_message_size", "not a size"),
        ("tls_certificate = /nonexistent/cert.pem\ntls_key = /nonexistent/key.pem", "tls_certificate", "cannot read"),
        ("relay_networks = 10.0.0.0/33", "relay_networks", "not a network"),
        ("smarthost_user = u\nsmarthost = mail.example.com:587", "smarthost_password_file", "password file"),
    ],
)
def test_bad_appliance_keys(tmp_path, line, key, why):
    text = f"[appliance]\nspool = {tmp_path / 'var'}\n{line}\n"
    err = error_of(write(tmp_path, "", appliance=text))
    assert (err.section, err.key) == ("appliance", key)
    assert why in err.why


def test_unloadable_certificate(tmp_path):
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    text = f"[appliance]\nspool = {tmp_path / 'var'}\ntls_certificate = {cert}\ntls_key = {key}\n"
    err = error_of(write(tmp_path, "", appliance=text))
    assert err.key == "tls_certificate" and "cannot load" in err.why


def test_unwritable_spool(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    text = f"[appliance]\nspool = {blocker / 'var'}\n"
    err = error_of(write(tmp_path, "", appliance=text))
    assert err.key == "spool" and "not a writable directory" in err.why


def test_missing_file(tmp_path):
    err = error_of(tmp_path / "nope.ini")
    assert "cannot read" in str(err)


def test_password_hash_round_trip():
    text = hash_password("s3cret", iterations=1000)
    parsed = PasswordHash.parse(text)
    assert str(parsed) == text
    assert parsed.check("s3cret") and not parsed.check("s3cres")


def test_passwd_command_reads_stdin():
    out = subprocess.run(
        [sys.executable, "-m", "phaserlink.passwords", "--iterations", "1000"],
        input="hunter2\n", capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert PasswordHash.parse(out).check("hunter2")


def test_twistd_refuses_bad_config_before_binding(tmp_path):
    """A bad key stops twistd with the message, and the good port stays free."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = (
        f"[appliance]\nspool = {tmp_path / 'var'}\nsmtp_listen = tcp:{port}:interface=127.0.0.1\n"
        "pop3_listen = tcp:0\n[printer:p]\nallowed_senders = *\nformats = docx\n"
    )
    path = write(tmp_path, "", appliance=text)
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "phaserlink", "--config", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{path}: [printer:p] formats: 'docx' is not one of" in output
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing was ever bound there


@pytest.mark.parametrize("extra, key, why", [
    ("sender_auth = dmarc, magic\n", "sender_auth", "'magic' is not one of dmarc, dkim, spf, login, none"),
    ("sender_auth = none, dkim\n", "sender_auth", "none (no verification) cannot be combined"),
    ("max_jobs_per_sender = lots\n", "max_jobs_per_sender", "use JOBS/DURATION, e.g. 20/1h"),
    ("max_jobs_per_sender = 5/soon\n", "max_jobs_per_sender", "use JOBS/DURATION"),
    ("max_pages_per_job = -3\n", "max_pages_per_job", "whole number"),
    ("sender_auth = none\nunauthenticated = hold\n", "unauthenticated", "needs a sender_auth rule decided at the end of DATA"),
    ("hold_timeout = forever\n", "hold_timeout", "not a duration"),
    ("unauthenticated = maybe\n", "unauthenticated", "'maybe' is not one of refuse, hold"),
])
def test_sender_auth_mistakes_name_file_section_and_key(tmp_path, extra, key, why):
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path / 'var'}\n[printer:p]\nallowed_senders = *\n{extra}")
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert (e.value.section, e.value.key) == ("printer:p", key)
    assert why in e.value.why, e.value.why


@pytest.mark.parametrize("extra, key, why", [
    ("dns_servers = ns.example.com\n", "dns_servers", "a DNS server is given by its IP address"),
    ("dns_servers = 127.0.0.1:99999\n", "dns_servers", "port"),
    ("trusted_authserv_ids = localhost\nhostname = localhost\n", "trusted_authserv_ids", "own hostname"),
    ("max_jobs_per_hour = many\n", "max_jobs_per_hour", "whole number"),
    ("verify_processes = -1\n", "verify_processes", "not a whole number from 0 to 16"),
    ("verify_processes = 17\n", "verify_processes", "not a whole number from 0 to 16"),
])
def test_appliance_sender_auth_mistakes(tmp_path, extra, key, why):
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path / 'var'}\n{extra}")
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert (e.value.section, e.value.key) == ("appliance", key)
    assert why in e.value.why, e.value.why


PBKDF2 = "$pbkdf2-sha256$200000$YEDnEeno8BDT2DO1rA2SJg$nJHSUPz7IV5yI04ElcdJfWTlRtnBEuetOqwpS0FfUwc"


def test_sender_auth_defaults_and_values(tmp_path):
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path / 'var'}\ndns_servers = 127.0.0.1:5353 [::1]\n"
                    "trusted_authserv_ids = MX.Example.com\nmax_jobs_per_hour = 50\n"
                    "[printer:p]\nallowed_senders = *\n"
                    "[printer:q]\nallowed_senders = *\nsender_auth = spf\nmax_jobs_per_sender = 20/1h\n"
                    "max_pages_per_job = 30\n[user:u]\npassword = " + PBKDF2 + "\naddresses = U@example.com\n")
    site = config.load(path)
    assert site.printers["p"].sender_auth == ("dmarc", "login")
    assert site.printers["p"].max_jobs_per_sender is None and site.printers["p"].max_pages_per_job is None
    assert site.printers["q"].sender_auth == ("spf",)
    assert site.printers["q"].max_jobs_per_sender == (20, 3600.0) and site.printers["q"].max_pages_per_job == 30
    assert site.appliance.dns_servers == (("127.0.0.1", 5353), ("::1", 53))
    assert site.appliance.trusted_authserv_ids == ("mx.example.com",) and site.appliance.max_jobs_per_hour == 50
    assert site.users["u"].addresses == ("u@example.com",)
    assert site.appliance.verify_processes == 1  # one verifier worker process (docs/trust.md)
    path.write_text(path.read_text().replace("max_jobs_per_hour = 50\n", "max_jobs_per_hour = 50\nverify_processes = 0\n"))
    assert config.load(path).appliance.verify_processes == 0


def test_mailbox_sessions_bounds_remote_mailbox_logins(tmp_path):
    """[appliance] mailbox_sessions (docs/scaling.md): how many POP3 sessions
    to remote mailboxes one appliance opens at once; 10 unless set, and a
    bad value names file, section and key."""
    body = "[printer:lab]\naddresses = lab@example.com\noutput = file:out\nallowed_senders = *\n"
    appliance = f"[appliance]\nspool = {tmp_path / 'var'}\nsmtp_listen = tcp:0\npop3_listen = tcp:0\n"
    assert config.load(write(tmp_path, body)).appliance.mailbox_sessions == 10
    site = config.load(write(tmp_path, body, appliance + "mailbox_sessions = 40\n"))
    assert site.appliance.mailbox_sessions == 40
    e = error_of(write(tmp_path, body, appliance + "mailbox_sessions = 0\n"))
    assert "site.ini" in str(e) and "[appliance]" in str(e) and "mailbox_sessions" in str(e)

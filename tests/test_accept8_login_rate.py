"""Issue 8 acceptance: the ``login`` rule of ``sender_auth`` (on by
default, with ``dmarc``) and the site's ``max_jobs_per_hour``, on the real
appliance (twistd) spoken to by a real client (swaks over STARTTLS with
SMTP AUTH), with a real DNS server (dnsmasq) that makes DMARC fail, so the
login is what decides.

What the user sees: logged in as a ``[user:NAME]`` whose ``addresses``
include the From: address, the job prints; the same login with another
From: address, or no login at all, is a 550 5.7.x saying why; over the
site's hourly rate, 452 4.7.0 at RCPT.
"""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from support.appliance import password_hash
from support.dnsmasq import DnsServer
from test_smtp_appliance import require_swaks_tls

pytestmark = pytest.mark.timeout(180)

POSTSCRIPT = b"%!PS-Adobe-3.0\n%%Title: login\n72 720 moveto (login job) show showpage\n%%EOF\n"


def job(author: str, to: str, subject: str) -> bytes:
    return (f"From: <{author}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@good.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: application/postscript\r\n\r\n").encode() \
        + POSTSCRIPT.replace(b"\n", b"\r\n")


@pytest.fixture
def site(appliance, test_ca, tmp_path):
    dns = DnsServer(tmp_path)
    dns.add_txt("good.test", "v=spf1 -all")  # SPF never passes: DMARC fails for good.test
    dns.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    dns.start()
    cert = test_ca.issue("localhost")
    out = tmp_path / "printed"
    appliance.appliance_extra = (f"dns_servers = {dns.address}\nmax_jobs_per_hour = 3\n"
                                 f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\n")
    appliance.sections = f"""\
[printer:mine]
addresses = mine@phaserlink.test
output = file:{out}
allowed_senders = *@good.test
formats = postscript
notify = none

[printer:open]
addresses = open@phaserlink.test
output = file:{tmp_path / 'open'}
sender_auth = none
allowed_senders = *
formats = postscript
notify = none

[user:alice]
password = {password_hash('wonderland')}
addresses = Alice@Good.test
"""
    appliance.start()
    appliance.printed = out
    appliance.cert = cert
    yield appliance
    appliance.stop()
    dns.stop()


def swaks(app, tmp_path, author: str, name: str, login: bool = True) -> subprocess.CompletedProcess:
    data = tmp_path / f"{name}.eml"
    data.write_bytes(job(author, "mine@phaserlink.test", name))
    args = [require_swaks_tls(), "--server", f"localhost:{app.smtp_port}", "--to", "mine@phaserlink.test",
            "--from", "bounces@elsewhere.test", "--tls", "--tls-verify", "--tls-ca-path", str(app.cert.ca),
            "--data", f"@{data}"]
    if login:
        args += ["--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "wonderland"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_login_rule_decides_by_the_users_addresses_and_the_site_rate_is_452(site, tmp_path):
    # Logged in as alice, From: one of her addresses (matched without regard to case): prints.
    done = swaks(site, tmp_path, "alice@good.test", "hers")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<~  250 2.0.0 Ok: queued as " in done.stdout, done.stdout
    [printed] = site.wait_for(lambda: list(site.printed.glob("*")) or None, timeout=30, what="the job printed")
    assert printed.read_bytes().rstrip(b"\n") == POSTSCRIPT.rstrip(b"\n")  # swaks ends --data with a line of its own

    # The same login, another From: address: 550 5.7.x with the reason in words.
    done = swaks(site, tmp_path, "bob@good.test", "not-hers")
    assert done.returncode != 0
    assert "* 550 5.7." in done.stdout and "login alice may not send as bob@good.test" in done.stdout, done.stdout

    # No login, and DMARC fails: 550 5.7.x naming both rules.
    done = swaks(site, tmp_path, "alice@good.test", "anonymous", login=False)
    assert done.returncode != 0
    assert "* 550 5.7." in done.stdout and "not logged in" in done.stdout, done.stdout
    assert len(list(site.printed.glob("*"))) == 1

    # The site takes 3 jobs an hour: one printed above, two more, then 452 4.7.0 at RCPT.
    with smtplib.SMTP("127.0.0.1", site.smtp_port, timeout=30) as client:
        for n in range(2):
            assert client.sendmail("x@elsewhere.test", ["open@phaserlink.test"],
                                   job("x@elsewhere.test", "open@phaserlink.test", f"rate{n}")) == {}
        client.ehlo("rate.test")
        assert client.mail("x@elsewhere.test")[0] == 250
        code, text = client.rcpt("open@phaserlink.test")
    assert code == 452 and text.startswith(b"4.7.0 "), (code, text)

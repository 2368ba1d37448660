"""Hold and release (docs/trust.md): an allowed but unauthenticated sender's
job is held, a release mail goes to the From: address, and a mail to the
one-time release address prints the job exactly once; never released, it
is canceled after hold_timeout with no further mail.

The SMTP side runs against a real DNS server (dnsmasq: good.test publishes
DMARC p=reject and SPF -all, so an unsigned message is not authenticated);
the printer side on a fake clock (support.printer_fakes.Rig).
"""

from __future__ import annotations

import re

import pytest

from phaserlink import config
from phaserlink.trust import hold
from support.dnsmasq import DnsServer
from support.printer_fakes import Rig, make_site as printer_site, message as printer_message
from support.smtp import FakeQueue, Session, make_site, mailbox_files

PRINTERS = """\
[printer:held]
addresses = held@phaserlink.test
allowed_senders = *@good.test
sender_auth = dmarc
unauthenticated = hold
hold_timeout = 2h
"""

JOB = (b"From: Alice <alice@good.test>\r\nTo: held@phaserlink.test\r\nSubject: quarterly report\r\n"
       b"X-PhaserLink-Hold: AAAAAAAAAAAAAAAAAAAAAA; printers=held\r\n\r\nplease print\r\n")


class FakeReleaser:
    def __init__(self):
        self.held: set[str] = set()
        self.released: list[str] = []

    def is_held(self, token):
        return token in self.held

    def release(self, token):
        self.held.discard(token)
        self.released.append(token)


@pytest.fixture
def dns(tmp_path):
    server = DnsServer(tmp_path)
    server.add_txt("good.test", "v=spf1 -all")
    server.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    yield server.start()
    server.stop()


def session(site, queue, releaser):
    s = Session(site, queue=queue)
    s.factory.gate.releaser = releaser
    return s


def send(s, mail_from, rcpt, data=JOB):
    s.ehlo()
    s.cmd(f"MAIL FROM:<{mail_from}>")
    reply = s.cmd(f"RCPT TO:<{rcpt}>")
    if not reply.startswith(b"250"):
        return reply
    s.cmd("DATA")
    return s.send(data + b".\r\n")


def test_unauthenticated_job_is_held_and_the_author_gets_a_release_mail(tmp_path, dns):
    site = make_site(tmp_path, f"dns_servers = {dns.address}\n", PRINTERS)
    queue, releaser = FakeQueue(), FakeReleaser()
    reply = send(session(site, queue, releaser), "mallory@evil.test", "held@phaserlink.test")
    assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
    assert b"held for a release" in reply
    (stored,) = mailbox_files(site, "held")
    head = stored.split(b"\n\n")[0]
    tokens = re.findall(rb"X-PhaserLink-Hold: ([A-Za-z0-9_-]+); printers=held", head)
    assert len(tokens) == 1 and tokens[0] != b"AAAAAAAAAAAAAAAAAAAAAA"  # the forged field is gone
    token = tokens[0].decode()
    assert len(token) >= 22  # 128 bits, base64url
    (mail,) = queue.committed
    assert (mail.mail_from, mail.recipients) == ("", ["alice@good.test"])  # the author, not the forger
    text = mail.data.decode()
    assert "Auto-Submitted: auto-replied\n" in text
    assert f"Reply-To: <release+{token}@phaserlink.test>" in text
    assert "Subject: quarterly report" in text and f"release+{token}@phaserlink.test" in text
    assert "canceled after 2 hours" in text


def test_release_mails_are_rate_limited_per_address(tmp_path, dns):
    site = make_site(tmp_path, f"dns_servers = {dns.address}\n", PRINTERS)
    queue, releaser = FakeQueue(), FakeReleaser()
    s = session(site, queue, releaser)
    for n in range(hold.RELEASE_MAILS_PER_HOUR + 3):
        assert send(s, "mallory@evil.test", "held@phaserlink.test",
                    JOB.replace(b"quarterly", f"n{n}".encode())).startswith(b"250 ")
    assert len(queue.committed) == hold.RELEASE_MAILS_PER_HOUR


def test_the_release_address_releases_after_the_whole_message(tmp_path, dns):
    site = make_site(tmp_path, f"dns_servers = {dns.address}\n", PRINTERS)
    queue, releaser = FakeQueue(), FakeReleaser()
    token = hold.new_token()
    releaser.held.add(token)
    s = session(site, queue, releaser)
    s.ehlo()
    s.cmd("MAIL FROM:<>")
    assert s.cmd(f"RCPT TO:<release+{token}@phaserlink.test>").startswith(b"550 5.7.1 ")  # a bounce releases nothing
    s.cmd("RSET")
    s.cmd("MAIL FROM:<alice@good.test>")
    assert s.cmd("RCPT TO:<release+unknownunknownunknown1@phaserlink.test>").startswith(b"550 5.1.1 ")
    assert s.cmd(f"RCPT TO:<release+{token}@phaserlink.test>") == \
        b"250 2.1.5 Ok, this releases your held print job\r\n"
    assert releaser.released == []
    s.cmd("DATA")
    assert s.send(b"Subject: Re: Release your print job?\r\n\r\nyes\r\n.\r\n").startswith(b"250 ")
    assert releaser.released == [token]
    assert mailbox_files(site, "held") == []  # the reply itself is not a print job


def test_an_auto_reply_to_the_release_mail_releases_nothing(tmp_path, dns):
    site = make_site(tmp_path, f"dns_servers = {dns.address}\n", PRINTERS)
    queue, releaser = FakeQueue(), FakeReleaser()
    token = hold.new_token()
    releaser.held.add(token)
    reply = send(session(site, queue, releaser), "alice@good.test", f"release+{token}@phaserlink.test",
                 b"Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.\r\n")
    assert reply == b"550 5.7.1 an automatic message (Auto-Submitted: auto-replied): releases nothing\r\n"
    assert releaser.released == [] and releaser.held == {token}


def held_rig(tmp_path) -> Rig:
    site = printer_site(tmp_path, notify="received, printed, errors")
    site.path.write_text(site.path.read_text().replace(
        "[printer:lp]\nsender_auth = none\n", "[printer:lp]\nsender_auth = dmarc\nunauthenticated = hold\nhold_timeout = 1h\n"))
    return Rig(tmp_path, config.load(site.path)).start()


def test_a_held_job_prints_once_when_released(tmp_path):
    rig = held_rig(tmp_path)
    token = hold.new_token()
    rig.deliver(printer_message(body=b"%!PS\nheld\n", X_PhaserLink_Hold=f"{token}; printers=lp"))
    assert rig.outputs["lp"].sent == [] and rig.queue.messages == []  # no "received" mail either
    assert rig.service.is_held(token)
    rig.restart()  # the hold survives a restart
    assert rig.service.is_held(token)
    rig.service.release(token)
    rig.settle()
    assert len(rig.outputs["lp"].sent) == 1
    rig.service.release(token)
    rig.settle()
    assert len(rig.outputs["lp"].sent) == 1 and not rig.service.is_held(token)


def test_a_job_never_released_is_canceled_silently(tmp_path):
    rig = held_rig(tmp_path)
    token = hold.new_token()
    rig.deliver(printer_message(body=b"%!PS\nheld\n", X_PhaserLink_Hold=f"{token}; printers=lp"))
    rig.run_for(3600 + 5, step=60)
    assert rig.outputs["lp"].sent == [] and rig.queue.messages == []
    assert not rig.service.is_held(token)
    assert rig.job_dirs() == []

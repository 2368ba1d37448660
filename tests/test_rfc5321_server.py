"""The SMTP server, issue 7 item 7 (RFC 5321) and the full-disk reply, on a
fake transport with a real Maildir: postmaster (4.5.1), Return-Path at final
delivery (4.4), BODY= kept for the queue, 451 4.3.1 for ENOSPC."""

from __future__ import annotations

import errno

import pytest
from twisted.internet import defer

from phaserlink.pop3_store.maildir import Delivery
from phaserlink.pop3_store.postmaster import POSTMASTER_BOX
from support.smtp import FakeQueue, Session, mailbox_files, make_site

GROUPS_ELSEWHERE = """\
[printer:demo]
sender_auth = none
addresses = demo@phaserlink.test
allowed_senders = *@good.example

[printer:office]
sender_auth = none
addresses = office@print.example.org
allowed_senders = *@good.example
"""

MESSAGE = b"Subject: for the postmaster\r\n\r\nyour status mail bounced\r\n.\r\n"


def send(s: Session, sender: str, rcpt: str, body: bytes = MESSAGE) -> bytes:
    s.ehlo()
    assert s.cmd(f"MAIL FROM:<{sender}>") == b"250 2.1.0 Ok\r\n"
    reply = s.cmd(f"RCPT TO:<{rcpt}>")
    if not reply.startswith(b"250"):
        return reply
    assert s.cmd("DATA").startswith(b"354")
    return s.send(body)


@pytest.mark.parametrize("rcpt", [
    "postmaster", "Postmaster", "POSTMASTER@phaserlink.test", "postmaster@PhaserLink.Test",
    "postmaster@print.example.org",  # a printer's domain is ours too
])
@pytest.mark.parametrize("sender", ["", "stranger@bad.example"])  # not an allowed sender; the null one
def test_postmaster_is_accepted_and_kept_in_its_box_never_printed(tmp_path, rcpt, sender):
    site = make_site(tmp_path, sections=GROUPS_ELSEWHERE)
    s = Session(site, peer="192.0.2.7")  # not a relay network either
    reply = send(s, sender, rcpt)
    assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
    [stored] = mailbox_files(site, POSTMASTER_BOX)
    assert stored.startswith(f"Return-Path: <{sender}>\nReceived: ".encode())
    assert stored.endswith(b"\nSubject: for the postmaster\n\nyour status mail bounced\n")
    assert mailbox_files(site, "demo") == [] and mailbox_files(site, "office") == []
    assert s.queue.submitted == []


def test_postmaster_with_an_address_goes_through_the_queue(tmp_path):
    site = make_site(tmp_path, "postmaster = admin@corp.example\n", sections=GROUPS_ELSEWHERE)
    q = FakeQueue()
    s = Session(site, queue=q, peer="192.0.2.7")
    assert send(s, "", "postmaster@phaserlink.test").startswith(b"250 2.0.0 Ok: queued as ")
    [m] = q.committed
    assert (m.mail_from, m.recipients) == ("", ["admin@corp.example"])
    assert m.data.startswith(b"Received: ")  # relayed: no Return-Path of ours
    assert mailbox_files(site, POSTMASTER_BOX) == [] and mailbox_files(site, "demo") == []


def test_postmaster_of_another_domain_is_relaying(tmp_path):
    site = make_site(tmp_path, sections=GROUPS_ELSEWHERE)
    s = Session(site, peer="192.0.2.7")
    assert send(s, "a@good.example", "postmaster@elsewhere.example") == (
        b"550 5.7.1 <postmaster@elsewhere.example>: Relay access denied\r\n")


def test_postmaster_address_in_our_own_domain_falls_back_to_the_box(tmp_path):
    """postmaster = a printer address would be printed (or loop): not done."""
    site = make_site(tmp_path, "postmaster = demo@phaserlink.test\n", sections=GROUPS_ELSEWHERE)
    q = FakeQueue()
    s = Session(site, queue=q)
    assert send(s, "", "postmaster").startswith(b"250 2.0.0 ")
    assert len(mailbox_files(site, POSTMASTER_BOX)) == 1 and mailbox_files(site, "demo") == []
    assert q.submitted == []


def test_printer_mail_gets_return_path_first(tmp_path):
    site = make_site(tmp_path, sections=GROUPS_ELSEWHERE)
    s = Session(site)
    assert send(s, "alice@good.example", "demo@phaserlink.test").startswith(b"250 2.0.0 ")
    [stored] = mailbox_files(site, "demo")
    assert stored.startswith(b"Return-Path: <alice@good.example>\n"
                             b"Authentication-Results: phaserlink.test;\n\tnone\nReceived: from client.example")


@pytest.mark.parametrize("param, kept", [("BODY=8BITMIME", "8BITMIME"), ("BODY=7bit", "7BIT"), ("", None)])
def test_body_parameter_reaches_the_queue(tmp_path, param, kept):
    site = make_site(tmp_path, sections=GROUPS_ELSEWHERE)
    q = FakeQueue()
    s = Session(site, queue=q)  # 127.0.0.1: a relay network
    s.ehlo()
    assert s.cmd(f"MAIL FROM:<a@good.example> {param}".strip()) == b"250 2.1.0 Ok\r\n"
    assert s.cmd("RCPT TO:<u@elsewhere.example>").startswith(b"250 ")
    s.cmd("DATA")
    assert s.send("Subject: \u00e9\r\n\r\n\u00e9t\u00e9\r\n.\r\n".encode()).startswith(b"250 ")
    [m] = q.committed
    assert m.body == kept


class FullDisk(Delivery):
    """The kernel's answer at the fsync of a full disk (the tmpfs test on the
    real appliance covers the write)."""

    def commit(self):
        self.abort()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_enospc_at_commit_is_451_4_3_1_and_the_session_goes_on(tmp_path):
    site = make_site(tmp_path, sections=GROUPS_ELSEWHERE)
    s = Session(site)
    s.store.deliver = lambda names: FullDisk(s.store, [s.store.boxes[n] for n in names])
    reply = send(s, "alice@good.example", "demo@phaserlink.test")
    assert reply == b"451 4.3.1 Error: insufficient system storage, try again later\r\n"
    assert mailbox_files(site, "demo") == []
    assert list((site.appliance.spool / "mail" / "demo" / "tmp").iterdir()) == []
    assert s.cmd("NOOP") == b"250 2.0.0 Ok\r\n"


def test_relay_only_commit_is_not_inline(tmp_path):
    """The queue's commit Deferred is waited for: the 250 follows it."""
    site = make_site(tmp_path, sections=GROUPS_ELSEWHERE)
    q = FakeQueue()
    later: defer.Deferred = defer.Deferred()
    s = Session(site, queue=q)
    s.envelope("a@good.example", "u@elsewhere.example")
    s.cmd("DATA")
    [m] = q.submitted
    m.commit = lambda: later
    assert s.send(b"Subject: x\r\n\r\nx\r\n.\r\nNOOP\r\n") == b""  # held until durable
    later.callback("Q9")
    assert s.take() == b"250 2.0.0 Ok: queued as " + s.proto._message_id.encode() + b"\r\n250 2.0.0 Ok\r\n"


def test_postmaster_keys_are_checked_by_the_config(tmp_path):
    from phaserlink.config import ConfigError

    with pytest.raises(ConfigError) as info:
        make_site(tmp_path, "postmaster = not an address\n", sections=GROUPS_ELSEWHERE)
    assert "postmaster" in str(info.value)
    with pytest.raises(ConfigError) as info:
        make_site(tmp_path, "postmaster_pop3_password = secret\n", sections=GROUPS_ELSEWHERE)
    assert "postmaster_pop3_password" in str(info.value)
    site = make_site(tmp_path, "postmaster = Admin@Corp.Example\n", sections=GROUPS_ELSEWHERE)
    assert site.appliance.postmaster == "admin@corp.example" and site.appliance.postmaster_pop3_password is None


def test_postmaster_pop3_login_opens_only_its_box(tmp_path):
    from twisted.cred.credentials import UsernamePassword

    from phaserlink.pop3_store.auth import IMailbox, build_portal
    from phaserlink.pop3_store.maildir import MaildirStore
    from support.appliance import password_hash

    site = make_site(tmp_path, f"postmaster_pop3_password = {password_hash('pm')}\n", sections=GROUPS_ELSEWHERE)
    store = MaildirStore(site.appliance.spool / "mail", list(site.printers))
    Session(site, store=store)  # the SMTP side adds the box
    portal = build_portal(site, store)
    results: list = []
    portal.login(UsernamePassword(b"postmaster", b"pm"), None, IMailbox).addBoth(results.append)
    _, mailbox, logout = results[0]
    assert mailbox.name == POSTMASTER_BOX
    logout()
    portal.login(UsernamePassword(b"postmaster", b"nope"), None, IMailbox).addBoth(results.append)
    assert results[1].check(Exception) and "invalid" in results[1].getErrorMessage()

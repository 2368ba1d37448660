"""Who may print, on the running appliance (twistd, the real reactor and
thread pools) against a real DNS server (dnsmasq), docs/trust.md.

What a user sees: a DKIM-signed job prints byte for byte; a forged one is
refused with the reason; while DNS does not answer, the sender gets a 451
and other sessions are served meanwhile (the look-ups run in a verifier
worker process, never in the reactor thread); after DNS is back the retry
prints.  Hold mode: the release mail reaches the owner's real mailbox.
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time

import dkim
import pytest

from support.dnsmasq import DnsServer, dkim_key
from support.held import deliver, dmarc_printer, queued_release_mails, release_address
from support.peers import free_port

POSTSCRIPT = b"%!PS-Adobe-3.0\n%%Title: signed\n72 720 moveto (signed job) show showpage\n%%EOF\n"


def job(author: str, subject: str) -> bytes:
    return (f"From: Alice <{author}>\r\nTo: lp@phaserlink.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@good.test>\r\nMIME-Version: 1.0\r\nContent-Type: application/postscript\r\n"
            "\r\n").encode() + POSTSCRIPT.replace(b"\n", b"\r\n")


@pytest.fixture
def signer(tmp_path):
    key, txt = dkim_key(tmp_path, "good")
    dns = DnsServer(tmp_path)
    dns.add_txt("sel._domainkey.good.test", txt)
    dns.add_txt("good.test", "v=spf1 -all")  # SPF never passes here: DKIM must carry it
    dns.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    dns.start()

    def sign(msg: bytes) -> bytes:
        return dkim.sign(msg, b"sel", b"good.test", key.read_bytes(), include_headers=[b"from", b"subject", b"to"],
                         canonicalize=(b"relaxed", b"relaxed")) + msg

    yield dns, sign
    dns.stop()


@pytest.fixture
def site(appliance, signer, tmp_path):
    dns, _ = signer
    out = tmp_path / "printed"
    appliance.appliance_extra = f"dns_servers = {dns.address}\n"
    appliance.sections = dmarc_printer(out)
    appliance.start()
    appliance.printed = out
    return appliance


def printed(app, count=1):
    return app.wait_for(lambda: sorted(app.printed.glob("*")) if len(list(app.printed.glob("*"))) >= count else None,
                        timeout=20, what=f"{count} printed file(s)")


def test_signed_job_prints_and_forged_is_refused(site, signer):
    _, sign = signer
    with smtplib.SMTP("127.0.0.1", site.smtp_port, timeout=20) as client:
        assert client.sendmail("bounce@elsewhere.test", ["lp@phaserlink.test"], sign(job("alice@good.test", "j1"))) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("mallory@evil.test", ["lp@phaserlink.test"], job("alice@good.test", "j2"))
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.26 <alice@good.test> is not authenticated for printer lp: DMARC")
    (path,) = printed(site)
    assert path.read_bytes() == POSTSCRIPT
    time.sleep(0.5)
    assert len(list(site.printed.glob("*"))) == 1


def test_dns_down_is_451_the_reactor_serves_others_and_the_retry_prints(site, signer):
    dns, sign = signer
    msg = sign(job("alice@good.test", "retry"))
    dns.stop()
    result: dict = {}

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", site.smtp_port, timeout=30) as client:
            try:
                client.sendmail("bounce@elsewhere.test", ["lp@phaserlink.test"], msg)
                result["reply"] = (250, b"")
            except smtplib.SMTPDataError as e:
                result["reply"] = (e.smtp_code, e.smtp_error)

    sender = threading.Thread(target=send)
    started = time.monotonic()
    sender.start()
    time.sleep(0.5)  # the first session now waits for DNS (seconds: QUERY_TIMEOUT per look-up)
    greetings = []
    while sender.is_alive() and len(greetings) < 5:
        t = time.monotonic()
        with socket.create_connection(("127.0.0.1", site.smtp_port), timeout=5) as s:
            assert s.recv(100).startswith(b"220 ")
        greetings.append(time.monotonic() - t)
        time.sleep(0.2)
    sender.join(30)
    took = time.monotonic() - started
    code, text = result["reply"]
    assert (code, text[:9]) == (451, b"4.7.0 <al"), text
    assert b"cannot be verified for printer lp now, try again later" in text
    assert took > 2 and greetings and max(greetings) < 0.5, (took, greetings)  # others were served meanwhile
    dns.start()
    deliver(site, ("bounce@elsewhere.test", "lp@phaserlink.test", msg), timeout=20)
    (path,) = printed(site)
    assert path.read_bytes() == POSTSCRIPT


def start_holding(appliance, dns, out, smarthost_port: int) -> None:
    """The appliance with one ``unauthenticated = hold`` printer printing
    into *out*, its mail going to the smarthost on *smarthost_port*."""
    appliance.appliance_extra = (f"dns_servers = {dns.address}\n"
                                 f"smarthost = 127.0.0.1:{smarthost_port}\nsmarthost_tls = none\n"
                                 "queue_retry_min = 1s\nqueue_retry_max = 2s\n")
    appliance.sections = dmarc_printer(out, unauthenticated="hold")
    appliance.start()
    appliance.printed = out


def test_hold_the_release_mail_and_a_reply_print_exactly_once(appliance, signer, tmp_path):
    """unauthenticated = hold on the running appliance: the forged-looking
    job is held (nothing printed), the release mail waits in the outbound
    queue for the From: address (its smarthost does not answer), and a mail to the
    release address it names prints the job once."""
    dns, _ = signer
    out = tmp_path / "printed"
    # A smarthost nobody listens on keeps the release mail in the queue for
    # the test to read (without one, MX delivery would look good.test up).
    start_holding(appliance, dns, out, smarthost_port=free_port())
    deliver(appliance, ("someone@elsewhere.test", "lp@phaserlink.test", job("alice@good.test", "h1")), timeout=20)
    queued = queued_release_mails(appliance, b"Release your print job?", timeout=10,
                                  what="the release mail in the outbound queue")
    text = queued[0].read_bytes().decode()
    assert "To: <alice@good.test>" in text and "Auto-Submitted: auto-replied" in text
    address = release_address(text)
    assert address, text
    time.sleep(1)
    assert list(out.glob("*")) == []
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=20) as client:
        assert client.sendmail("alice@good.test", [address], b"Subject: Re: release\r\n\r\nyes, mine\r\n") == {}
    (path,) = printed(appliance)
    assert path.read_bytes() == POSTSCRIPT
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=20) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("alice@good.test", [address], b"Subject: again\r\n\r\nyes\r\n")
    time.sleep(0.5)
    assert len(list(out.glob("*"))) == 1


def test_hold_the_release_mail_reaches_the_owners_mailbox_and_the_reply_prints_once(appliance, signer, tmp_path):
    """unauthenticated = hold through real mail servers: the appliance's
    smarthost is a real Postfix, which delivers the release mail into the
    sender's real Dovecot mailbox.  The owner reads it over POP3 and replies
    to it as it says, through that same Postfix (the site's MTA), which
    relays the reply to the appliance: the job prints, once; a second reply
    bounces back to the owner and prints nothing."""
    import email
    import email.policy
    import poplib

    from support.dovecot import Dovecot
    from support.postfix import MAILDIR_OWNER, Postfix

    dns, _ = signer
    out = tmp_path / "printed"
    dovecot = Dovecot().start(users={"alice": "alice-pw"})
    mta = Postfix(tmp_path / "mta", myhostname="mx.good.test", main_extra={
        # good.test's mail is delivered into the owner's Dovecot Maildir ...
        "virtual_mailbox_domains": "good.test",
        "virtual_mailbox_base": str(dovecot.dir / "mail"),
        "virtual_mailbox_maps": "static:alice/",
        "virtual_uid_maps": f"static:{MAILDIR_OWNER}",
        "virtual_gid_maps": f"static:{MAILDIR_OWNER}",
        "virtual_minimum_uid": "1",
        # ... and mail to the appliance's domain is relayed to it (no DNS).
        "relay_domains": "phaserlink.test",
        "transport_maps": f"inline:{{phaserlink.test=smtp:[127.0.0.1]:{appliance.smtp_port}}}",
    })
    try:
        mta.start()
        start_holding(appliance, dns, out, smarthost_port=mta.port)

        # Unsigned: not authenticated, from an allowed address: held.
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=20) as client:
            client.ehlo("client.elsewhere.test")
            client.mail("someone@elsewhere.test")
            client.rcpt("lp@phaserlink.test")
            code, text = client.data(job("alice@good.test", "quarterly report"))
        assert code == 250 and b"held for a release on lp" in text, text

        def pop3_messages() -> list:
            box = poplib.POP3("127.0.0.1", dovecot.port, timeout=10)
            try:
                box.user("alice")
                box.pass_("alice-pw")
                count, _ = box.stat()
                return [email.message_from_bytes(b"\n".join(box.retr(i + 1)[1]), policy=email.policy.default)
                        for i in range(count)]
            finally:
                box.quit()

        (release,) = appliance.wait_for(lambda: pop3_messages() or None, timeout=30,
                                        what="the release mail in alice's Dovecot mailbox")
        assert release["Subject"] == "Release your print job? quarterly report"
        assert release["To"].addresses[0].addr_spec == "alice@good.test"
        assert release["Auto-Submitted"] == "auto-replied"
        assert release["Return-Path"] == "<>"  # null sender: no bounce ever answers it
        assert release["Reply-To"].addresses[0].addr_spec.startswith("release+")
        body = release.get_content()
        assert "A print job for lp arrived from your address" in body and "reply to this mail" in body
        assert list(out.glob("*")) == []  # held: nothing printed yet

        def reply(text: str) -> None:
            """What a mail client does with "Reply": to the Reply-To address,
            "Re:" subject, In-Reply-To, quoting; sent through the site's MTA."""
            answer = email.message.EmailMessage()
            answer["From"] = "Alice <alice@good.test>"
            answer["To"] = release["Reply-To"]
            answer["Subject"] = "Re: " + release["Subject"]
            answer["In-Reply-To"] = release["Message-ID"]
            answer["References"] = release["Message-ID"]
            answer.set_content(text + "\n\n> " + body.replace("\n", "\n> "))
            with smtplib.SMTP("127.0.0.1", mta.port, timeout=20) as client:
                assert client.send_message(answer) == {}

        reply("Yes, that was me.")
        (path,) = printed(appliance)
        assert path.read_bytes() == POSTSCRIPT

        # The address was for one release: a second reply prints nothing, and
        # Postfix returns it to alice with the appliance's reason.
        reply("Did it print?")
        bounce = appliance.wait_for(
            lambda: [m for m in pop3_messages() if "Undelivered" in (m["Subject"] or "")] or None,
            timeout=30, what="the bounce of the second reply")[0]
        said = " ".join(bounce.as_string().split())  # Postfix folds the reply it quotes
        assert "said: 550 5.1.1 <release+" in said and "no held print job with this release address" in said
        time.sleep(1)
        assert len(list(out.glob("*"))) == 1
    finally:
        mta.stop()
        dovecot.stop()

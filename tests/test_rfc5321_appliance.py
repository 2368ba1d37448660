"""Issue 7 item 7 on the real appliance (twistd in a subprocess) with real
peers: smtplib as the client, Postfix's smtp-sink as the smarthost, poplib
as the admin's POP3 client, and a real tmpfs filled to ENOSPC.

- postmaster (RFC 5321 4.5.1) bare and at a local domain: relayed to
  ``[appliance] postmaster`` or kept in the postmaster's box (POP3), never
  printed;
- BODY=8BITMIME carried through the queue and declared to the smarthost,
  SIZE= the wire size; a smarthost without 8BITMIME: a 5.6.3 bounce;
- a full spool disk during DATA: 451 4.3.1, then after the disk is freed the
  same message is accepted and printed once.
"""

from __future__ import annotations

import poplib
import smtplib
import time

import pytest

from support.appliance import Appliance, password_hash
from support.sink_wait import saved
from support.smtp_sink import SmtpSink
from test_printer_appliance import POSTSCRIPT, job_mail, printed_files, printer_section

pytestmark = pytest.mark.peer

TO_POSTMASTER = (b"From: <>\r\nTo: postmaster\r\nSubject: Re: your job printed\r\n"
                 b"Message-ID: <reply-1@client.example>\r\n\r\nWho sends me this?\r\n")
EIGHT_BIT = ("From: alice@client.example\r\nTo: bob@elsewhere.example\r\nSubject: caf\u00e9\r\n"
             "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\n\u00e9t\u00e9 \u00e0 Z\u00fcrich\r\n").encode()


class SinkWithout8BitMIME(SmtpSink):
    """smtp-sink -8: does not announce 8BITMIME."""

    def command_line(self) -> list[str]:
        args = super().command_line()
        return [args[0], "-8", *args[1:]]


def test_postmaster_is_relayed_to_the_configured_address(appliance, tmp_path):
    out = tmp_path / "printed"
    with SmtpSink(tmp_path / "sink") as sink:
        appliance.appliance_extra = (f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
                                     "postmaster = admin@corp.example\nrelay_networks = 192.0.2.0/24\n")
        appliance.sections = printer_section("demo", f"file:{out}")
        appliance.start()
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
            # The null sender (a bounce of a status mail), bare postmaster,
            # from a client that may not relay.
            assert smtp.sendmail("", ["postmaster"], TO_POSTMASTER) == {}
            assert smtp.sendmail("bob@client.example", ["PostMaster@phaserlink.test"], TO_POSTMASTER) == {}
        messages = saved(sink, 2)
        assert sorted(m.mail_from for m in messages) == ["", "bob@client.example"]
        assert all(m.recipients == ["admin@corp.example"] for m in messages)
        assert all(m.raw.endswith(b"\n\nWho sends me this?\n") for m in messages)
    time.sleep(0.5)
    assert printed_files(out) == []
    assert list((appliance.spool / "mail" / "demo" / "new").iterdir()) == []


def test_postmaster_without_an_address_is_kept_for_pop3(appliance, tmp_path):
    out = tmp_path / "printed"
    appliance.appliance_extra = f"postmaster_pop3_password = {password_hash('pm-secret')}\n"
    appliance.sections = printer_section("demo", f"file:{out}")
    appliance.start()
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
        assert smtp.sendmail("", ["postmaster@phaserlink.test"], TO_POSTMASTER) == {}
    pop = poplib.POP3("127.0.0.1", appliance.pop3_port, timeout=10)
    try:
        pop.user("postmaster")
        pop.pass_("pm-secret")
        count, _ = pop.stat()
        assert count == 1
        _, lines, _ = pop.retr(1)
        pop.dele(1)
    finally:
        pop.quit()
    # Final delivery: Return-Path first (RFC 5321 4.4), then our Received.
    assert lines[0] == b"Return-Path: <>"
    assert lines[1].startswith(b"Received: from ")
    assert lines[-1] == b"Who sends me this?"
    time.sleep(0.5)
    assert printed_files(out) == []
    # A wrong password does not open it.
    pop = poplib.POP3("127.0.0.1", appliance.pop3_port, timeout=10)
    pop.user("postmaster")
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong")
    pop.close()


def test_8bitmime_is_declared_to_the_smarthost(appliance, tmp_path):
    with SmtpSink(tmp_path / "sink") as sink:
        appliance.appliance_extra = f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
        appliance.sections = "[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\nallowed_senders = *\n"
        appliance.start()
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
            smtp.ehlo("client.example")
            assert smtp.sendmail("alice@client.example", ["bob@elsewhere.example"], EIGHT_BIT,
                                 mail_options=["BODY=8BITMIME"]) == {}
        [message] = saved(sink, 1)
    # smtp-sink records the MAIL FROM parameters (it offers no SIZE, so the
    # wire size is checked byte for byte in tests/test_rfc5321_client.py).
    assert message.mail_params.split() == ["BODY=8BITMIME"]
    assert message.raw.endswith(EIGHT_BIT.replace(b"\r\n", b"\n"))


def test_8bit_mail_to_a_smarthost_without_8bitmime_bounces(appliance, tmp_path):
    with SinkWithout8BitMIME(tmp_path / "sink") as sink:
        appliance.appliance_extra = f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
        appliance.sections = "[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\nallowed_senders = *\n"
        appliance.start()
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
            assert smtp.sendmail("alice@client.example", ["bob@elsewhere.example"], EIGHT_BIT,
                                 mail_options=["BODY=8BITMIME"]) == {}
        [dsn] = saved(sink, 1)  # only the bounce: the 8-bit mail never went out
    assert dsn.mail_from == "" and dsn.recipients == ["alice@client.example"]
    assert b"Status: 5.6.3" in dsn.raw and b"8BITMIME" in dsn.raw
    assert "BODY=8BITMIME" not in dsn.mail_params


def test_full_spool_disk_in_data_is_451_then_accepted_and_printed_once(small_disk, tmp_path):
    out = tmp_path / "printed"
    app = Appliance(small_disk.path, log_dir=tmp_path)
    app.sections = printer_section("demo", f"file:{out}", notify="none")
    app.start()
    try:
        # The printer opens its spool and seen index after SMTP listens: fill
        # the disk only once it has (else it is the start-up that hits ENOSPC).
        app.wait_for(lambda: "resumed from the spool" in app.log(), timeout=20, what="the printer started")
        job = job_mail(POSTSCRIPT + b"%" + b"x" * 200_000 + b"\n")  # more than the write buffer
        small_disk.fill(leave=0)
        with smtplib.SMTP("127.0.0.1", app.smtp_port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as info:
                smtp.send_message(job)
            assert (info.value.smtp_code, info.value.smtp_error[:5]) == (451, b"4.3.1")
            # The session goes on, and so do others.
            assert smtp.noop()[0] == 250
            with smtplib.SMTP("127.0.0.1", app.smtp_port, timeout=10) as other:
                assert other.noop()[0] == 250
            new = small_disk.path / "var" / "mail" / "demo" / "new"
            tmp = small_disk.path / "var" / "mail" / "demo" / "tmp"
            assert list(new.iterdir()) == [] and list(tmp.iterdir()) == []
            small_disk.release()
            smtp.send_message(job)  # the same message, as a client retries it
        [printed] = app.wait_for(lambda: printed_files(out), timeout=20, what="the printed file")
        time.sleep(1.0)
        assert printed_files(out) == [printed]  # once
        assert printed.read_bytes().startswith(POSTSCRIPT)
        assert "Traceback" not in app.log()
    finally:
        app.stop()


def test_full_spool_disk_in_data_of_relayed_mail_is_451_then_relayed_once(small_disk, tmp_path):
    with SmtpSink(tmp_path / "sink") as sink:
        app = Appliance(small_disk.path, log_dir=tmp_path)
        app.appliance_extra = f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
        app.sections = "[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\nallowed_senders = *\n"
        app.start()
        try:
            body = b"Subject: relayed\r\n\r\n" + (b"y" * 76 + b"\r\n") * 3000
            small_disk.fill(leave=0)
            with smtplib.SMTP("127.0.0.1", app.smtp_port, timeout=10) as smtp:
                with pytest.raises(smtplib.SMTPDataError) as info:
                    smtp.sendmail("alice@client.example", ["bob@elsewhere.example"], body)
                assert (info.value.smtp_code, info.value.smtp_error[:5]) == (451, b"4.3.1")
                queue = small_disk.path / "var" / "queue"
                assert [p for d in ("tmp", "data", "env") for p in (queue / d).iterdir()] == []
                small_disk.release()
                assert smtp.sendmail("alice@client.example", ["bob@elsewhere.example"], body) == {}
            [message] = saved(sink, 1)
            assert message.raw.endswith(body.replace(b"\r\n", b"\n"))
            assert "Traceback" not in app.log()
        finally:
            app.stop()

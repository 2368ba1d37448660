"""Issue 8 acceptance, loop protection where no SMTP session of ours
decided: a printer reading a *remote* POP3 mailbox (a real Dovecot).

A bounce (null reverse-path) or an auto-reply (``Auto-Submitted`` other
than ``no``) that lands in that mailbox never passed our RCPT/DATA checks.
Printing it, and sending a status mail in reply, is how a mail loop starts
(the other side's auto-responder answers the status mail, ...).  What the
user checks: nothing of it prints, the mailbox is emptied, no status mail
goes out, and an ordinary job after it prints and is answered.
"""

from __future__ import annotations

import time

import pytest

from support.dovecot import Dovecot
from support.smtp_sink import SmtpSink
from test_printer_appliance import POSTSCRIPT, dovecot_printer_section, job_mail, printed_files, sink_mails

pytestmark = pytest.mark.timeout(180)


def test_bounces_and_auto_replies_in_a_remote_mailbox_never_print_nor_get_status_mail(appliance, tmp_path):
    dovecot = Dovecot()
    try:
        dovecot.start(users={"printer1": "pw"})
        out = tmp_path / "printed"
        with SmtpSink(tmp_path / "sink") as sink:
            appliance.appliance_extra = f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
            appliance.sections = dovecot_printer_section(dovecot, tmp_path, out)
            bounce = job_mail(to="remote@phaserlink.test", sender="MAILER-DAEMON@example.com",
                              subject="Undelivered Mail Returned to Sender", Message_ID="<bounce-1@example.com>")
            bounce_bytes = b"Return-Path: <>\r\n" + bytes(bounce)
            auto = job_mail(to="remote@phaserlink.test", subject="Out of office",
                            Message_ID="<auto-1@example.com>", Auto_Submitted="auto-replied")
            dovecot.deliver("printer1", bounce_bytes)
            dovecot.deliver("printer1", bytes(auto))
            appliance.start()
            appliance.wait_for(lambda: dovecot.messages("printer1") == [], timeout=30, what="Dovecot emptied")
            time.sleep(2)
            assert printed_files(out) == []
            assert sink.messages() == []  # no status mail in reply to a bounce or an auto-reply
            # An ordinary job (Auto-Submitted: no is a person) prints and is answered.
            dovecot.deliver("printer1", bytes(job_mail(to="remote@phaserlink.test", Message_ID="<person@example.com>",
                                                       Auto_Submitted="no")))
            [printed] = appliance.wait_for(lambda: printed_files(out), timeout=30, what="the person's job")
            assert printed.read_bytes() == POSTSCRIPT
            mails = sink_mails(sink, 1)
            assert all(m.recipients == ["alice@example.com"] for m in mails), [m.recipients for m in mails]
            assert b"Undelivered" not in b"".join(m.raw for m in mails) and b"Out of office" not in b"".join(
                m.raw for m in mails)
            assert "auto-replied" in appliance.log() or "Auto-Submitted" in appliance.log()
    finally:
        dovecot.stop()

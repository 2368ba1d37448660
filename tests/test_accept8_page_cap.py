"""Issue 8 acceptance: ``max_pages_per_job`` on the running appliance
(twistd), pages counted with the real Ghostscript before printing.

What the user sees: a job over the cap prints nothing and its sender's
status mail (caught by a real smtp-sink) says the count and the cap; the
console (issue 9) shows the job ``aborted`` with its ``pages``; a job at
the cap prints.
"""

from __future__ import annotations

import pytest

from phaserlink.message.report import parse_status_report
from support.console_http import console_config, job, jobs, wait_console
from support.e2e import wait_until
from support.peers import require_program
from support.smtp_sink import SmtpSink
from test_printer_appliance import job_mail, printed_files, printer_section, send, sink_mails

pytestmark = pytest.mark.timeout(180)


def postscript(pages: int) -> bytes:
    return b"%!PS\n" + b"72 720 moveto /Helvetica findfont 12 scalefont setfont (page) show showpage\n" * pages


def test_a_job_over_the_page_cap_is_aborted_with_count_and_cap_and_one_at_the_cap_prints(appliance, tmp_path):
    require_program("gs", "ghostscript")
    out = tmp_path / "printed"
    with SmtpSink(tmp_path / "sink") as sink:
        appliance.appliance_extra = f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
        appliance.sections = printer_section("capped", f"file:{out}", notify="errors", max_pages_per_job="2")
        port = console_config(appliance)
        appliance.start()
        wait_console(appliance)
        send(appliance, job_mail(postscript(3), to="capped@phaserlink.test", subject="too long",
                                 Message_ID="<long@example.com>"))
        [mail] = sink_mails(sink, 1, timeout=60)
        report = parse_status_report(mail.raw)
        assert mail.recipients == ["alice@example.com"]
        assert report.state == "aborted"
        assert "the job has 3 pages; printer capped prints at most 2 pages per job" in report.human_text
        assert printed_files(out) == []
        [aborted] = wait_until(lambda: [j for j in jobs(port, printer="capped") if j["state"] == "aborted"] or None,
                               30, "the aborted job in the console", appliance.log)
        assert job(port, aborted["id"])["pages"] == 3

        send(appliance, job_mail(postscript(2), to="capped@phaserlink.test", subject="fits",
                                 Message_ID="<fits@example.com>"))
        [printed] = appliance.wait_for(lambda: printed_files(out), timeout=60, what="the job at the cap")
        assert printed.read_bytes() == postscript(2)
        appliance.stop()

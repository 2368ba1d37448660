"""Issue 8 acceptance: ``hold_timeout`` on the running appliance (twistd,
dnsmasq saying the sender is not authenticated): a held job nobody
releases is canceled after the time-out, also across kill -9 and a
restart, with no further mail, and nothing prints.  Seen through the
console (issue 9), as an admin would."""

from __future__ import annotations

import time

import pytest

from support.console_http import call, console_config, job, wait_console
from support.e2e import wait_until
from support.held import deliver, dmarc_printer, printed_files, wait_held_jobs
from test_accept9_sender_hold import dns, message  # noqa: F401  (dns is a fixture)
from test_console_appliance import metric

pytestmark = pytest.mark.timeout(180)


def test_an_unreleased_job_is_canceled_after_hold_timeout_across_kill9_without_more_mail(
        appliance, dns, tmp_path):  # noqa: F811
    out = tmp_path / "printed"
    appliance.appliance_extra = f"dns_servers = {dns.address}\n"
    appliance.sections = dmarc_printer(out, unauthenticated="hold", hold_timeout="6s", notify="printed, errors")
    port = console_config(appliance)  # its smarthost does not answer: the mail stays in the queue
    appliance.start()
    wait_console(appliance)
    deliver(appliance, ("alice@good.test", "lp@phaserlink.test",
                        message("alice@good.test", "lp@phaserlink.test", "never-released")))
    [held] = wait_held_jobs(appliance, port)
    wait_until(lambda: call(port, "GET", "/api/v1/queue").json()["messages"], 20, "the release mail")
    appliance.kill9()
    appliance.start()
    wait_console(appliance)
    assert job(port, held["id"])["state"] == "pending-held"  # still held after the restart
    ended = wait_until(lambda: (lambda j: j if j["state"] == "canceled" else None)(job(port, held["id"])), 30,
                       "the held job canceled after hold_timeout", appliance.log)
    assert "job-hold-until-specified" in ended["state_reasons"], ended
    time.sleep(1)
    assert printed_files(out) == []
    queued = call(port, "GET", "/api/v1/queue").json()["messages"]
    assert len(queued) == 1 and queued[0]["recipients"] == ["alice@good.test"], queued  # the release mail only
    assert metric(port, "phaserlink_jobs_total", printer="lp", state="canceled") == 1
    appliance.stop()

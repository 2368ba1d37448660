"""Issue 9 acceptance, where it meets issue 8: a job held for sender
release, seen and released through the console, on the real appliance
(twistd) with a real DNS server (dnsmasq) deciding that the sender is not
authenticated.

What an admin (or a script) checks, with exactly the names the issue
gives: the job list and the job's JSON fields, ``phaserlink-admin --json``,
``release`` through the CLI (exit 0, then 1 when the state no longer
allows it), the job printed exactly once, ``retry`` of a job waiting for
its printer (200) and ``phaserlink_jobs_total``.
"""

from __future__ import annotations

import json
import smtplib
import time

import pytest

from support.console_http import admin_cli, call, console_config, job, wait_console
from support.dnsmasq import DnsServer
from support.e2e import wait_until
from support.held import deliver, dmarc_printer, printed_files, queued_release_mails, release_address, wait_held_jobs
from support.peers import free_port
from test_console_appliance import metric

pytestmark = pytest.mark.timeout(180)

POSTSCRIPT = b"%!PS-Adobe-3.0\n%%Title: held\n72 720 moveto (held job) show showpage\n%%EOF\n"
JOB_KEYS = {"id", "printer", "sender", "title", "state", "state_reasons", "size", "pages", "fragments", "auth",
            "created", "timeline"}
PRINTER_KEYS = {"name", "state", "state_reasons", "jobs_waiting", "output"}


def message(author: str, to: str, subject: str) -> bytes:
    return (f"From: Alice <{author}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@good.test>\r\nMIME-Version: 1.0\r\nContent-Type: application/postscript\r\n"
            "\r\n").encode() + POSTSCRIPT.replace(b"\n", b"\r\n")


@pytest.fixture
def dns(tmp_path):
    server = DnsServer(tmp_path)
    server.add_txt("good.test", "v=spf1 -all")  # nothing passes: every mail from good.test is unauthenticated
    server.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    server.start()
    yield server
    server.stop()


def test_a_job_held_for_sender_release_is_released_from_the_cli_and_prints_once(appliance, dns, tmp_path):
    out = tmp_path / "printed"
    appliance.appliance_extra = f"dns_servers = {dns.address}\n"
    appliance.sections = dmarc_printer(out, unauthenticated="hold") + f"""\
[printer:down]
addresses = down@phaserlink.test
output = socket://127.0.0.1:{free_port()}
allowed_senders = *
sender_auth = none
formats = postscript
notify = none

"""
    port = console_config(appliance)
    appliance.start()
    wait_console(appliance)

    # Not authenticated (SPF -all, no signature): a 250, and the job is held.
    deliver(appliance, ("alice@good.test", "lp@phaserlink.test",
                        message("alice@good.test", "lp@phaserlink.test", "hold-me")),
            ("bob@elsewhere.test", "down@phaserlink.test",
             message("bob@elsewhere.test", "down@phaserlink.test", "waiting")))

    # The CLI's --json list, filtered by printer and state, with the names.
    def held_list():
        done = admin_cli(port, "--json", "jobs", "--printer", "lp", "--state", "pending-held")
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
        return listed if listed else None

    [held] = wait_until(held_list, 30, "the held job in phaserlink-admin jobs", appliance.log)
    assert JOB_KEYS - {"timeline"} <= set(held), sorted(JOB_KEYS - set(held))
    assert held["state"] == "pending-held" and "job-hold-until-specified" in held["state_reasons"], held
    assert held["printer"] == "lp" and held["sender"] == "alice@good.test" and held["title"] == "hold-me"

    full = job(port, held["id"])
    assert JOB_KEYS <= set(full), sorted(JOB_KEYS - set(full))
    assert full["auth"], "the job's authentication result is known and shown"
    assert "dmarc=fail" in json.dumps(full["auth"]) or "fail" in json.dumps(full["auth"]), full["auth"]
    for entry in full["timeline"]:
        assert {"at", "state", "state_reasons", "by"} <= set(entry), entry
    assert full["timeline"][-1]["state"] == "pending-held"

    api_list = call(port, "GET", "/api/v1/jobs?printer=lp").json()
    assert set(api_list) >= {"jobs", "next"} and [j["id"] for j in api_list["jobs"]] == [held["id"]]
    printers = call(port, "GET", "/api/v1/printers").json()["printers"]
    assert all(PRINTER_KEYS <= set(p) for p in printers), printers
    assert {p["name"]: p["jobs_waiting"] for p in printers}["lp"] == 1
    time.sleep(1)
    assert printed_files(out) == []  # held: nothing printed

    # Release from the CLI: exit 0, the job prints once.
    done = admin_cli(port, "release", held["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: job(port, held["id"])["state"] == "completed", 30, "the released job printed",
               appliance.log)
    [printed] = list(out.glob("*"))
    assert printed.read_bytes() == POSTSCRIPT
    # A second release is refused by the state (409): exit 1, and nothing more prints.
    again = admin_cli(port, "release", held["id"])
    assert again.returncode == 1, again.stdout + again.stderr
    assert call(port, "POST", f"/api/v1/jobs/{held['id']}/release").code == 409
    shown = admin_cli(port, "--json", "show", held["id"])
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "completed"
    assert admin_cli(port, "show", "no-such-job").returncode == 1
    time.sleep(1)
    assert len(list(out.glob("*"))) == 1
    assert metric(port, "phaserlink_jobs_total", printer="lp", state="completed") == 1
    assert metric(port, "phaserlink_jobs_total", printer="lp", state="canceled") == 0
    # The histograms a monitoring person expects saw the one finished job.
    assert metric(port, "phaserlink_job_latency_seconds_count", printer="lp") == 1
    assert metric(port, "phaserlink_job_size_bytes_count", printer="lp") == 1
    assert metric(port, "phaserlink_job_size_bytes_sum", printer="lp") == len(POSTSCRIPT)
    assert metric(port, "phaserlink_smtp_messages_total", stage="data", outcome="accepted", status="2.0.0") == 2

    # The release mail waits in the outbound queue (console_config's smarthost
    # does not answer): the queue in the API, the CLI and the metrics.
    queued = wait_until(lambda: call(port, "GET", "/api/v1/queue").json()["messages"], 20, "the release mail")
    assert [m["recipients"] for m in queued] == [["alice@good.test"]], queued
    assert {"attempts", "next_attempt", "last_reply"} <= set(queued[0]), queued[0]
    assert metric(port, "phaserlink_outbound_queue_depth") == 1
    assert metric(port, "phaserlink_outbound_queue_oldest_age_seconds") > 0
    listed = admin_cli(port, "queue")
    assert listed.returncode == 0 and queued[0]["id"] in listed.stdout and "alice@good.test" in listed.stdout
    assert admin_cli(port, "queue", "retry", "no-such-message").returncode == 1

    # Retry-now of a job waiting for a printer that is down: 200 with its state.
    [waiting] = wait_held_jobs(appliance, port, printer="down", what="the job waiting for its printer")
    assert "printer-stopped" in waiting["state_reasons"], waiting
    answer = call(port, "POST", f"/api/v1/jobs/{waiting['id']}/retry")
    assert answer.code == 200, answer.body
    assert answer.json()["id"] == waiting["id"] and answer.json()["state"] in ("pending", "processing",
                                                                                 "pending-held")
    retried = admin_cli(port, "retry", waiting["id"])
    assert retried.returncode in (0, 1), retried.stderr  # 409 if the retry above is still running
    appliance.stop()


def test_a_held_job_canceled_in_the_console_never_prints_when_its_owner_replies(appliance, dns, tmp_path):
    """Cancel is final: the owner's reply to the release mail, arriving after
    an operator canceled the held job, prints nothing."""
    out = tmp_path / "printed"
    appliance.appliance_extra = f"dns_servers = {dns.address}\n"
    appliance.sections = dmarc_printer(out, unauthenticated="hold")
    port = console_config(appliance)
    appliance.start()
    wait_console(appliance)
    deliver(appliance, ("alice@good.test", "lp@phaserlink.test",
                        message("alice@good.test", "lp@phaserlink.test", "cancel-me")))
    [held] = wait_held_jobs(appliance, port)
    queued = queued_release_mails(appliance, b"release+", timeout=20)
    address = release_address(queued[0].read_bytes().decode(errors="replace"))
    assert address, queued[0].read_bytes()[:2000]
    done = admin_cli(port, "cancel", held["id"])
    assert done.returncode == 0, done.stderr
    assert job(port, held["id"])["state"] == "canceled"
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=30) as client:
        try:
            client.sendmail("alice@good.test", [address], b"Subject: Re: release\r\n\r\nyes\r\n")
        except smtplib.SMTPRecipientsRefused:
            pass  # refusing the release address is as good: nothing is held under it
    time.sleep(2)
    assert job(port, held["id"])["state"] == "canceled"
    assert printed_files(out) == []
    appliance.stop()

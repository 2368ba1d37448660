"""The console on the real appliance (twistd), with real printers: the
API, phaserlink-admin, kill -9, LPRng and p910nd frozen with SIGSTOP
mid-send, roles, Basic auth, CSRF, and /metrics read with
prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.console_http import (
    OPERATOR,
    VIEWER,
    Browserless,
    admin_cli,
    call,
    console_config,
    job,
    jobs,
    wait_console,
)
from support.e2e import MARKER, SENDER, postscript, printer_section, sha256, wait_until
from support.lpd import LPRngServer
from support.p910nd import P910ndPrinter
from support.peers import free_port
from test_e2e_crash import growing_file, send

pytestmark = pytest.mark.timeout(180)

BIG = 40 * 1024 * 1024  # a send that takes many reads: there is time to freeze the printer


def start(app):
    app.start()
    wait_console(app)
    return app.admin_port


def only_job(port: int, printer: str, state: str | None = None, timeout: float = 30) -> dict:
    def found():
        js = jobs(port, printer=printer)
        return js if len(js) == 1 and (state is None or js[0]["state"] == state) else None

    [j] = wait_until(found, timeout, f"one {state or ''} job on {printer} in the console")
    return j


def metric(port: int, name: str, **labels) -> float:
    answer = call(port, "GET", "/metrics")
    assert answer.code == 200
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


def test_cancel_a_job_held_for_a_dead_printer_survives_kill9(appliance):
    """Printer down -> pending-held/printer-stopped; cancel; the printer
    comes back and prints nothing; kill -9 and restart: still canceled."""
    printer = P910ndPrinter()
    try:
        appliance.sections = printer_section("raw", printer.uri(), notify="errors")
        port = console_config(appliance)
        start(appliance)
        send(appliance, "raw", postscript(marker=MARKER, seed=b"held"))
        held = only_job(port, "raw", "pending-held")
        assert "printer-stopped" in held["state_reasons"]
        assert held["sender"] == SENDER and held["printer"] == "raw"
        printers = {p["name"]: p for p in call(port, "GET", "/api/v1/printers").json()["printers"]}
        assert printers["raw"]["jobs_waiting"] == 1

        done = admin_cli(port, "cancel", held["id"])
        assert done.returncode == 0, done.stderr
        assert "canceled" in done.stdout
        after = job(port, held["id"])
        assert after["state"] == "canceled"
        assert after["timeline"][-1]["by"] == OPERATOR[0]
        again = call(port, "POST", f"/api/v1/jobs/{held['id']}/cancel")
        assert again.code == 409
        assert admin_cli(port, "cancel", held["id"]).returncode == 1
        # The sender is told (notify = errors): the status mail waits in the
        # outbound queue (its smarthost does not answer: support/console_http.py).
        queue = wait_until(lambda: call(port, "GET", "/api/v1/queue").json()["messages"], 10, "the status mail")
        assert [m["recipients"] for m in queue] == [[SENDER]]
        assert [(m["recipient"], m["next_try"] == m["next_attempt"]) for m in queue] == [(SENDER, True)]
        [mail] = job(port, held["id"])["mails"]  # the job's page shows what it said
        assert mail["event"] == "failed" and "canceled by operator olga" in mail["text"]
        # 409 while a delivery attempt is under way, 200 once it is back in the queue.
        wait_until(lambda: call(port, "POST", f"/api/v1/queue/{queue[0]['id']}/delete").code == 200, 10,
                   "the queued mail deleted")
        assert call(port, "GET", "/api/v1/queue").json()["messages"] == []
        assert metric(port, "phaserlink_jobs_total", printer="raw", state="canceled") == 1
        assert metric(port, "phaserlink_jobs_total", printer="raw", state="completed") == 0

        printer.start()
        appliance.kill9()
        start(appliance)
        assert job(port, held["id"])["state"] == "canceled"
        # A new job prints: the printer is up, and the canceled one never came.
        data = postscript(marker=MARKER, seed=b"after")
        send(appliance, "raw", data)
        [printed] = wait_until(lambda: printer.jobs(), 30, "the second job at the printer", appliance.log)
        assert sha256(printed) == sha256(data)
        wait_until(lambda: any(j["state"] == "completed" for j in jobs(port, printer="raw")), 30, "completed")
        assert len(printer.jobs()) == 1
        assert admin_cli(port, "show", held["id"]).stdout.count("canceled") >= 1
    finally:
        appliance.stop()
        printer.cleanup()


def test_cancel_mid_send_to_frozen_lprng_prints_nothing(appliance):
    lpd = LPRngServer()
    try:
        lpd.start()
        appliance.sections = printer_section("lp", lpd.uri())
        port = console_config(appliance)
        start(appliance)
        send(appliance, "lp", postscript(marker=MARKER, size=BIG, seed=b"lpd-cancel"))
        queue_dir = lpd.base / "spool" / "raw"
        wait_until(lambda: growing_file(queue_dir, "temp*", 1 << 20), 60, "LPRng receiving the data file",
                   appliance.log, interval=0.001)
        lpd.pause()
        try:
            sending = only_job(port, "lp", "processing")
            answer = call(port, "POST", f"/api/v1/jobs/{sending['id']}/cancel")
            assert answer.code == 200, answer.body
            assert answer.json()["state"] == "canceled"
        finally:
            lpd.resume()
        timeline = job(port, sending["id"])["timeline"]
        assert "made no job" in timeline[-1]["detail"]
        lpd.wait_idle()
        # Give LPRng the time it would take to print a job that was made.
        small = postscript(marker=MARKER, seed=b"lpd-next")
        send(appliance, "lp", small)
        wait_until(lambda: lpd.jobs(), 30, "the next job at lpd", appliance.log)
        lpd.wait_idle()
        [printed] = lpd.jobs()  # the next job only: the canceled one was never made
        assert sha256(printed) == sha256(small)
    finally:
        appliance.stop()
        lpd.cleanup()


def test_cancel_mid_send_to_frozen_p910nd_says_partial_copy(appliance):
    printer = P910ndPrinter()
    try:
        printer.start()
        appliance.sections = printer_section("raw", printer.uri())
        port = console_config(appliance)
        start(appliance)
        data = postscript(marker=MARKER, size=BIG, seed=b"raw-cancel")
        send(appliance, "raw", data)
        wait_until(lambda: growing_file(printer.out, ".tmp-*", 1 << 20), 60, "p910nd receiving the job",
                   appliance.log)
        printer.pause()
        try:
            sending = only_job(port, "raw", "processing")
            answer = call(port, "POST", f"/api/v1/jobs/{sending['id']}/cancel")
            assert answer.code == 200, answer.body
        finally:
            printer.resume()
        view = job(port, sending["id"])
        assert view["state"] == "canceled"
        assert "partial copy" in view["timeline"][-1]["detail"]
        [cut] = wait_until(lambda: printer.jobs(), 30, "p910nd to end the cut-off job")
        assert len(cut.read_bytes()) < len(data)  # a partial copy, never the whole job
        appliance.kill9()
        start(appliance)
        assert job(port, sending["id"])["state"] == "canceled"
        assert len(printer.jobs()) == 1  # not sent again after restart
    finally:
        appliance.stop()
        printer.cleanup()


def test_pause_holds_jobs_pending_through_kill9_then_resume_prints(appliance, tmp_path):
    out = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out}")
    port = console_config(appliance)
    start(appliance)
    answer = call(port, "POST", "/api/v1/printers/demo/pause")
    assert answer.code == 200
    assert (answer.json()["state"], answer.json()["state_reasons"]) == ("stopped", ["paused"])
    assert call(port, "POST", "/api/v1/printers/demo/pause").code == 409
    send(appliance, "demo", postscript(marker=MARKER, seed=b"paused"))
    waiting = only_job(port, "demo", "pending")
    appliance.kill9()
    start(appliance)
    assert call(port, "GET", "/api/v1/printers/demo").json()["state_reasons"] == ["paused"]
    assert job(port, waiting["id"])["state"] == "pending"
    assert not list(out.glob("*")) if out.exists() else True
    # hold and release while paused
    assert call(port, "POST", f"/api/v1/jobs/{waiting['id']}/hold").json()["state"] == "pending-held"
    assert call(port, "POST", f"/api/v1/jobs/{waiting['id']}/retry").code == 409
    assert call(port, "POST", f"/api/v1/jobs/{waiting['id']}/release").json()["state"] == "pending"
    done = admin_cli(port, "resume", "demo")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: job(port, waiting["id"])["state"] == "completed", 30, "the job printed after resume",
               appliance.log)
    assert len(list(out.glob("*"))) == 1


def test_roles_basic_auth_and_csrf(appliance, tmp_path):
    appliance.sections = printer_section("demo", f"file:{tmp_path / 'printed'}")
    port = console_config(appliance)
    start(appliance)
    call(port, "POST", "/api/v1/printers/demo/pause")
    send(appliance, "demo", postscript(marker=MARKER, seed=b"roles"))
    waiting = only_job(port, "demo", "pending")

    assert call(port, "GET", "/api/v1/jobs", auth=None).code == 401
    wrong = call(port, "GET", "/api/v1/jobs", auth=(OPERATOR[0], "nope"))
    assert wrong.code == 401
    assert call(port, "GET", f"/api/v1/jobs/{waiting['id']}", auth=VIEWER).code == 200
    assert call(port, "POST", f"/api/v1/jobs/{waiting['id']}/cancel", auth=VIEWER).code == 403
    assert admin_cli(port, "cancel", waiting["id"], creds=VIEWER).returncode == 1
    assert call(port, "POST", "/api/v1/jobs/no-such-job/cancel").code == 404
    assert admin_cli(port, "cancel", "no-such-job").returncode == 1
    assert metric(port, "phaserlink_console_failed_logins_total") == 1
    assert metric(port, "phaserlink_login_attempts_total", outcome="rejected") == 1
    assert metric(port, "phaserlink_sessions_open", protocol="smtp") == 0
    assert metric(port, "phaserlink_jobs_waiting", printer="demo") == 1
    assert metric(port, "phaserlink_printer_paused", printer="demo") == 1
    # Messages accepted and refused, by stage and status: the one job above,
    # and a recipient nobody prints for.
    import smtplib

    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as client:
        client.ehlo("metrics.test")
        client.mail(SENDER)
        code, text = client.rcpt("nobody@phaserlink.test")
    status = text.decode().split()[0]
    assert code == 550 and status.startswith("5.")
    assert metric(port, "phaserlink_smtp_messages_total", stage="data", outcome="accepted", status="2.0.0") == 1
    assert metric(port, "phaserlink_smtp_messages_total", stage="rcpt", outcome="refused", status=status) == 1

    browser = Browserless(port)
    csrf = browser.login(*OPERATOR)
    refused = browser.post(f"/jobs/{waiting['id']}/cancel", {"op": "cancel"})
    assert refused.code == 403
    assert job(port, waiting["id"])["state"] == "pending"
    accepted = browser.post(f"/jobs/{waiting['id']}/cancel", {"op": "cancel", "csrf": csrf, "back": "/"})
    assert accepted.code == 303
    assert job(port, waiting["id"])["state"] == "canceled"
    assert call(port, "GET", "/healthz", auth=None).body == b"ok\n"
    assert admin_cli(port, "printers").returncode == 0
    assert admin_cli(free_port(), "printers").returncode == 75


def _fragment(number: int, total: int, body: bytes) -> bytes:
    return (f"From: {SENDER}\r\nTo: demo@phaserlink.test\r\nSubject: part {number}\r\n"
            f"Message-ID: <frag{number}-console@example.com>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: message/partial; id="console-set@example.com"; number={number}; total={total}\r\n\r\n'
            ).encode() + body


def test_cancel_incomplete_fragment_set_then_the_rest_arrives_and_is_dropped(appliance, tmp_path):
    import smtplib

    out = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out}")
    port = console_config(appliance)
    start(appliance)
    inner = (f"From: {SENDER}\r\nSubject: split job\r\nMIME-Version: 1.0\r\n"
             "Content-Type: application/postscript\r\n\r\n").encode() + postscript(marker=MARKER).replace(b"\n", b"\r\n")
    half = len(inner) // 2
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
        smtp.sendmail(SENDER, ["demo@phaserlink.test"], _fragment(1, 2, inner[:half]))
    incoming = only_job(port, "demo", "pending-held")
    assert "job-incoming" in incoming["state_reasons"]
    assert incoming["fragments"] == {"received": 1, "total": 2}
    assert call(port, "POST", f"/api/v1/jobs/{incoming['id']}/cancel").json()["state"] == "canceled"
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
        smtp.sendmail(SENDER, ["demo@phaserlink.test"], _fragment(2, 2, inner[half:]))
    mailbox = appliance.spool / "mail" / "demo" / "new"
    wait_until(lambda: not list(mailbox.iterdir()), 30, "the second fragment taken from the mailbox", appliance.log)
    assert [j["state"] for j in jobs(port, printer="demo")] == ["canceled"]
    assert not out.exists() or list(out.iterdir()) == []

"""The printer side through the real appliance (twistd in a subprocess):
smtplib sends, a file: / p910nd printer receives, smtp-sink gets the
status mail, and kill -9 proves what survives."""

from __future__ import annotations

import smtplib
import statistics
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from phaserlink.message.report import parse_status_report

POSTSCRIPT = b"%!PS-Adobe-3.0\n%%Title: test\n/Helvetica findfont 12 scalefont setfont\n" \
             b"72 720 moveto (PhaserLink \xe9 test) show showpage\n%%EOF\n"


def printer_section(name: str, output: str, notify: str = "printed, errors", **extra) -> str:
    lines = [f"[printer:{name}]", "sender_auth = none", f"addresses = {name}@phaserlink.test", f"output = {output}",
             "allowed_senders = *@example.com", "formats = postscript", f"notify = {notify}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def job_mail(data: bytes = POSTSCRIPT, to: str = "demo@phaserlink.test", subject: str = "Quarterly report",
             sender: str = "alice@example.com", **headers) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content("Please print the attachment.\n")
    msg.add_attachment(data, maintype="application", subtype="postscript", filename="report.ps")
    return msg


def send(appliance, msg: EmailMessage) -> float:
    """Send; return the monotonic time the 250 to DATA was read."""
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
        smtp.send_message(msg)
        return time.monotonic()


def printed_files(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def test_a_mailed_postscript_job_is_printed_byte_for_byte(appliance, tmp_path):
    out = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out}")
    appliance.start()
    send(appliance, job_mail())
    [job] = appliance.wait_for(lambda: printed_files(out), what="the printed file")
    assert job.read_bytes() == POSTSCRIPT
    spool = appliance.spool / "jobs" / "demo"
    appliance.wait_for(lambda: [p for p in spool.iterdir() if p.is_dir() and p.name != "incoming"] == [],
                       what="the job to leave the spool")
    assert list((appliance.spool / "mail" / "demo" / "new").iterdir()) == []


def test_latency_from_250_to_the_printer(appliance, tmp_path):
    """100 small jobs in a row on an idle appliance: no polling delay."""
    out = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out}")
    appliance.start()
    latencies = []
    for i in range(100):
        data = POSTSCRIPT + f"% job {i}\n".encode()
        acked = send(appliance, job_mail(data, subject=f"job {i}"))
        deadline = acked + 5
        while len(printed_files(out)) <= i:
            assert time.monotonic() < deadline, appliance.log()[-3000:]
            time.sleep(0.001)
        latencies.append(time.monotonic() - acked)
    median = statistics.median(latencies)
    p99 = sorted(latencies)[98]
    print(f"\nlatency 250 -> printer file: median {median * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
          " (target: median < 50 ms, p99 < 250 ms; bench/ measures it at a p910nd)")
    # What a user checks: well under a second, so no polling interval is in
    # the path.  (The tighter target is the benchmark's: disks differ in CI.)
    assert median < 0.25 and p99 < 1.0


def test_kill9_after_spool_before_print_prints_exactly_once(appliance, tmp_path):
    """The printer is down when the job is spooled; twistd is killed; after a
    restart with the printer up, the job prints once."""
    from support.peers import free_port

    port = free_port()  # nothing listens: the job is held, printer-stopped
    appliance.sections = printer_section("lp", f"socket://127.0.0.1:{port}")
    appliance.start()
    send(appliance, job_mail(to="lp@phaserlink.test"))
    spool = appliance.spool / "jobs" / "lp"

    def held():
        for d in spool.iterdir():
            state = d / "state.json"
            if state.exists() and '"printer-stopped"' in state.read_text():
                return True
        return False

    appliance.wait_for(held, what="the job held for the down printer")
    appliance.kill9()
    from support.p910nd import P910ndPrinter

    with P910ndPrinter(port=port) as printer:
        appliance.start()
        [job] = printer.wait_for_jobs(1, timeout=20)
        assert job.read_bytes() == POSTSCRIPT
        time.sleep(1.0)  # nothing more comes
        assert len(printer.jobs()) == 1


def test_kill9_between_spool_and_delete_prints_once(appliance, tmp_path):
    """A job spooled but still in the mailbox (the crash came before the
    delete) is recognised at restart and printed once."""
    out = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out}")
    appliance.start()
    send(appliance, job_mail())
    appliance.wait_for(lambda: printed_files(out), what="the first print")
    appliance.stop()
    # Put the same message back in the mailbox, as if its delete had been lost.
    box = appliance.spool / "mail" / "demo"
    from phaserlink.printer.journal import SEEN_FILE, SeenIndex

    seen = SeenIndex(appliance.spool / "jobs" / "demo" / SEEN_FILE)
    seen.open(time.time())
    uidl = seen.records("uidl")[0]["v"]
    seen.close()
    (box / "new" / f"{uidl},S=10,W=11").write_bytes(b"From: alice@example.com\nSubject: x\n\nagain\n")
    appliance.start()
    appliance.wait_for(lambda: list((box / "new").iterdir()) == [], what="the stale copy to be deleted")
    assert len(printed_files(out)) == 1


def test_raw_printer_down_then_back_up_gets_its_job(appliance, tmp_path):
    from support.p910nd import P910ndPrinter
    from support.peers import free_port

    port = free_port()
    appliance.sections = printer_section("lp", f"socket://127.0.0.1:{port}")
    appliance.start()
    send(appliance, job_mail(to="lp@phaserlink.test"))
    time.sleep(0.5)  # the first attempt fails: nothing listens yet
    with P910ndPrinter(port=port) as printer:
        [job] = printer.wait_for_jobs(1, timeout=20)  # the 5 s retry reaches it
        assert job.read_bytes() == POSTSCRIPT


def sink_mails(sink, count: int, timeout: float = 20.0):
    """smtp-sink creates its file before the data is in: wait for complete ones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in sink.messages() if m.raw.rstrip().endswith(b"--")]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"smtp-sink has {len(sink.messages())} of {count} status mails")


def test_status_mail_reaches_the_sender_as_a_multipart_report(appliance, tmp_path):
    from support.smtp_sink import SmtpSink

    out = tmp_path / "printed"
    with SmtpSink(tmp_path / "sink") as sink:
        appliance.appliance_extra = f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
        appliance.sections = printer_section("demo", f"file:{out}", notify="received, printed, errors")
        appliance.start()
        send(appliance, job_mail(Message_ID="<job-1@example.com>", X_PhaserLink_Notify="printed",
                                 X_PhaserLink_Job_Id="laptop-42"))
        appliance.wait_for(lambda: printed_files(out), what="the print")
        [mail] = sink_mails(sink, 1)
        assert mail.mail_from == "" and mail.recipients == ["alice@example.com"]
        report = parse_status_report(mail.raw)
        assert report is not None, mail.raw[:2000]
        assert report.printer == "demo" and report.state == "completed" and report.event == "printed"
        assert report.original_message_id == "<job-1@example.com>"
        # The id the sender's client chose comes back, for `phaserlink status JOB`.
        assert report.extra.get("X-PhaserLink-Sender-Job-Id") == "laptop-42"
        assert report.disposition and report.disposition.endswith("processed")
        assert "Quarterly report" in report.human_text
        # An unprintable job is answered with the reason.
        bad = EmailMessage()
        bad["From"], bad["To"], bad["Subject"] = "alice@example.com", "demo@phaserlink.test", "pcl for a postscript printer"
        bad["Message-ID"] = "<job-2@example.com>"
        bad.set_content("see attached")
        bad.add_attachment(b"\x1bE\x1b&l0O\x1b(s0p12h10v0s0b3T Hello PCL\x1bE", maintype="application",
                           subtype="vnd.hp-pcl", filename="a.pcl")
        send(appliance, bad)
        mails = sink_mails(sink, 3)  # + "received" and "failed" for job 2
        # The queue delivers concurrently: the two may arrive in either order.
        reports = sorted((parse_status_report(m.raw) for m in mails[1:]), key=lambda r: r.event != "received")
        assert [r.event for r in reports] == ["received", "failed"]
        report = reports[1]
        assert report.state == "aborted" and "document-format-error" in report.reasons
        assert report.disposition.endswith("processed/error")
        assert "a pcl document cannot be converted" in report.human_text, report.human_text
        # A job whose author is a stranger (envelope allowed, From: not) is
        # refused in the SMTP session, with the reason (docs/trust.md): never
        # accepted and then dropped, and no backscatter mail.
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.send_message(job_mail(sender="mallory@evil.example"), from_addr="alice@example.com")
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            550, b"5.7.1 sender <mallory@evil.example> is not allowed to print on demo")
        time.sleep(0.5)
        assert len(sink.messages()) == 3
        assert len(printed_files(out)) == 1


def test_mpack_fragments_reassemble_in_any_order_and_print_once(appliance, tmp_path):
    """Debian's mpack splits a PostScript file into message/partial mails;
    they arrive shuffled, one twice, and print as the original bytes."""
    import random
    import subprocess

    from support.peers import require_program

    mpack = require_program("mpack")
    out = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out}")
    appliance.start()
    doc = tmp_path / "big.ps"
    rng = random.Random(7)
    lines = [b"%!PS"] + [b"% " + bytes(rng.choice(b"abcdefghij0123456789") for _ in range(70)) for _ in range(3000)]
    doc.write_bytes(b"\n".join(lines + [b"showpage", b""]))
    subprocess.run([mpack, "-s", "Big PS", "-m", "40000", "-o", str(tmp_path / "part"), str(doc)], check=True)
    parts = sorted(tmp_path.glob("part.*"))
    assert len(parts) >= 4
    order = parts[:]
    rng.shuffle(order)
    order.insert(2, order[0])  # a relay delivers one twice
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
        for part in order:
            data = b"From: alice@example.com\nTo: demo@phaserlink.test\n" + part.read_bytes()
            smtp.sendmail("alice@example.com", ["demo@phaserlink.test"], data.replace(b"\n", b"\r\n"))
    [job] = appliance.wait_for(lambda: printed_files(out), timeout=20, what="the reassembled job")
    assert job.read_bytes() == doc.read_bytes()
    time.sleep(0.5)
    assert len(printed_files(out)) == 1
    assert list((appliance.spool / "mail" / "demo" / "new").iterdir()) == []


def test_lpd_printer_gets_the_job_with_title_user_and_copies(appliance, tmp_path):
    from support.lpd import LPRngServer

    with LPRngServer(queues=("raw",)) as lpd:
        appliance.sections = printer_section("office", lpd.uri("raw"))
        appliance.start()
        send(appliance, job_mail(to="office@phaserlink.test", X_PhaserLink_Copies="2"))
        jobs = lpd.wait_for_jobs(2, timeout=20)  # LPRng runs the filter once per copy
        assert [j.read_bytes() for j in jobs] == [POSTSCRIPT, POSTSCRIPT]
        args = lpd.job_args(jobs[0])
        assert args["-n"] == "alice" and args["-J"] == "Quarterly report"


def dovecot_printer_section(dovecot, tmp_path, out) -> str:
    """Printer ``remote`` (remote@phaserlink.test) printing into *out* what
    it fetches every second from the mailbox printer1 (password "pw", in
    clear) of *dovecot*; its password file is written into *tmp_path*."""
    password = tmp_path / "mailbox.password"
    password.write_text("pw\n")
    return printer_section("remote", f"file:{out}", mailbox=f"pop3://printer1@127.0.0.1:{dovecot.port}",
                           mailbox_password_file=str(password), mailbox_tls="none", poll_interval="1s")


def test_remote_dovecot_mailbox_is_polled_printed_and_emptied(appliance, tmp_path):
    """mailbox = pop3://...: the retriever polls Dovecot, prints, deletes
    there; the same message delivered twice (a relay's duplicate) prints once."""
    from support.dovecot import Dovecot

    dovecot = Dovecot()
    try:
        dovecot.start(users={"printer1": "pw"})
        out = tmp_path / "printed"
        appliance.sections = dovecot_printer_section(dovecot, tmp_path, out)
        mail = bytes(job_mail(to="remote@phaserlink.test", Message_ID="<remote-1@example.com>"))
        dovecot.deliver("printer1", mail)
        dovecot.deliver("printer1", mail)
        appliance.start()
        [job] = appliance.wait_for(lambda: printed_files(out), timeout=20, what="the remote job")
        assert job.read_bytes() == POSTSCRIPT
        appliance.wait_for(lambda: dovecot.messages("printer1") == [], timeout=20, what="Dovecot emptied")
        time.sleep(1.5)  # another poll: nothing more
        assert len(printed_files(out)) == 1
    finally:
        dovecot.stop()


def test_unreadable_header_and_impossible_fragment_are_answered_not_dropped(appliance, tmp_path):
    """Issue 7 item 5 on the running appliance: a 300 KB header block and a
    message/partial set with total=0 each get a "failed" status mail that
    says why, at once (no partial_timeout wait), and nothing prints."""
    from support.smtp_sink import SmtpSink

    out = tmp_path / "printed"
    with SmtpSink(tmp_path / "sink") as sink:
        appliance.appliance_extra = f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\n"
        appliance.sections = printer_section("demo", f"file:{out}", notify="errors")
        appliance.start()
        big = job_mail(Message_ID="<big-header@example.com>")
        for i in range(3600):
            big[f"X-Padding-{i}"] = "x" * 70
        send(appliance, big)
        [mail] = sink_mails(sink, 1)
        report = parse_status_report(mail.raw)
        assert mail.recipients == ["alice@example.com"]
        assert report.state == "aborted" and list(report.reasons) == ["document-format-error"]
        assert "header could not be read: header section is longer than 262144 bytes" in report.human_text
        fragment = (b"From: alice@example.com\r\nTo: demo@phaserlink.test\r\nSubject: part 1\r\n"
                    b"Message-ID: <p1@example.com>\r\nMIME-Version: 1.0\r\n"
                    b'Content-Type: message/partial; id="set-zero@example.com"; number=1; total=0\r\n\r\n'
                    b"From: alice@example.com\r\nSubject: inner\r\n\r\n%!PS\r\n")
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
            smtp.sendmail("alice@example.com", ["demo@phaserlink.test"], fragment)
        mails = sink_mails(sink, 2)
        report = parse_status_report(mails[1].raw)
        assert report.state == "aborted" and "job-data-insufficient" in report.reasons
        assert "do not fit together: fragment 1 says the job has 0 parts" in report.human_text
        assert printed_files(out) == []
        assert list((appliance.spool / "mail" / "demo" / "new").iterdir()) == []


def test_sigterm_keeps_the_spool_lock_until_the_printer_stopped(appliance, tmp_path):
    """Issue 7 item 9 on the real twistd: SIGTERM while a job is being sent
    to an LPD printer that never answers.  The spool lock stays held while
    the send gets its grace (another appliance could otherwise start on the
    spool and print the job a second time), the process exits within the
    bound, and the job is still in the spool to resume."""
    import signal
    import socket

    from phaserlink.printer.dispatch import STOP_GRACE
    from test_spool_shutdown import lock_is_held

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    port = silent.getsockname()[1]
    try:
        appliance.sections = printer_section("lp", f"lpd://127.0.0.1:{port}/raw")
        appliance.start()
        send(appliance, job_mail(to="lp@phaserlink.test"))
        conn, _ = silent.accept()  # the appliance is sending now
        spool = appliance.spool / "jobs" / "lp"
        appliance.wait_for(lambda: any('"processing"' in p.read_text() for p in spool.glob("*/state.json")),
                           what="the job to be processing")
        appliance.proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()

        def held() -> bool:
            return lock_is_held(appliance.spool)

        while time.monotonic() - stopped_at < STOP_GRACE - 2:
            assert appliance.proc.poll() is None
            assert held(), "the spool lock was released while the printer was still sending"
            time.sleep(0.5)
        appliance.proc.wait(timeout=15)
        assert time.monotonic() - stopped_at < STOP_GRACE + 10
        assert not held()
        assert list(spool.glob("*/state.json")), "the job must stay in the spool to resume"
        conn.close()
    finally:
        silent.close()

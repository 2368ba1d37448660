"""kill -9 of the appliance (twistd) in the middle of a job, on real peers
(issue 3): the job is neither lost nor printed twice, except in the one
window a raw 9100 printer cannot close.

The crash points, each made deterministic by pausing a real peer with
SIGSTOP at the moment of interest instead of hoping to hit a moment:

1. mid-RETR: the printer's mailbox is a real Dovecot (``mailbox =
   pop3://...``); the retriever is streaming a large message into
   ``incoming/`` when Dovecot's pop3 process is frozen, the appliance is
   killed, Dovecot thawed.  After restart: printed once.
2. after the spool, before the printer got anything: (a) raw printer down
   (connection refused), job held; (b) LPRng lpd frozen, the appliance
   waiting for the first ack.  After restart: printed once.
3. mid-send: (a) LPRng frozen while the data file is being received: LPD
   only makes a job of received files when the control file (sent last)
   arrives, so after restart: printed once.  (b) p910nd frozen with part of
   the job written: the printer keeps what it got, and the whole job is sent
   again after restart -- the documented raw 9100 window: a partial copy
   and then the complete one.
"""

from __future__ import annotations

import os
import signal
import smtplib
from email.utils import make_msgid
from pathlib import Path

import pytest

from support.dovecot import Dovecot
from support.e2e import (
    MARKER,
    SENDER,
    incoming,
    job_states,
    postscript,
    printer_idle,
    printer_section,
    sha256,
    wait_until,
)
from support.lpd import LPRngServer
from support.p910nd import P910ndPrinter
from support.peers import free_port

pytestmark = pytest.mark.timeout(180)

BIG = 40 * 1024 * 1024  # large enough that a transfer takes many polls


def top_level_job(printer: str, data: bytes) -> bytes:
    """A job message whose body is the PostScript itself (7bit), LF ends, as
    stored in a Maildir."""
    head = (f"From: {SENDER}\nTo: {printer}@phaserlink.test\nSubject: crash test\n"
            f"Message-ID: {make_msgid(domain='example.com')}\nMIME-Version: 1.0\n"
            "Content-Type: application/postscript\nContent-Transfer-Encoding: 7bit\n\n").encode()
    return head + data


def send(app, printer: str, data: bytes) -> None:
    """SMTP the job to the appliance (the PostScript as the body: a 40 MB
    job stays 40 MB on the wire)."""
    wire = top_level_job(printer, data).replace(b"\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", app.smtp_port, timeout=60) as smtp:
        smtp.sendmail(SENDER, [f"{printer}@phaserlink.test"], wire)


def states(app, printer: str, state: str) -> list[dict]:
    return [s for s in job_states(app, printer).values() if s["state"] == state]


def growing_file(directory: Path, pattern: str, at_least: int) -> Path | None:
    for path in directory.glob(pattern):
        try:
            if path.stat().st_size >= at_least:
                return path
        except FileNotFoundError:
            continue
    return None


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command name) of every process below *root*."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append((int(entry), name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def test_kill9_mid_retr_from_dovecot_prints_once(appliance, tmp_path):
    data = postscript(marker=MARKER, size=BIG, seed=b"mid-retr")
    message = top_level_job("remote", data)
    dovecot = Dovecot()
    printer = P910ndPrinter()
    try:
        dovecot.start(users={"remote": "remote-pw"})
        printer.start()
        password = tmp_path / "mailbox.password"
        password.write_text("remote-pw\n")
        appliance.sections = printer_section(
            "remote", printer.uri(), mailbox=f"pop3://remote@127.0.0.1:{dovecot.port}",
            mailbox_password_file=str(password), mailbox_tls="none", poll_interval="1s")
        dovecot.deliver("remote", message)
        appliance.start()

        # The retriever is streaming the RETR into incoming/: freeze Dovecot's
        # pop3 process there, so the kill lands mid-transfer for certain.
        spool_in = appliance.spool / "jobs" / "remote" / "incoming"
        wait_until(lambda: spool_in.is_dir() and growing_file(spool_in, "*", 1), 30,
                   "the retriever to start spooling", appliance.log, interval=0.001)
        [(pop3, _)] = [p for p in descendants(dovecot.proc.pid) if p[1] == "pop3"]
        os.kill(pop3, signal.SIGSTOP)
        try:
            [partial] = incoming(appliance, "remote")
            got = partial.stat().st_size
            print(f"\nmid-RETR: {got} of {len(message)} bytes spooled when Dovecot was frozen")
            assert 0 < got < len(data), "the RETR finished before Dovecot was frozen"
            assert job_states(appliance, "remote") == {}
            appliance.kill9()
        finally:
            os.kill(pop3, signal.SIGCONT)
        assert len(dovecot.messages("remote")) == 1  # never deleted: not spooled

        appliance.start()
        [job] = wait_until(lambda: printer.jobs(), 60, "the job at the printer after restart", appliance.log)
        assert sha256(job) == sha256(data)
        wait_until(lambda: not dovecot.messages("remote") and printer_idle(appliance, "remote"), 30,
                   "the message deleted at Dovecot and the spool empty", appliance.log)
        assert len(printer.jobs()) == 1
        assert "dropped 1 unfinished retrievals" in appliance.log()
    finally:
        appliance.stop()
        printer.cleanup()
        dovecot.stop()


def test_kill9_after_spool_while_raw_printer_is_down_prints_once(appliance):
    port = free_port()  # nothing listens yet: connection refused
    appliance.sections = printer_section("raw", f"socket://127.0.0.1:{port}")
    appliance.start()
    data = postscript(marker=MARKER, size=200_000, seed=b"held")
    send(appliance, "raw", data)
    wait_until(lambda: [s for s in states(appliance, "raw", "pending-held") if "printer-stopped" in s["reasons"]],
               30, "the job held (printer-stopped)", appliance.log)
    appliance.kill9()
    printer = P910ndPrinter(port=port)
    try:
        printer.start()
        appliance.start()
        [job] = wait_until(lambda: printer.jobs(), 30, "the held job after restart", appliance.log)
        assert sha256(job) == sha256(data)
        wait_until(lambda: printer_idle(appliance, "raw"), 30, "the spool to empty", appliance.log)
        assert len(printer.jobs()) == 1
    finally:
        appliance.stop()
        printer.cleanup()


def printed_once_at_lpd(appliance, lpd, data: bytes, timeout: float) -> None:
    """After the restart: *data* reaches *lpd* within *timeout*, byte for
    byte, and once printer lp's spool is empty and lpd is idle it is there
    exactly once."""
    [job] = wait_until(lambda: lpd.jobs(), timeout, "the job at lpd after restart", appliance.log)
    assert sha256(job) == sha256(data)
    wait_until(lambda: printer_idle(appliance, "lp"), 30, "the spool to empty", appliance.log)
    lpd.wait_idle()
    assert len(lpd.jobs()) == 1


def test_kill9_after_spool_while_lpd_is_frozen_prints_once(appliance):
    """The appliance has connected and sent its receive-job command, but the
    printer has acknowledged nothing (it is frozen): the job is
    ``processing`` in the spool when the appliance dies."""
    lpd = LPRngServer()
    try:
        lpd.start()
        appliance.sections = printer_section("lp", lpd.uri())
        appliance.start()
        lpd.pause()
        data = postscript(marker=MARKER, size=200_000, seed=b"lpd-frozen")
        send(appliance, "lp", data)
        wait_until(lambda: states(appliance, "lp", "processing"), 30, "the job being sent", appliance.log)
        appliance.kill9()
        lpd.resume()
        appliance.start()
        printed_once_at_lpd(appliance, lpd, data, timeout=30)
    finally:
        appliance.stop()
        lpd.cleanup()


def test_kill9_mid_send_to_lpd_prints_once(appliance):
    """LPRng has part of the data file when the appliance dies: without the
    control file (sent last) it is no job, and LPRng drops it."""
    lpd = LPRngServer()
    try:
        lpd.start()
        appliance.sections = printer_section("lp", lpd.uri())
        appliance.start()
        data = postscript(marker=MARKER, size=BIG, seed=b"lpd-mid-send")
        send(appliance, "lp", data)
        queue_dir = lpd.base / "spool" / "raw"
        # LPRng receives a data file into a temporary file and renames it to
        # dfA... only once all of it is there: freeze lpd while that
        # temporary file grows.
        wait_until(lambda: growing_file(queue_dir, "temp*", 1 << 20), 60,
                   "LPRng receiving the data file", appliance.log, interval=0.001)
        lpd.pause()
        try:
            receiving = growing_file(queue_dir, "temp*", 1 << 20)
            assert receiving is not None and receiving.stat().st_size < len(data)
            print(f"\nlpd mid-send: LPRng had {receiving.stat().st_size} of {len(data)} bytes")
            assert list(queue_dir.glob("[dc]f*")) == []
            assert states(appliance, "lp", "processing")
            assert lpd.jobs() == []
            appliance.kill9()
        finally:
            lpd.resume()
        appliance.start()
        printed_once_at_lpd(appliance, lpd, data, timeout=60)
    finally:
        appliance.stop()
        lpd.cleanup()


def test_kill9_mid_send_to_raw_printer_sends_the_whole_job_again(appliance):
    """The raw 9100 window.  p910nd has written part of the job when the
    appliance dies; the kernel then closes the connection cleanly, so the
    printer ends that job with what it got.  After restart the job, still
    ``processing`` in the spool, is sent again in full: the printer has a
    partial copy and then one complete copy, and no more."""
    printer = P910ndPrinter()
    try:
        printer.start()
        appliance.sections = printer_section("raw", printer.uri())
        appliance.start()
        data = postscript(marker=MARKER, size=BIG, seed=b"raw-mid-send")
        send(appliance, "raw", data)
        wait_until(lambda: growing_file(printer.out, ".tmp-*", 1 << 20), 60,
                   "p910nd receiving the job", appliance.log)
        printer.pause()
        try:
            assert states(appliance, "raw", "processing")
            appliance.kill9()
        finally:
            printer.resume()
        [partial] = wait_until(lambda: printer.jobs(), 30, "p910nd to end the cut-off job")
        cut = partial.read_bytes()
        print(f"\nraw mid-send: p910nd kept {len(cut)} of {len(data)} bytes of the cut-off job")
        assert 0 < len(cut) < len(data) and data.startswith(cut)

        appliance.start()
        jobs = wait_until(lambda: len(printer.jobs()) >= 2 and printer.jobs(), 60,
                          "the job sent again after restart", appliance.log)
        wait_until(lambda: printer_idle(appliance, "raw"), 30, "the spool to empty", appliance.log)
        jobs = printer.jobs()
        assert len(jobs) == 2, [p.stat().st_size for p in jobs]
        assert jobs[0] == partial and sha256(jobs[1]) == sha256(data)
    finally:
        appliance.stop()
        printer.cleanup()

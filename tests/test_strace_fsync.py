"""Proof from the kernel's side that the 250 after DATA follows the fsyncs.

The real appliance (``twistd phaserlink``) runs under Debian's strace,
following every thread (``-f``: the fsyncs run in worker threads) and
naming every file descriptor by its path or socket (``-yy``).  One message
is sent with smtplib; in the trace we find

1. the message file: the fd under the Maildir root whose ``write`` carries
   the message's unique marker (a temporary file, later linked into
   ``BOX/new``);
2. the ``fsync`` of that fd, and after it the ``fsync`` of ``BOX/new``
   (the hard link's directory; the appliance group-commits directory
   fsyncs, so it may be shared with other messages, but one must come
   after the file's);
3. the reply to DATA on the client's own TCP connection: the first ``250``
   written to it after its ``354``.

and check that (2) completed before (3) started, in strace's own order of
events.  Sending the 250 first would fail this test (checked by hand by
answering before the commit; see docs/fuzzing.md).
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import support.appliance
from support.peers import require_program
from support.twistd import TWISTD

pytestmark = pytest.mark.timeout(120)

TRACED = "fsync,fdatasync,write,writev,pwrite64,sendto,sendmsg"

# 1234  12:00:00.123456 fsync(7</var/x/new>) = 0
# 1234  12:00:00.123456 sendto(9<TCPv4:[127.0.0.1:25->127.0.0.1:4000]>, "250 ..."..., 30, 0, NULL, 0 <unfinished ...>
# 1234  12:00:00.123456 <... sendto resumed>) = 30
_CALL = re.compile(r"^(?P<pid>\d+)\s+(?P<time>[\d:.]+)\s+(?P<name>\w+)\((?P<fd>\d+)<(?P<path>(?:->|[^>])*)>(?P<rest>.*)$")
_RESUMED = re.compile(r"^(?P<pid>\d+)\s+(?P<time>[\d:.]+)\s+<\.\.\. (?P<name>\w+) resumed>")


@dataclass
class Call:
    index: int  # position of the line where the call started
    done: int  # position of the line where it returned
    pid: int
    name: str
    fd: int
    path: str
    rest: str


def parse(log: str) -> list[Call]:
    """Every traced call with an annotated fd, with where it began and ended."""
    calls: list[Call] = []
    open_calls: dict[tuple[int, str], Call] = {}
    for i, line in enumerate(log.splitlines()):
        m = _CALL.match(line)
        if m:
            call = Call(i, i, int(m["pid"]), m["name"], int(m["fd"]), m["path"], m["rest"])
            calls.append(call)
            if m["rest"].endswith("<unfinished ...>"):
                open_calls[(call.pid, call.name)] = call
            continue
        r = _RESUMED.match(line)
        if r and (int(r["pid"]), r["name"]) in open_calls:
            open_calls.pop((int(r["pid"]), r["name"])).done = i
    return calls


def written(call: Call) -> str:
    """The data argument of a write/sendto as strace prints it (escaped)."""
    m = re.match(r'\s*,\s*(?:\[\{iov_base=)?"((?:[^"\\]|\\.)*)"', call.rest)
    return m.group(1) if m else ""


def check_order(log: str, marker: str, client_port: int, mail_root: str, new_dir: str) -> str:
    """Raise AssertionError unless file fsync < new/ fsync < 250; say what was found."""
    calls = parse(log)
    writes = ("write", "writev", "pwrite64")
    files = [c for c in calls if c.name in writes and marker in written(c) and c.path.startswith(mail_root + "/")]
    assert files, f"no write of the message (marker {marker}) into a file under {mail_root} in the trace"
    message = files[0]
    file_syncs = [c for c in calls if c.name in ("fsync", "fdatasync") and c.path == message.path
                  and c.index > message.index]
    assert file_syncs, f"the message file {message.path} was never fsync'd"
    file_sync = file_syncs[0]
    dir_syncs = [c for c in calls if c.name == "fsync" and c.path == new_dir and c.index > file_sync.done]
    assert dir_syncs, f"{new_dir} was not fsync'd after the message file"
    dir_sync = dir_syncs[0]
    socket_name = f"->127.0.0.1:{client_port}]"
    replies = [c for c in calls if c.name in ("write", "writev", "sendto", "sendmsg") and c.path.endswith(socket_name)]
    assert replies, f"no reply written to the client's connection (port {client_port})"
    go_ahead = [c for c in replies if written(c).startswith("354")]
    assert go_ahead, "no 354 to the client"
    after = [c for c in replies if c.index > go_ahead[0].index and written(c).startswith("250")]
    assert after, "no 250 after the 354"
    reply = after[0]
    assert file_sync.done < reply.index, (
        f"the 250 (line {reply.index + 1}) was sent before the message file's fsync returned "
        f"(line {file_sync.done + 1})")
    assert dir_sync.done < reply.index, (
        f"the 250 (line {reply.index + 1}) was sent before the fsync of {new_dir} returned "
        f"(line {dir_sync.done + 1})")
    return (f"file fsync line {file_sync.done + 1}, {new_dir} fsync line {dir_sync.done + 1}, "
            f"250 line {reply.index + 1}")


def test_the_250_follows_the_file_and_directory_fsync(appliance, tmp_path, monkeypatch) -> None:
    strace = require_program("strace")
    log_path = tmp_path / "strace.log"
    monkeypatch.setattr(support.appliance, "TWISTD", [
        strace, "-f", "-tt", "-yy", "-s", "8192", "-e", f"trace={TRACED}", "-o", str(log_path), *TWISTD])
    appliance.sections = (
        "[printer:lp]\nsender_auth = none\naddresses = lp@phaserlink.test\noutput = file:var/printed\n"
        "allowed_senders = *\nformats = postscript\nnotify = none\n"
    )
    marker = f"STRACE-{uuid.uuid4().hex}"
    try:
        appliance.start(timeout=60)
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=30) as smtp:
            client_port = smtp.sock.getsockname()[1]
            smtp.sendmail("alice@example.com", ["lp@phaserlink.test"],
                          f"From: alice@example.com\r\nSubject: {marker}\r\nMessage-ID: <{marker}@example.com>\r\n"
                          f"Content-Type: application/postscript\r\n\r\n%!PS\r\n% {marker}\r\nshowpage\r\n")
    finally:
        _stop_traced(appliance)
    mail = Path(os.path.realpath(appliance.spool / "mail"))
    found = check_order(log_path.read_text(errors="replace"), marker, client_port, str(mail), str(mail / "lp" / "new"))
    print(found)


def test_the_check_fails_when_the_250_comes_first() -> None:
    """The parser and the order check, on a trace where the 250 was written
    before the directory fsync returned (the shape a broken commit gives)."""
    marker = "STRACE-x"
    base = "/s/var/mail/lp"
    sock = "TCP:[127.0.0.1:25->127.0.0.1:4000]"
    good = "\n".join([
        f'10 00:00:00.1 sendto(9<{sock}>, "354 go ahead\\r\\n", 14, 0, NULL, 0) = 14',
        f'11 00:00:00.2 write(12<{base}/tmp/1.M1>, "Received: x\\nSubject: {marker}\\n", 30) = 30',
        f"11 00:00:00.3 fsync(12<{base}/tmp/1.M1>) = 0",
        f"12 00:00:00.4 fsync(13<{base}/new> <unfinished ...>",
        f'10 00:00:00.5 sendto(9<{sock}>, "250 2.0.0 Ok\\r\\n", 14, 0, NULL, 0) = 14',
        "12 00:00:00.6 <... fsync resumed>) = 0",
    ])
    with pytest.raises(AssertionError, match="before the fsync of /s/var/mail/lp/new returned"):
        check_order(good, marker, 4000, "/s/var/mail", f"{base}/new")
    fixed = good.replace("12 00:00:00.4 fsync(13<{}/new> <unfinished ...>".format(base),
                         "12 00:00:00.4 fsync(13<{}/new>) = 0".format(base)).replace(
        "\n12 00:00:00.6 <... fsync resumed>) = 0", "")
    check_order(fixed, marker, 4000, "/s/var/mail", f"{base}/new")


def _stop_traced(appliance) -> None:
    """strace detaches (and leaves twistd running) when it is terminated:
    stop twistd itself, the child strace started, then reap strace."""
    proc = appliance.proc
    if proc is None:
        return
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        pids = [int(p) for p in children.read_text().split()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait()

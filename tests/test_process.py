"""The appliance raises its own file limit as twistd starts (issue 11):
started with the common soft limit (systemd's and most shells' 1,024, here
a smaller one to keep the test small), it still takes ``max_sessions``
sessions at once and answers the next one with 421, instead of failing to
accept (EMFILE) once the soft limit is used up."""

from __future__ import annotations

import resource
import socket

from support.appliance import Appliance

from phaserlink.process import needed_files, raise_file_limit

SESSIONS = 300
SOFT = 256  # below what 300 sessions need


def test_soft_limit_is_raised_to_what_the_configuration_needs():
    calls = []
    old, new = raise_file_limit(3000, getrlimit=lambda _: (1024, 524288),
                                setrlimit=lambda _, value: calls.append(value))
    assert (old, new) == (1024, 3000)
    assert calls == [(3000, 524288)]


def test_never_above_the_hard_limit_nor_lowered():
    calls = []
    assert raise_file_limit(5000, getrlimit=lambda _: (1024, 4096),
                            setrlimit=lambda _, value: calls.append(value)) == (1024, 4096)
    assert calls == [(4096, 4096)]
    calls.clear()
    assert raise_file_limit(500, getrlimit=lambda _: (1024, 4096),
                            setrlimit=lambda _, value: calls.append(value)) == (1024, 1024)
    assert calls == []


def test_need_grows_with_sessions_and_printers():
    assert needed_files(1000, 500) > 2 * 1000 + 5 * 500


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data


def test_appliance_started_with_a_low_soft_limit_takes_max_sessions(tmp_path):
    app = Appliance(tmp_path)
    app.appliance_extra = f"max_sessions = {SESSIONS}\n"
    app.sections = ("[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\n"
                    "allowed_senders = *\noutput = pull\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= needed_files(SESSIONS, 1), "the test needs a hard limit above what 300 sessions need"
    # Only twistd gets the low limit: lowering it here would starve the test
    # process, which may hold more than SOFT files late in a full run.
    app.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, hard))
    app.start()
    sessions = []
    try:
        limits = open(f"/proc/{app.proc.pid}/limits").read()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert int(line.split()[3]) >= needed_files(SESSIONS, 1), line
        for n in range(SESSIONS):
            s = socket.create_connection(("127.0.0.1", app.smtp_port), timeout=10)
            sessions.append(s)
            greeting = read_line(s)
            assert greeting.startswith(b"220"), f"session {n + 1}: {greeting!r}"
        extra = socket.create_connection(("127.0.0.1", app.smtp_port), timeout=10)
        sessions.append(extra)
        assert read_line(extra).startswith(b"421 4.3.2")
        assert "file limit raised from 256" in app.log()
    finally:
        for s in sessions:
            s.close()
        app.stop()


def test_what_start_up_made_is_frozen_out_of_the_collectors_walks(tmp_path):
    """Full collections walked every object start-up made (up to a second
    at 500 printers, bench/scale.py); the appliance freezes them once every
    printer has started, and says so in its log."""
    app = Appliance(tmp_path)
    app.sections = ("[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\n"
                    "allowed_senders = *\noutput = file:" + str(tmp_path / "out") + "\n")
    app.start()
    try:
        app.wait_for(lambda: "long-lived objects moved out of the collector's walks" in app.log(),
                     what="the freeze after start-up")
    finally:
        app.stop()

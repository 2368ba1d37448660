"""Starting twistd: a second appliance on the same spool, or a port that is
taken, stops twistd at once with a clear message, and the first appliance
keeps its mail."""

from __future__ import annotations

import smtplib
import socket
import subprocess

from support.appliance import Appliance
from support.twistd import TWISTD

PRINTER = "[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\nallowed_senders = *\noutput = pull\n"


def run_twistd(config, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*TWISTD, "-n", "--pidfile=", "--logfile=-", "phaserlink", "--config", str(config)],
                          capture_output=True, text=True, cwd=cwd, timeout=60)


def test_second_appliance_on_the_same_spool_refuses_to_start(appliance, tmp_path):
    appliance.sections = PRINTER
    appliance.start()
    second = Appliance(tmp_path / "second")
    second.directory.mkdir()
    second.sections = PRINTER
    second.write_config()
    # Same spool as the running one, its own ports.
    text = second.config_path.read_text().replace(str(second.spool), str(appliance.spool))
    second.config_path.write_text(text)
    result = run_twistd(second.config_path, second.directory)
    assert result.returncode != 0
    assert f"spool {appliance.spool} is in use by another PhaserLink appliance (pid {appliance.proc.pid})" in (
        result.stdout + result.stderr)
    # It bound nothing, and the first appliance still takes mail.
    with socket.socket() as s:
        s.bind(("127.0.0.1", second.smtp_port))
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["demo@phaserlink.test"], b"Subject: still here\r\n\r\nhello\r\n")
    assert len(list((appliance.spool / "mail" / "demo" / "new").iterdir())) == 1


def test_port_in_use_stops_twistd(tmp_path):
    app = Appliance(tmp_path)
    app.sections = PRINTER
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", app.smtp_port))
        busy.listen()
        app.write_config()
        result = run_twistd(app.config_path, tmp_path)
    assert result.returncode != 0
    assert f"Couldn't listen on 127.0.0.1:{app.smtp_port}" in result.stdout + result.stderr

"""The CUPS backend under a real, private cupsd: `lp -d QUEUE file.ps` on a
raw queue with a phaserlink:// URI ends as a byte-identical job at the
appliance's printer; a refusal fails the CUPS job."""

from __future__ import annotations

import os

import pytest

from phaserlink.client import cups_install
from support.cups import cupsd, phaserlink_queue  # noqa: F401  (cupsd is a fixture)

pytestmark = pytest.mark.peer

PS = (b"%!PS-Adobe-3.0\n%%Title: cups test\n/Courier findfont 12 scalefont setfont\n"
      b"72 700 moveto (PhaserLink via CUPS) show\nshowpage\n%%EOF\n")


@pytest.fixture
def printer_site(appliance, tmp_path):
    printed = tmp_path / "printed"
    printed.mkdir()
    appliance.sections = f"""\
        [printer:demo]
        sender_auth = none
        addresses = demo@phaserlink.test
        output = file:{printed}
        allowed_senders = *@phaserlink.test, alice@example.com
        notify = none
        """
    appliance.start()
    appliance.printed = printed
    return appliance


def test_lp_on_a_phaserlink_queue_prints_byte_identical(cupsd, printer_site, tmp_path):
    phaserlink_queue(cupsd, "demo@phaserlink.test", printer_site.smtp_port, "alice@example.com")
    job = tmp_path / "job.ps"
    job.write_bytes(PS * 2000)  # ~200 KB
    out = cupsd.run("lp", "-d", "pl", "-t", "CUPS title", "-n", "2", str(job))
    job_name = out.stdout.split()[3]  # "request id is pl-1 (1 file(s))"
    assert cupsd.wait_job_done(job_name) == "completed"
    printed = printer_site.wait_for(lambda: list(printer_site.printed.iterdir()), timeout=20, what="the print")
    assert printed[0].read_bytes() == job.read_bytes()
    log = cupsd.log()
    assert "STATE: +connecting-to-device" in log or "connecting-to-device" in log
    assert "Sent job" in log
    applog = printer_site.log()
    assert "from alice@example.com ('CUPS title')" in applog, applog[-3000:]


def test_a_refused_job_fails_with_the_servers_words(cupsd, printer_site, tmp_path):
    phaserlink_queue(cupsd, "demo@phaserlink.test", printer_site.smtp_port, "eve@evil.example")
    job = tmp_path / "job.ps"
    job.write_bytes(PS)
    out = cupsd.run("lp", "-d", "pl", str(job))
    job_name = out.stdout.split()[3]
    cupsd.wait_job_done(job_name)
    log = cupsd.log()
    assert "550 5.7.1" in log and "not allowed" in log
    assert list(printer_site.printed.iterdir()) == []


def test_backend_from_a_site_destinations_file(cupsd, printer_site, tmp_path):
    """DEST as a printer name from the site file (SetEnv points the backend at it)."""
    site_file = cupsd.directory / "destinations.ini"
    site_file.write_text(f"[defaults]\nfrom = alice@example.com\n\n[server:appliance]\n"
                         f"endpoint = 127.0.0.1:{printer_site.smtp_port}\ntls = none\n\n"
                         f"[printer:demo]\naddress = demo@phaserlink.test\nserver = appliance\n")
    os.chmod(site_file, 0o644)
    cupsd.start(env_lines={"PHASERLINK_SITE_DESTINATIONS": str(site_file)})
    cups_install.install(cupsd.backend_dir, run_as="root")
    cupsd.run("lpadmin", "-p", "named", "-E", "-v", "phaserlink://demo")
    job = tmp_path / "job.ps"
    job.write_bytes(PS)
    out = cupsd.run("lp", "-d", "named", str(job))
    assert cupsd.wait_job_done(out.stdout.split()[3]) == "completed"
    printed = printer_site.wait_for(lambda: list(printer_site.printed.iterdir()), timeout=20, what="the print")
    assert printed[0].read_bytes() == PS


def backend(env_extra: dict[str, str], *args: str, stdin: bytes = b""):
    import subprocess
    import sys

    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-m", "phaserlink.client.cups_backend", *args], env=env, input=stdin,
                          capture_output=True, timeout=120)


def test_backend_exit_codes_retry_failed_stop(printer_site, tmp_path):
    """backend(7) exit codes without a cupsd: 6 retry on a refused
    connection, 1 on a 5xx, 4 on a queue that cannot work, 0 when sent
    (data on stdin, as CUPS gives it for a multi-file job)."""
    from support.peers import free_port

    base = {"PHASERLINK_SITE_DESTINATIONS": str(tmp_path / "none.ini"), "TMPDIR": str(tmp_path)}
    closed = f"phaserlink://demo%40phaserlink.test?server=127.0.0.1:{free_port()}"
    out = backend(dict(base, DEVICE_URI=closed), "7", "alice", "t", "1", "", stdin=PS)
    assert out.returncode == 6, out.stderr
    assert b"STATE: +connecting-to-device" in out.stderr and b"ERROR: " in out.stderr
    app = f"server=127.0.0.1:{printer_site.smtp_port}"
    out = backend(dict(base, DEVICE_URI=f"phaserlink://demo%40phaserlink.test?{app}&from=eve%40evil.example"),
                  "8", "eve", "t", "1", "", stdin=PS)
    assert out.returncode == 1
    assert b"550 5.7.1" in out.stderr and b"ATTR: printer-alert-description=" in out.stderr
    out = backend(dict(base, DEVICE_URI="phaserlink://no-such-printer"), "9", "alice", "t", "1", "", stdin=PS)
    assert out.returncode == 4 and out.stderr.startswith(b"ERROR: ")
    # the job's user (argument 2, not $USER) becomes the sender's local part when the URI names no from=
    out = backend(dict(base, DEVICE_URI=f"phaserlink://demo%40phaserlink.test?{app}", USER="root"), "10",
                  "zoe", "t", "1", "", stdin=PS)
    assert b"sender <zoe@" in out.stderr
    out = backend(dict(base, DEVICE_URI=f"phaserlink://demo%40phaserlink.test?{app}&from=alice%40example.com"),
                  "11", "alice", "My title", "3", "", stdin=PS)
    assert out.returncode == 0, out.stderr
    assert b"INFO: Sending demo@phaserlink.test: 100%" in out.stderr
    printed = printer_site.wait_for(lambda: list(printer_site.printed.iterdir()), timeout=20, what="the print")
    assert printed[0].read_bytes() == PS
    assert "('My title')" in printer_site.log()

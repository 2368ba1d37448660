"""Acceptance: the site.ini keys, values and commands issues 10 and 11 name,
spelled exactly as there, are read; a mistake in each stops ``twistd
phaserlink`` (exit 1, before binding a port) with a message naming the file,
section and key; ``phaserlink-dkim-keygen`` keeps its exit codes (0 done, 1
the key file exists, 2 bad arguments)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from phaserlink import config
from support.twistd import TWISTD


def keyfile(tmp_path: Path) -> Path:
    key = tmp_path / "dkim.pem"
    if not key.exists():
        out = subprocess.run([sys.executable, "-m", "phaserlink.dkim_keygen", "--selector", "pl1", "--domain",
                              "big.test", str(key)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    return key


def site_ini(tmp_path: Path, appliance: str = "", printer: str = "", output: str = "pull") -> Path:
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path / 'var'}\nsmtp_listen = tcp:0:interface=127.0.0.1\n"
                    f"pop3_listen = tcp:0:interface=127.0.0.1\n{appliance}\n"
                    f"[printer:office]\nallowed_senders = *\nsender_auth = none\noutput = {output}\n{printer}\n")
    return path


def test_every_key_the_issues_name_is_read_as_they_spell_it(tmp_path, test_ca):
    key = keyfile(tmp_path)
    path = site_ini(
        tmp_path,
        appliance=(f"max_conversions = 2\ndns_servers = 127.0.0.1:5353\nmx_port = 2525\noutbound_tls = verify\n"
                   f"dkim_key = {key}\ndkim_selector = pl1\ndkim_domain = big.test\nmax_sessions = 1000\n"),
        printer=(f"output_ca = {test_ca.ca_path}\noutput_tls = required\n"
                 "formats = postscript, pdf, pcl, text, jpeg, png, pwg-raster, urf\n"
                 "subject_options = yes\noptions_allowed = copies, pages\noptions_default = sides=two-sided-long-edge\n"),
        output="ipps://printer.lan/ipp/print")
    site = config.load(path)
    a, p = site.appliance, site.printers["office"]
    assert a.max_conversions == 2 and a.dns_servers == (("127.0.0.1", 5353),) and a.mx_port == 2525
    assert a.outbound_tls == "verify" and a.dkim_selector == "pl1" and a.dkim_domain == "big.test"
    assert a.max_sessions == 1000 and a.smarthost is None
    assert p.output == "ipps://printer.lan/ipp/print" and p.output_tls == "required"
    assert p.formats == ("postscript", "pdf", "pcl", "text", "jpeg", "png", "pwg-raster", "urf")
    assert p.subject_options is True


def test_the_defaults_the_issues_name(tmp_path):
    site = config.load(site_ini(tmp_path, output="ipps://printer.lan/ipp/print"))
    assert site.appliance.max_conversions == 1
    assert site.appliance.mx_port == 25
    assert site.printers["office"].output_tls == "required"  # ipps verifies by default
    site = config.load(site_ini(tmp_path, printer="pjl = yes\n", output="socket://printer.lan:9100"))
    assert site.printers["office"].pjl is True
    assert site.printers["office"].subject_options is False  # off unless the printer says yes


@pytest.mark.parametrize("appliance, printer, output, where", [
    ("dkim_key = {bad}\ndkim_selector = pl1\ndkim_domain = big.test\n", "", "pull", "[appliance] dkim_key"),
    ("dkim_key = {key}\ndkim_domain = big.test\n", "", "pull", "[appliance] dkim_selector"),
    ("dkim_key = /nonexistent/dkim.pem\ndkim_selector = pl1\ndkim_domain = big.test\n", "", "pull",
     "[appliance] dkim_key"),
    ("outbound_tls = sometimes\n", "", "pull", "[appliance] outbound_tls"),
    ("mx_port = twenty-five\n", "", "pull", "[appliance] mx_port"),
    ("dns_servers = dns.example\n", "", "pull", "[appliance] dns_servers"),
    ("max_conversions = 0\n", "", "pull", "[appliance] max_conversions"),
    ("", "output_tls = required\n", "ipp://printer.lan/ipp/print", "[printer:office] output_tls"),
    ("", "", "ipp:///no-host", "[printer:office] output"),
    ("", "formats = wordperfect\n", "pull", "[printer:office] formats"),
    ("", "subject_options = perhaps\n", "pull", "[printer:office] subject_options"),
    ("", "options_allowed = staples\n", "pull", "[printer:office] options_allowed"),
    ("", "pjl = maybe\n", "socket://printer.lan", "[printer:office] pjl"),
])
def test_a_mistake_stops_twistd_with_exit_1_naming_file_section_and_key(tmp_path, appliance, printer, output,
                                                                         where):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    appliance = appliance.format(bad=bad, key=keyfile(tmp_path) if "{key}" in appliance else "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = site_ini(tmp_path, appliance=appliance, printer=printer, output=output)
    path.write_text(path.read_text().replace("smtp_listen = tcp:0:", f"smtp_listen = tcp:{port}:"))
    result = subprocess.run([*TWISTD, "-n", "--pidfile=", "--logfile=-", "phaserlink", "--config", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    output_text = result.stdout + result.stderr
    assert result.returncode == 1, output_text
    assert f"{path}: {where}:" in output_text, output_text
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # it never listened


def test_phaserlink_dkim_keygen_exit_codes(tmp_path):
    key = tmp_path / "k.pem"
    run = [sys.executable, "-m", "phaserlink.dkim_keygen"]
    done = subprocess.run([*run, "--selector", "s1", "--domain", "Example.Test.", str(key)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "s1._domainkey.example.test. IN TXT" in done.stdout and "v=DKIM1; k=rsa; p=" in done.stdout
    assert (key.stat().st_mode & 0o777) == 0o600
    again = subprocess.run([*run, "--selector", "s1", "--domain", "example.test", str(key)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and str(key) in again.stderr
    usage = subprocess.run([*run, "--selector", "s1", str(tmp_path / "other.pem")], capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "--domain" in usage.stderr

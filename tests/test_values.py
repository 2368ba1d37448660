"""phaserlink.values: the parsers the client and the appliance share, and
the promise that the client can use them without the appliance's config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from phaserlink import config, values
from phaserlink.client import destinations as d

ROOT = Path(__file__).resolve().parent.parent

CLIENT_MODULES = ("cli", "send_command", "sending", "destinations", "status", "cups_backend", "cups_install")
APPLIANCE_PACKAGES = ("phaserlink.config", "phaserlink.printer", "phaserlink.smtp_relay",
                      "phaserlink.pop3_store", "phaserlink.passwords")


@pytest.mark.parametrize("module", CLIENT_MODULES)
def test_client_modules_import_without_the_appliance(module):
    """The client is installed on laptops: it must not drag in the appliance's
    config (and with it the password hashing and the reactor's endpoints)."""
    code = (f"import sys, phaserlink.client.{module}\n"
            f"bad = sorted(m for m in sys.modules if m.startswith({APPLIANCE_PACKAGES!r}))\n"
            "assert not bad, bad\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("text, expected", [
    ("10M", 10 * 1024**2), ("10MB", 10 * 1024**2), ("10MiB", 10 * 1024**2), ("10 m", 10 * 1024**2),
    ("512", 512), ("512b", 512), ("64K", 65536), ("1G", 1024**3), (" 7k ", 7168), ("0", 0),
])
def test_sizes(text, expected):
    assert values.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "10T", "-1", "1.5M", "10i", "10ib", "M"])
def test_bad_sizes_say_what_a_size_is(text):
    with pytest.raises(ValueError, match="is not a size"):
        values.parse_size(text)


@pytest.mark.parametrize("text, expected", [
    ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("4h", 14400.0), ("5d", 432000.0), ("250ms", 0.25),
    ("1.5h", 5400.0), (" 2 M ", 120.0),
])
def test_durations(text, expected):
    assert values.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "-5s", "5w", "5 minutes", "1e3"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a duration"):
        values.parse_duration(text)


@pytest.mark.parametrize("text, expected", [
    ("mail.example.com", ("mail.example.com", 25)),
    ("mail.example.com:587", ("mail.example.com", 587)),
    ("192.0.2.1:2525", ("192.0.2.1", 2525)),
    ("[2001:db8::1]:587", ("2001:db8::1", 587)),
    ("[::1]", ("::1", 25)),
    ("::1", ("::1", 25)),  # a bare IPv6 address is all host
    (" h:26 ", ("h", 26)),
])
def test_host_port(text, expected):
    assert values.parse_host_port(text, 25) == expected


@pytest.mark.parametrize("text, why", [
    ("", "is not HOST[:PORT]"),
    (":25", "is not HOST[:PORT]"),
    ("h:", "port after ':' is missing"),
    ("[::1]:", "port after ':' is missing"),
    ("[::1", "'[' without ']'"),
    ("[::1]25", "after ']' only :PORT"),
    ("h:0", "not a port number"),
    ("h:65536", "not a port number"),
    ("h:smtp", "not a port number"),
    ("user@h:25", "is not HOST[:PORT]"),
    ("h/x:25", "is not HOST[:PORT]"),
])
def test_bad_host_port_says_why(text, why):
    with pytest.raises(ValueError, match=r".*" + why.replace("[", r"\[").replace("]", r"\]")):
        values.parse_host_port(text, 25)


def test_split_list():
    assert values.split_list(" a, b  c,,d ") == ["a", "b", "c", "d"]
    assert values.split_list("") == []


def test_config_and_client_use_the_same_parsers():
    """One implementation: what config and the client call is values'."""
    assert config.parse_size is values.parse_size
    assert config.parse_duration is values.parse_duration
    assert config.split_host_port is values.split_host_port
    assert d.parse_endpoint("[2001:db8::1]:2525") == d.Endpoint("2001:db8::1", 2525, False)
    assert d.parse_endpoint("smtps://mail.example.com") == d.Endpoint("mail.example.com", 465, True)
    with pytest.raises(d.DestinationError, match="not a port number"):
        d.parse_endpoint("mail.example.com:99999")


def _site(tmp_path: Path, appliance_line: str) -> Path:
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path / 'var'}\nsmtp_listen = tcp:0\npop3_listen = tcp:0\n"
                    f"{appliance_line}\n")
    return path


@pytest.mark.parametrize("line, why", [
    ("smarthost = mail.example.com:99999", "not a port number"),  # was accepted, failed at the first send
    ("smarthost = [2001:db8::1", "'[' without ']'"),  # was taken as host "2001:db8::1"
    ("smarthost = mail.example.com:", "port after ':' is missing"),  # was port 25
    ("smarthost = smtps://mail.example.com:x", "not a port number"),
])
def test_smarthost_errors_name_file_section_key_and_why(tmp_path, line, why):
    path = _site(tmp_path, line)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    err = info.value
    assert (err.file, err.section, err.key) == (str(path), "appliance", "smarthost")
    assert why in err.why and "HOST[:PORT]" in err.why


def test_smarthost_ipv6_and_implicit_tls(tmp_path):
    site = config.load(_site(tmp_path, "smarthost = smtps://[2001:db8::25]"))
    host = site.appliance.smarthost
    assert (host.host, host.port, host.implicit_tls) == ("2001:db8::25", 465, True)


@pytest.mark.parametrize("text, expected", [("1", 1), (" 10 ", 10), ("500", 500)])
def test_positive_ints(text, expected):
    assert values.parse_positive_int(text) == expected


@pytest.mark.parametrize("text, why", [("0", "must be 1 or more"), ("-3", "is not a whole number"),
                                       ("2.5", "is not a whole number"), ("many", "is not a whole number")])
def test_bad_positive_ints(text, why):
    with pytest.raises(ValueError, match=why):
        values.parse_positive_int(text)


def test_a_bad_count_in_site_ini_says_why(tmp_path):
    """It used to say "invalid literal for int() with base 10: 'many'"."""
    path = _site(tmp_path, "max_sessions = many")
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert (info.value.key, info.value.why) == ("max_sessions", "'many' is not a whole number")

"""The destination manager: merge of site and user files, validation, and
edits that keep comments and survive many concurrent commands."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from phaserlink.client import destinations as d
from phaserlink.client.cli import main

SITE = textwrap.dedent("""\
    [defaults]
    from = site@example.com
    server = relay

    [server:relay]
    endpoint = relay.example.com:587
    tls = required

    [printer:lab]
    address = lab@print.example.com
    copies = 2

    [printer:hall]
    address = hall@print.example.com

    [group:all]
    members = lab, hall
    """)


@pytest.fixture
def env(tmp_path, monkeypatch):
    site = tmp_path / "site.ini"
    site.write_text(SITE)
    config = tmp_path / "config"
    monkeypatch.setenv(d.SITE_ENV, str(site))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("PHASERLINK_PASSWORD", raising=False)
    return site, config / "phaserlink" / "destinations.ini"


def test_paths_follow_the_environment(env):
    site, user = env
    assert d.site_path() == site
    assert d.user_path() == user


def test_site_only(env):
    dests = d.load()
    assert dests.printers["lab"].address == "lab@print.example.com"
    assert dests.printers["lab"].copies == 2
    assert dests.groups["all"].members == ("lab", "hall")
    assert dests.servers["relay"].endpoint == d.Endpoint("relay.example.com", 587, False)
    assert dests.servers["relay"].tls == "required"
    assert dests.default_from == "site@example.com"
    assert dests.mailbox is None


def test_user_section_replaces_site_section_and_defaults_merge_by_key(env):
    site, user = env
    user.parent.mkdir(parents=True)
    user.write_text("[defaults]\nfrom = me@example.org\n\n[printer:lab]\naddress = mylab@example.org\n")
    dests = d.load()
    lab = dests.printers["lab"]
    assert lab.address == "mylab@example.org"
    assert lab.copies is None  # the site's copies=2 does not leak into the user's entry
    assert dests.default_from == "me@example.org"
    assert dests.default_server == "relay"  # still the site's
    assert dests.origin["printer:lab"] == user
    assert dests.origin["printer:hall"] == site


def test_missing_files_are_empty(tmp_path):
    dests = d.load(tmp_path / "none.ini", tmp_path / "nouser.ini")
    assert dests.printers == {} and dests.servers == {}


@pytest.mark.parametrize("text, why", [
    ("[printer:x]\n", "address: is required"),
    ("[printer:x]\naddress = not-an-address\n", "is not a mail address"),
    ("[printer:x]\naddress = a@b.c\ncolour = yes\n", "colour: unknown key"),
    ("[server:s]\nendpoint = host:notaport\n", "is not a port number"),
    ("[server:s]\nendpoint = host:25\ntls = maybe\n", "'maybe' is not one of"),
    ("[group:g]\nmembers = ghost\n", "'ghost' is not a printer"),
    ("[printers:x]\naddress = a@b.c\n", "unknown section"),
    ("[printer:x]\naddress = a@b.c\nnotify = sometimes\n", "'sometimes' is not one of"),
    ("[mailbox]\nendpoint = smtp://host\nusername = u\n", "is not pop3:// or pop3s://"),
])
def test_mistakes_name_file_section_and_key(tmp_path, text, why):
    path = tmp_path / "bad.ini"
    path.write_text(text)
    with pytest.raises(d.DestinationError) as info:
        d.load(tmp_path / "none.ini", path)
    assert why in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("mail.example.com", d.Endpoint("mail.example.com", 25, False)),
    ("mail.example.com:587", d.Endpoint("mail.example.com", 587, False)),
    ("smtps://mail.example.com", d.Endpoint("mail.example.com", 465, True)),
    ("smtp://127.0.0.1:2525", d.Endpoint("127.0.0.1", 2525, False)),
    ("[::1]:2525", d.Endpoint("::1", 2525, False)),
])
def test_smtp_endpoints(text, expected):
    assert d.parse_endpoint(text) == expected


def test_pop3_endpoints():
    assert d.parse_endpoint("pop3s://mail.example.com", scheme="pop3") == d.Endpoint("mail.example.com", 995, True)
    assert d.parse_endpoint("pop3://h:1110", scheme="pop3") == d.Endpoint("h", 1110, False)


def test_cli_edits_keep_comments_and_other_sections(env, capsys):
    site, user = env
    user.parent.mkdir(parents=True)
    user.write_text("# my printers\n\n[printer:home]\n# the one upstairs\naddress = home@example.org\n")
    assert main(["destinations", "add-printer", "office", "office@print.example.com", "--copies", "3",
                 "--server", "relay"]) == 0
    assert main(["destinations", "add-server", "mine", "smtps://smtp.example.org", "--username", "me",
                 "--password-env", "MY_PASS", "--default"]) == 0
    assert main(["destinations", "set-mailbox", "pop3s://pop.example.org", "--username", "me"]) == 0
    assert main(["destinations", "add-group", "both", "home", "office"]) == 0
    text = user.read_text()
    assert text.startswith("# my printers\n\n[printer:home]\n# the one upstairs\naddress = home@example.org\n")
    dests = d.load()
    assert dests.printers["office"].copies == 3
    assert dests.default_server == "mine"
    assert dests.servers["mine"].endpoint.implicit_tls
    assert dests.servers["mine"].password_env == "MY_PASS"
    assert dests.mailbox and dests.mailbox.endpoint.port == 995
    assert dests.groups["both"].members == ("home", "office")
    assert main(["destinations", "remove", "both"]) == 0
    assert "both" not in d.load().groups
    # list and show work on the merged view
    capsys.readouterr()
    assert main(["destinations", "list"]) == 0
    out = capsys.readouterr().out
    assert "office@print.example.com" in out and "lab@print.example.com" in out
    assert main(["destinations", "show", "lab"]) == 0
    assert f"(from {site})" in capsys.readouterr().out


def test_cli_refuses_an_edit_that_breaks_the_file(env, capsys):
    site, user = env
    assert main(["destinations", "add-group", "g", "lab", "ghost"]) == 2
    assert "'ghost' is not a printer" in capsys.readouterr().err
    assert not user.exists() or "group:g" not in user.read_text()
    assert main(["destinations", "add-printer", "p", "nonsense"]) == 2
    assert main(["destinations", "add-printer", "p", "p@x.org", "--notify", "often"]) == 2


def test_cli_remove_of_a_site_entry_says_whose_it_is(env, capsys):
    site, user = env
    assert main(["destinations", "remove", "lab"]) == 2
    err = capsys.readouterr().err
    assert str(site) in err and "printer:lab" in err
    assert main(["destinations", "remove", "nothing"]) == 2


def test_cli_remove_ambiguous_name_needs_a_kind(env, capsys):
    main(["destinations", "add-printer", "x", "x@example.org"])
    main(["destinations", "add-server", "x", "x.example.org"])
    assert main(["destinations", "remove", "x"]) == 2
    assert "printer:x and server:x" in capsys.readouterr().err
    assert main(["destinations", "remove", "server:x"]) == 0
    assert "x" in d.load().printers and "x" not in d.load().servers


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "f.ini"
    d.atomic_write(path, "a")
    d.atomic_write(path, "b")
    assert path.read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.ini"]


CONCURRENT = 24


def test_concurrent_commands_lose_no_edit(env):
    """Many `phaserlink destinations add-printer` processes at once: every
    printer is in the file afterwards (the original kept the last writer's)."""
    site, user = env
    environ = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-m", "phaserlink.client.cli", "destinations", "add-printer",
                          f"p{i}", f"p{i}@print.example.com"], env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(CONCURRENT)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    dests = d.load()
    assert {f"p{i}" for i in range(CONCURRENT)} <= set(dests.printers)
    assert all(dests.printers[f"p{i}"].address == f"p{i}@print.example.com" for i in range(CONCURRENT))
    assert sorted(p.name for p in user.parent.iterdir()) == ["destinations.ini", "destinations.ini.lock"]


def test_an_edit_waits_for_the_lock_and_keeps_the_holders_edit(env):
    """While one edit holds the lock, a second command blocks; when it
    runs it sees the first edit (it re-reads under the lock)."""
    site, user = env
    with d.edit(user) as ini:
        ini.set_section("printer:first", {"address": "first@example.org"})
        proc = subprocess.Popen([sys.executable, "-m", "phaserlink.client.cli", "destinations", "add-printer",
                                 "second", "second@example.org"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # it would finish in well under that if it did not wait for us
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert {"first", "second"} <= set(d.load().printers)

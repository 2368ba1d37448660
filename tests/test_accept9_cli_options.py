"""Issue 9 acceptance: ``phaserlink-admin``'s options where a user types
them, before or after the command (``phaserlink-admin show 7 --json``,
``phaserlink-admin cancel 7 --url ...``), with the issue's exit codes.
The commands against a running appliance are in test_accept9_sender_hold.py."""

from __future__ import annotations

from support.peers import free_port
from test_console_cli import run


def test_options_after_the_command_are_taken_not_a_usage_error(tmp_path):
    creds = tmp_path / "creds"
    creds.write_text("olga:secret\n")
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["printers", "--url", url, "--credentials", str(creds)],
                 ["show", "7", "--json", "--url", url, "--credentials", str(creds)],
                 ["--json", "cancel", "7", "8", "--url", url, "--credentials", str(creds)],
                 ["jobs", "--state", "pending-held", "--json", "--url", url, "--credentials", str(creds)],
                 ["queue", "--url", url, "--credentials", str(creds)]):
        code, _, err = run(argv)
        assert code == 75 and f"cannot reach the console at {url}" in err, (argv, code, err)


def test_an_option_before_the_command_is_not_undone_by_the_command(tmp_path):
    creds = tmp_path / "creds"
    creds.write_text("olga:secret\n")
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(["--url", url, "--credentials", str(creds), "--json", "pause", "demo"])
    assert code == 75 and url in err, err
    assert run(["pause", "--json"])[0] == 2  # still a usage error: no printer named

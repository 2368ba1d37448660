"""phaserlink-admin without a console: usage, credentials, unreachable."""

from __future__ import annotations

import io

from phaserlink.admin import cli
from support.peers import free_port


def run(argv, environ=None):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, out=out, err=err, environ=environ if environ is not None else {})
    return code, out.getvalue(), err.getvalue()


def test_usage_errors_exit_2():
    assert run([])[0] == 2
    assert run(["cancel"])[0] == 2  # needs an id
    assert run(["frobnicate"])[0] == 2


def test_no_credentials_exit_2_and_say_how():
    code, _, err = run(["printers"])
    assert code == 2
    assert "PHASERLINK_ADMIN_USER" in err and "--credentials" in err


def test_credentials_file_must_be_user_colon_password(tmp_path):
    bad = tmp_path / "creds"
    bad.write_text("just-a-password\n")
    code, _, err = run(["--credentials", str(bad), "printers"])
    assert code == 2 and "USER:PASSWORD" in err


def test_unreachable_console_exits_75(tmp_path):
    creds = tmp_path / "creds"
    creds.write_text("olga:secret\n")
    code, _, err = run(["--url", f"http://127.0.0.1:{free_port()}", "--credentials", str(creds), "printers"])
    assert code == 75
    assert "cannot reach" in err


def test_credentials_from_environment(tmp_path):
    env = {"PHASERLINK_ADMIN_USER": "olga", "PHASERLINK_ADMIN_PASSWORD": "pw",
           "PHASERLINK_ADMIN_URL": f"http://127.0.0.1:{free_port()}"}
    assert cli.read_credentials(None, env) == ("olga", "pw")
    # --url defaults from the environment only when the parser is built; the
    # explicit flag is what this test passes
    code, _, _ = run(["--url", env["PHASERLINK_ADMIN_URL"], "queue"], env)
    assert code == 75

"""Client units without a network: argument handling, destination
resolution, format detection, the split decision, password sources,
progress, status tables and the CUPS backend's URI and exit codes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from phaserlink.client import cli, cups_backend, cups_install, destinations as d, progress, sending, status
from phaserlink.client.secrets_source import PasswordUnavailable, get_password


def dests_with(**kw) -> d.Destinations:
    result = d.Destinations()
    server = d.Server("relay", d.Endpoint("relay.example.com", 587, False))
    result.servers["relay"] = server
    result.default_server = "relay"
    result.printers["lab"] = d.Printer("lab", "lab@p.example.com", copies=2, notify=("errors",))
    result.printers["hall"] = d.Printer("hall", "hall@p.example.com", sender="hallfan@example.com")
    result.groups["all"] = d.Group("all", ("lab", "hall"))
    for k, v in kw.items():
        setattr(result, k, v)
    return result


# -- arguments -----------------------------------------------------------------------------


def test_every_subcommand_has_help(capsys):
    for argv in (["--help"], ["send", "--help"], ["destinations", "--help"], ["status", "--help"],
                 ["cups-install", "--help"], ["destinations", "add-printer", "--help"],
                 ["destinations", "add-group", "--help"], ["destinations", "add-server", "--help"],
                 ["destinations", "remove", "--help"], ["destinations", "show", "--help"],
                 ["destinations", "list", "--help"], ["destinations", "set-mailbox", "--help"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
        assert "usage: phaserlink" in capsys.readouterr().out


@pytest.mark.parametrize("argv, complaint", [
    (["send", "f.ps"], "--to"),
    (["send", "--to", "x@y.z"], "FILE"),
    (["send", "f", "--to", "x@y.z", "--copies", "0"], "must be 1 or more"),
    (["send", "f", "--to", "x@y.z", "--max-message-size", "lots"], "is not a size"),
    (["send", "f", "--to", "x@y.z", "--type", "wordperfect"], "is not one of"),
    (["send", "f", "--to", "x@y.z", "--notify", "always"], "is not one of"),
    (["send", "f", "--to", "x@y.z", "--password", "hunter2"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2(argv, complaint, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_send_parses_everything():
    args = cli.build_parser().parse_args(
        ["send", "a.ps", "-", "--to", "lab", "--from", "me@x.org", "--server", "h:25", "--copies", "3",
         "--title", "T", "--notify", "printed,errors", "--max-message-size", "5M", "--type", "pdf", "--wait"])
    assert args.files == ["a.ps", "-"]
    assert args.max_message_size == 5 * 1024 * 1024
    assert args.notify == ("printed", "failed")  # old word read, new word kept
    assert (args.copies, args.type, args.wait, args.sender) == (3, "pdf", True, "me@x.org")


def test_send_with_no_server_anywhere_says_how_to_fix_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(d.SITE_ENV, str(tmp_path / "none.ini"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "a.ps").write_bytes(b"%!PS\n")
    assert cli.main(["send", str(tmp_path / "a.ps"), "--to", "p@example.com"]) == 2
    assert "--server HOST:PORT" in capsys.readouterr().err


def test_send_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(d.SITE_ENV, str(tmp_path / "none.ini"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli.main(["send", str(tmp_path / "nope.ps"), "--to", "p@example.com", "--server", "h:25"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_wait_without_mailbox_is_refused_before_sending(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(d.SITE_ENV, str(tmp_path / "none.ini"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "a.ps").write_bytes(b"%!PS\n")
    assert cli.main(["send", str(tmp_path / "a.ps"), "--to", "p@example.com", "--server", "h:25", "--wait"]) == 2
    assert "[mailbox]" in capsys.readouterr().err


# -- resolution ------------------------------------------------------------------------------


def test_printer_target_takes_its_options_and_the_default_server():
    (t,) = sending.resolve(dests_with(default_from="me@example.com"), "lab")
    assert (t.address, t.copies, t.notify, t.sender, t.server.name) == (
        "lab@p.example.com", 2, ("errors",), "me@example.com", "relay")


def test_group_is_one_target_per_member():
    targets = sending.resolve(dests_with(default_from="me@example.com"), "all")
    assert [t.label for t in targets] == ["lab", "hall"]
    assert [t.sender for t in targets] == ["me@example.com", "hallfan@example.com"]


def test_from_beats_everything_and_server_option_beats_entries():
    server = sending.server_from_text("127.0.0.1:2525", dests_with())
    targets = sending.resolve(dests_with(default_from="me@example.com"), "all", server=server,
                              sender="boss@example.com")
    assert {t.sender for t in targets} == {"boss@example.com"}
    assert {t.server.endpoint for t in targets} == {d.Endpoint("127.0.0.1", 2525, False)}


def test_plain_address_with_no_destinations_at_all():
    server = sending.server_from_text("smtps://mail.example.com", d.Destinations())
    (t,) = sending.resolve(d.Destinations(), "p@print.example.com", server=server, login="alice")
    assert t.address == "p@print.example.com"
    assert t.server.endpoint == d.Endpoint("mail.example.com", 465, True)
    assert t.sender.startswith("alice@")


def test_unknown_destination_and_unknown_server_name():
    with pytest.raises(d.DestinationError, match="not a printer, a group or a mail address"):
        sending.resolve(dests_with(), "nowhere")
    with pytest.raises(d.DestinationError, match="no SMTP server named 'other'"):
        sending.server_from_text("other", dests_with())


def test_default_sender_is_login_at_host():
    sender = sending.default_sender("alice")
    assert sender.startswith("alice@") and len(sender) > len("alice@")


# -- format, message, split ---------------------------------------------------------------------


@pytest.mark.parametrize("data, fmt", [
    (b"%!PS-Adobe-3.0\n", "postscript"),
    (b"%PDF-1.7\n", "pdf"),
    (b"\x1bE\x1b&l0O", "pcl"),
    (b"hello world\n", "text"),
])
def test_format_detected_from_data(tmp_path, data, fmt):
    path = tmp_path / "job"
    path.write_bytes(data)
    assert sending.detect(path, None) == fmt
    assert sending.detect(path, "pdf") == "pdf"  # --type wins


def test_undetectable_data_asks_for_type(tmp_path):
    path = tmp_path / "job"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(sending.JobError, match="--type"):
        sending.detect(path, None)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(sending.JobError, match="empty"):
        sending.detect(empty, None)


def test_limit_keeps_headroom_for_relays():
    assert sending.limit_from_server(None) == sending.DEFAULT_LIMIT == 10 * 1024 * 1024
    assert sending.limit_from_server(10_000_000) == 10_000_000 - 500_000
    assert sending.limit_from_server(200 * 1024) == 200 * 1024 - sending.RELAY_HEADROOM
    assert sending.limit_from_server(1000) == sending.MIN_LIMIT


def target(**kw) -> sending.Target:
    base = dict(label="lab", address="lab@p.example.com", server=d.Server("s", d.Endpoint("h", 25, False)),
                sender="me@example.com")
    base.update(kw)
    return sending.Target(**base)


def test_small_job_is_one_message_with_our_fields(tmp_path):
    data = tmp_path / "a.ps"
    data.write_bytes(b"%!PS\nshowpage\n")
    msg = sending.build_message(target(copies=2), data, tmp_path, job_id="J1", format="postscript",
                                filename="a.ps", title=None, copies=None, notify=("printed", "errors"))
    frags = sending.split(msg, sending.DEFAULT_LIMIT, tmp_path, "J1")
    assert [f.path for f in frags] == [msg]
    head = msg.read_bytes().split(b"\n\n")[0].decode()
    assert "X-PhaserLink-Job-Id: J1" in head
    assert "X-PhaserLink-Copies: 2" in head
    assert "X-PhaserLink-Notify: printed, failed" in head
    assert "Content-Type: application/postscript" in head
    assert frags[0].message_id and frags[0].message_id in head


def test_big_job_splits_and_every_fragment_fits_on_the_wire(tmp_path):
    data = tmp_path / "big.ps"
    data.write_bytes(b"%!PS\n" + os.urandom(300_000))
    msg = sending.build_message(target(), data, tmp_path, job_id="J2", format="postscript", filename="big.ps",
                                title="Big", copies=1, notify=None)
    limit = 64 * 1024
    frags = sending.split(msg, limit, tmp_path, "J2")
    assert len(frags) > 5
    assert all(sending.wire_size(f.path) <= limit for f in frags)
    ids = [f.message_id for f in frags]
    assert len(set(ids)) == len(ids) and all(ids)
    from phaserlink.message.partial import reassemble

    out = tmp_path / "joined.eml"
    reassemble([f.path for f in frags], out)
    assert out.read_bytes() == msg.read_bytes()


def test_wire_size_counts_crlf():
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        f.write(b"a\nb\r\nc\n")
        f.flush()
        assert sending.wire_size(Path(f.name)) == 9


def test_notify_words_map_to_message_events():
    assert sending.notify_events(("printed", "errors")) == ("printed", "failed")
    assert "fragment" in sending.notify_events(("trace",))


def test_report_says_which_fragments_went(tmp_path):
    frags = [sending.Fragment(tmp_path / f"f{i}", f"<id{i}@x>", 10) for i in range(1, 4)]
    result = sending.JobResult(target(), "J3", "a.ps", frags, sent=1,
                               error="h:25 refused (message): 552 5.3.4 too big", permanent=True)
    text = "\n".join(sending.report_lines(result))
    assert "FAILED: h:25 refused (message): 552 5.3.4 too big" in text
    assert "<id1@x>" in text and "<id2@x>" not in text
    assert "fragments 1-1 of 3 were already sent; fragments 2-3 were not" in text
    assert result.exit_code == sending.EXIT_FAILED
    result.permanent = False
    assert result.exit_code == sending.EXIT_TEMPFAIL
    assert sending.worst_exit([result, sending.JobResult(target(), "J4", "a", frags, sent=3)]) == 75


# -- passwords ------------------------------------------------------------------------------------


def test_password_sources_in_order(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file\ncomment\n")
    assert get_password("x", password_file=pw, environ={"PHASERLINK_PASSWORD": "env"}) == "from-file"
    assert get_password("x", password_env="MINE", environ={"MINE": "mine", "PHASERLINK_PASSWORD": "e"}) == "mine"
    assert get_password("x", environ={"PHASERLINK_PASSWORD": "env"}) == "env"
    assert get_password("x", environ={}, interactive=True, prompt=lambda text: "typed") == "typed"
    with pytest.raises(PasswordUnavailable, match=r"\$MINE"):
        get_password("x", password_env="MINE", environ={}, interactive=False)


# -- progress ---------------------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_bar_only_on_a_terminal_and_only_after_a_moment():
    assert type(progress.for_stream(io.StringIO())) is progress.Progress
    assert isinstance(progress.for_stream(FakeTTY()), progress.TerminalBar)
    now = [0.0]
    stream = FakeTTY()
    bar = progress.TerminalBar(stream, clock=lambda: now[0])
    bar.start("lab", 1000)
    bar.advance(100)
    bar.finish()
    assert stream.getvalue() == ""  # quick: nothing drawn
    bar.start("lab", 1000)
    now[0] = 1.0
    bar.advance(500)
    now[0] = 2.0
    bar.advance(500)
    bar.finish()
    assert "50%" in stream.getvalue() and "100%" in stream.getvalue()
    assert stream.getvalue().endswith("\n")


def test_cups_progress_every_ten_percent():
    stream = io.StringIO()
    p = progress.CupsProgress(stream)
    p.start("lab", 100)
    for _ in range(100):
        p.advance(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "INFO: Sending lab: 0%"
    assert lines[-1] == "INFO: Sending lab: 100%"
    assert len(lines) == 11


# -- status -------------------------------------------------------------------------------------------


def js(job, state, order, reasons=()):
    return status.JobStatus(job, "lab", state, reasons, 1, "2026-11-26 10:00:00", f"u{order}", order)


def test_latest_prefers_a_final_state_over_a_late_one():
    found = [js("A", "processing", 1), js("A", "completed", 2), js("A", "pending", 3), js("B", "pending", 4)]
    assert [(s.job_id, s.state) for s in status.latest(found)] == [("A", "completed"), ("B", "pending")]


def test_status_table_from_real_reports(tmp_path):
    from phaserlink.message.report import parse_status_report, write_status_report

    path = tmp_path / "r.eml"
    with open(path, "wb") as f:
        write_status_report(f, from_="postmaster@p.test", to="me@example.com", printer="lab", job_id="J9",
                            state="completed", reasons=("job-completed-successfully",), event="printed", pages=3)
    report = parse_status_report(path)
    row = status.from_report(report, "u1", 0)
    assert (row.job_id, row.printer, row.state, row.pages) == ("J9", "lab", "completed", 3)
    lines = status.format_table([row])
    assert lines[0].split() == ["JOB", "PRINTER", "STATE", "PAGES", "WHEN", "REASONS"]
    assert "J9" in lines[1] and "job-completed-successfully" in lines[1]


def test_status_names_the_job_by_the_senders_id_without_a_journal(tmp_path):
    """On a machine that did not send the job, the id `send` printed still
    finds it: the appliance echoes it in the report."""
    from phaserlink.message import fields
    from phaserlink.message.report import parse_status_report, write_status_report

    path = tmp_path / "r.eml"
    with open(path, "wb") as f:
        write_status_report(f, from_="postmaster@p.test", to="me@example.com", printer="lab", job_id="J9",
                            state="completed", reasons=(), event="printed", pages=None,
                            extra_fields={fields.SENDER_JOB_ID: "laptop-42"})
    row = status.from_report(parse_status_report(path), "u1", 0)
    assert (row.job_id, row.printer_job) == ("laptop-42", "J9")


# -- CUPS backend ---------------------------------------------------------------------------------------


def test_discovery_line(capsys):
    assert cups_backend.main([]) == 0
    assert capsys.readouterr().out == 'network phaserlink "Unknown" "PhaserLink (print by email)"\n'


def test_uri_parsing():
    assert cups_backend.parse_uri("phaserlink://lab") == ("lab", {})
    assert cups_backend.parse_uri("phaserlink://p%40print.example.com?server=127.0.0.1:2525&from=a%40b.c") == (
        "p@print.example.com", {"server": "127.0.0.1:2525", "from": "a@b.c"})
    for bad in ("ipp://x", "phaserlink://", "phaserlink://x?colour=1"):
        with pytest.raises(cups_backend.BackendConfigError):
            cups_backend.parse_uri(bad)


def test_backend_misconfigured_queue_stops(tmp_path, capsys):
    env = {"DEVICE_URI": "phaserlink://nowhere", d.SITE_ENV: str(tmp_path / "none.ini")}
    os.environ[d.SITE_ENV] = str(tmp_path / "none.ini")
    try:
        err = io.StringIO()
        assert cups_backend.main(["1", "alice", "t", "1", ""], stderr=err, environ=env,
                                 stdin=io.BytesIO(b"%!PS\n")) == cups_backend.CUPS_BACKEND_STOP
        assert err.getvalue().startswith("ERROR: ")
    finally:
        del os.environ[d.SITE_ENV]


def test_backend_wrong_argument_count():
    err = io.StringIO()
    assert cups_backend.main(["1", "2"], stderr=err, environ={}) == cups_backend.CUPS_BACKEND_FAILED
    assert "Usage" in err.getvalue()


def test_cups_install_writes_a_root_owned_wrapper(tmp_path):
    path = cups_install.install(tmp_path / "backend", run_as="root")
    assert path.name == "phaserlink"
    st = path.stat()
    assert st.st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        assert st.st_uid == 0
    assert "-m phaserlink.client.cups_backend" in path.read_text()
    assert cups_install.install(tmp_path / "backend", run_as="lp").stat().st_mode & 0o777 == 0o755
    import subprocess

    out = subprocess.run([str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("network phaserlink ")


def test_wait_times_take_durations():
    args = cli.build_parser().parse_args(["send", "a.ps", "--to", "lab", "--wait-timeout", "2h",
                                          "--wait-interval", "30s"])
    assert (args.wait_timeout, args.wait_interval) == (7200.0, 30.0)
    assert cli.build_parser().parse_args(["send", "a.ps", "--to", "lab", "--wait-timeout", "90"]).wait_timeout == 90.0

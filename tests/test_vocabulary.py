"""One vocabulary for status events (phaserlink/message/events.py).

site.ini's ``notify``, destinations.ini, ``phaserlink send --notify``, the
``X-PhaserLink-Notify`` header and the ``X-PhaserLink-Event`` of a status
report all use the same words; the old site.ini words (``errors``,
``trace``) are still read everywhere, and nothing writes them."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from support import printer_fakes
from support.printer_fakes import Rig, make_site, message

from phaserlink import config
from phaserlink.client import cli, destinations as d, sending
from phaserlink.message import events, fields
from phaserlink.message.mime import read_headers
from phaserlink.message.report import parse_status_report, write_status_report
from phaserlink.printer import status
from phaserlink.printer.toolkit import default_toolkit, notify_words

ALL = ("received", "printed", "failed", "delayed", "fragment")


# -- the words ----------------------------------------------------------------------------


def test_the_events_are_the_report_events():
    assert events.EVENTS == ALL
    assert fields.EVENTS is events.EVENTS and config.NOTIFY_EVENTS is events.EVENTS


@pytest.mark.parametrize("words, expected", [
    ("errors", ("failed",)),
    ("error", ("failed",)),
    ("trace", ALL),
    ("printed, errors", ("printed", "failed")),
    ("Printed,Errors", ("printed", "failed")),
    ("errors failed", ("failed",)),
    ("all", ALL),
    ("delayed received", ("received", "delayed")),
    ("none", ()),
])
def test_old_and_new_words_parse_to_events(words, expected):
    assert events.parse_events(words) == expected


@pytest.mark.parametrize("words, why", [
    ("always", "'always' is not one of received, printed, failed, delayed, fragment, all, none"),
    ("printed, bogus", "'bogus' is not one of"),
    ("none, printed", "cannot be combined"),
])
def test_strict_readers_refuse_unknown_words(words, why):
    with pytest.raises(events.UnknownEvent, match=why):
        events.parse_events(words)


@pytest.mark.parametrize("header, expected", [
    (None, None),
    ("", None),
    ("bogus, ,;", None),  # nothing usable: the printer's policy applies
    ("none", ()),
    ("printed, none", ()),  # a sender who says none gets none
    ("errors", ("failed",)),  # an older client's (or a person's) old word
    ("trace", ALL),
    ("FAILED, bogus, failed", ("failed",)),
])
def test_the_header_is_read_leniently(header, expected):
    assert events.read_events(header) == expected
    assert notify_words(header) == (None if expected is None else list(expected))


def test_header_value_is_always_the_new_vocabulary():
    assert events.header_value(["printed", "errors"]) == "printed, failed"
    assert events.header_value(["trace"]) == ", ".join(ALL)
    assert events.header_value([]) == "none"
    assert events.header_value(["none"]) == "none"


# -- every reader accepts the old words ---------------------------------------------------------


def site_with_notify(tmp_path: Path, notify: str) -> Path:
    path = tmp_path / "site.ini"
    path.write_text(textwrap.dedent(f"""\
        [appliance]
        spool = {tmp_path / 'var'}
        smtp_listen = tcp:0
        pop3_listen = tcp:0
        [printer:lp]
        sender_auth = none
        allowed_senders = *@example.com
        notify = {notify}
        """))
    return path


@pytest.mark.parametrize("notify, expected", [
    ("printed, errors", ("printed", "failed")),
    ("trace", ALL),
    ("received, errors, delayed", ("received", "failed", "delayed")),
    ("printed, failed", ("printed", "failed")),
    ("none", ()),
])
def test_site_ini_notify_reads_old_and_new_words(tmp_path, notify, expected):
    assert config.load(site_with_notify(tmp_path, notify)).printers["lp"].notify == expected


def test_site_ini_default_notify_is_printed_and_failed(tmp_path):
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path / 'var'}\n[printer:lp]\nsender_auth = none\nallowed_senders = *\n")
    assert config.load(path).printers["lp"].notify == ("printed", "failed")


@pytest.mark.parametrize("notify, why", [
    ("sometimes", "'sometimes' is not one of"),
    ("none, printed", "cannot be combined"),  # was read as "printed": a contradiction, now said
])
def test_site_ini_bad_notify_names_file_section_key(tmp_path, notify, why):
    path = site_with_notify(tmp_path, notify)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert (info.value.file, info.value.section, info.value.key) == (str(path), "printer:lp", "notify")
    assert why in info.value.why


def test_destinations_ini_and_cli_read_old_words(tmp_path):
    site = tmp_path / "site.ini"
    site.write_text("[defaults]\nnotify = errors\n"
                    "[printer:lab]\naddress = lab@p.example.com\nnotify = trace\n")
    dests = d.load(site, tmp_path / "none.ini")
    assert dests.default_notify == ("failed",)
    assert dests.printers["lab"].notify == ALL
    args = cli.build_parser().parse_args(["send", "a.ps", "--to", "lab", "--notify", "trace"])
    assert args.notify == ALL
    args = cli.build_parser().parse_args(["send", "a.ps", "--to", "lab", "--notify", "all"])
    assert args.notify == ALL


def test_cli_help_lists_the_new_words(capsys):
    with pytest.raises(SystemExit):
        cli.main(["send", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "received,printed,failed,delayed,fragment" in out and "errors" not in out


def test_reports_read_back_an_old_word_as_its_event():
    out = io.BytesIO()
    write_status_report(out, from_="lp@p.example.com", to="a@example.com", printer="lp", job_id="J1",
                        state="aborted", event="failed")
    old = out.getvalue().replace(b"X-PhaserLink-Event: failed", b"X-PhaserLink-Event: errors")
    assert parse_status_report(old).event == "failed"


# -- every writer writes the new words ------------------------------------------------------------


def target(**kw) -> sending.Target:
    base = dict(label="lab", address="lp@phaserlink.test", server=d.Server("s", d.Endpoint("h", 25, False)),
                sender="alice@example.com")
    base.update(kw)
    return sending.Target(**base)


def job_message(tmp_path: Path, notify: tuple[str, ...] | None, **kw) -> Path:
    data = tmp_path / "a.ps"
    data.write_bytes(b"%!PS\nshowpage\n")
    return sending.build_message(target(**kw), data, tmp_path, job_id="J1", format="postscript",
                                 filename="a.ps", title=None, copies=None, notify=notify)


def notify_header(path: Path) -> str | None:
    with open(path, "rb") as f:
        return read_headers(f).get(fields.NOTIFY)


@pytest.mark.parametrize("words, wire", [
    (("printed", "errors"), "printed, failed"),
    (("trace",), "received, printed, failed, delayed, fragment"),
    (("errors",), "failed"),
    ((), "none"),
])
def test_the_client_puts_only_new_words_on_the_wire(tmp_path, words, wire):
    assert notify_header(job_message(tmp_path, words)) == wire


def test_old_words_from_destinations_reach_the_wire_as_new_words(tmp_path):
    site = tmp_path / "site.ini"
    site.write_text("[printer:lab]\naddress = lp@phaserlink.test\nnotify = errors\n")
    dests = d.load(site, tmp_path / "none.ini")
    dests.servers["s"] = d.Server("s", d.Endpoint("h", 25, False))
    dests.default_server = "s"
    (t,) = sending.resolve(dests, "lab", sender="alice@example.com")
    data = tmp_path / "a.ps"
    data.write_bytes(b"%!PS\n")
    path = sending.build_message(t, data, tmp_path, job_id="J2", format="postscript", filename="a.ps",
                                 title=None, copies=None, notify=None)
    assert notify_header(path) == "failed"


def test_a_report_given_an_old_word_writes_the_new_one():
    out = io.BytesIO()
    write_status_report(out, from_="lp@p.example.com", to="a@example.com", printer="lp", job_id="J1",
                        state="aborted", event="errors")
    assert b"X-PhaserLink-Event: failed\n" in out.getvalue()
    assert b"processed/error" in out.getvalue()
    with pytest.raises(ValueError, match="is not one event"):
        write_status_report(io.BytesIO(), from_="lp@p.example.com", to="a@example.com", printer="lp",
                            job_id="J1", state="aborted", event="trace")


# -- the appliance's policy -------------------------------------------------------------------------


def test_a_job_spooled_with_old_words_keeps_its_wish():
    """A job's request is saved in its state.json; one saved before the
    upgrade says "errors" and must still get its failure mail."""
    assert status.effective_notify(("printed", "failed"), ["errors"]) == {"failed"}
    assert status.effective_notify(("printed", "errors"), ["failed"]) == {"failed"}
    assert status.effective_notify(("trace",), None) == set(ALL)


def test_a_trace_printer_honours_a_narrower_request(tmp_path):
    """A printer whose policy is everything (``trace``) and a sender who asks
    for ``printed`` only: the sender gets "printed".  Before, the policy was
    the word "trace" and the request the word "printed", and their
    intersection was empty: no status mail at all."""
    rig = Rig(tmp_path, make_site(tmp_path, notify="trace")).start()
    rig.deliver(message(X_PhaserLink_Notify="printed"))
    assert rig.queue.events() == ["printed"]


def test_set_complete_is_reported_as_fragment():
    assert status.wants(frozenset({"fragment"}), status.SET_COMPLETE)
    assert not status.wants(frozenset({"printed"}), status.SET_COMPLETE)
    assert status.REPORT_EVENTS[status.SET_COMPLETE] == "fragment"


# -- the round trip: client -> appliance -> status mail -> client ------------------------------------


@pytest.fixture
def real_rig(tmp_path, monkeypatch):
    """The printer service with the real message toolkit (header reading,
    extraction, status reports), a fake printer and a fake outbound queue."""
    monkeypatch.setattr(printer_fakes, "fake_toolkit", default_toolkit)

    def make(notify: str) -> Rig:
        return Rig(tmp_path, make_site(tmp_path, notify=notify))

    return make


@pytest.mark.parametrize("policy", ["printed, errors", "printed, failed"])
def test_round_trip_client_words_to_appliance_reports(tmp_path, real_rig, policy):
    rig = real_rig(policy).start()
    sent = tmp_path / "sent"
    sent.mkdir()
    argv = ["send", "a.ps", "--to", "lab", "--notify", "received,errors,printed"]
    words = cli.build_parser().parse_args(argv).notify
    path = job_message(sent, words)
    assert notify_header(path) == "received, printed, failed"
    rig.deliver(path.read_bytes())
    reports = [parse_status_report(m.data) for m in rig.queue.messages if m.committed]
    assert [r.event for r in reports] == ["printed"]  # received: not in the printer's policy
    assert reports[0].state == "completed" and reports[0].extra[fields.SENDER_JOB_ID] == "J1"

    rig.outputs["lp"].mode = "reject"
    rig.deliver(job_message(sent, ("errors",)).read_bytes())
    report = parse_status_report(rig.queue.messages[-1].data)
    assert report.event == "failed" and report.event in events.EVENTS
    assert report.state == "aborted" and "processed/error" in report.disposition


def test_destinations_edits_write_the_new_words(tmp_path, monkeypatch):
    """``phaserlink destinations add-printer --notify errors`` saves the
    event names, not the words typed."""
    monkeypatch.setenv(d.SITE_ENV, str(tmp_path / "none.ini"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli.main(["destinations", "add-printer", "lab", "lab@p.example.com", "--notify", "printed,errors"]) == 0
    assert cli.main(["destinations", "add-group", "g", "lab", "--notify", "trace"]) == 0
    assert cli.main(["destinations", "set-defaults", "--notify", "none"]) == 0
    text = d.user_path().read_text()
    assert "notify = printed, failed\n" in text
    assert "notify = received, printed, failed, delayed, fragment\n" in text
    assert "notify = none\n" in text and "errors" not in text and "trace" not in text
    dests = d.load()
    assert dests.printers["lab"].notify == ("printed", "failed") and dests.default_notify == ()

"""Job options without peers: the Subject form, a printer's policy
(options_allowed, options_default) and its site.ini errors, the PJL SET
lines, and the dispatcher's choice of who selects pages.  The same on real
peers: tests/test_job_options_peers.py."""

from __future__ import annotations

import pytest

from phaserlink import config
from phaserlink.message.job_options import (
    JobOptions,
    apply_policy,
    parse_defaults,
    parse_option_names,
    parse_subject,
)
from phaserlink.printer.output import pjl


# -- the Subject -------------------------------------------------------------------


def test_the_issues_subject_form():
    said = parse_subject("Report [duplex] [copies=2] [a4] [pages=1-3]")
    o = said.options
    assert (o.sides, o.copies, o.media, o.pages) == ("two-sided-long-edge", 2, "a4", ((1, 3),))
    assert said.title == "Report"
    assert o.ignored == ()


@pytest.mark.parametrize("subject, expected", [
    ("x [Duplex-Short]", {"sides": "two-sided-short-edge"}),
    ("x [ short edge ]", {"sides": "two-sided-short-edge"}),
    ("x [SIMPLEX]", {"sides": "one-sided"}),
    ("x [Colour] [Letter]", {"color": "color", "media": "letter"}),
    ("x [mono]", {"color": "monochrome"}),
    ("x [Monochrome]", {"color": "monochrome"}),
    ("x [ Copies = 3 ]", {"copies": 3}),
    ("x [2 copies]", {"copies": 2}),
    ("x [pages: 1-3, 7]", {"pages": ((1, 3), (7, 7))}),
    ("x [duplex, mono; a5]", {"sides": "two-sided-long-edge", "color": "monochrome", "media": "a5"}),
    ("x [media=iso_a4_210x297mm]", {"media": "iso_a4_210x297mm"}),
])
def test_the_subject_is_read_forgivingly(subject, expected):
    o = parse_subject(subject).options
    got = {name: o.value(name) for name in o.given()}
    assert got == expected
    assert parse_subject(subject).title == "x"


def test_brackets_that_are_not_options_stay_in_the_title_and_are_no_error():
    said = parse_subject("[EXT] Re: [Ticket 42] minutes [duplex]")
    assert said.options.sides == "two-sided-long-edge"
    assert said.title == "[EXT] Re: [Ticket 42] minutes"
    assert said.options.ignored == ()
    assert not parse_subject("[EXT] nothing for us").options
    assert not parse_subject(None).options


def test_our_brackets_with_bad_values_are_listed_not_applied():
    said = parse_subject("Q3 [copies=0] [pages=3-1] [a4]")
    assert said.options.copies is None and said.options.pages == ()
    assert said.options.media == "a4"
    assert said.options.ignored == ("[copies=0]", "[pages=3-1]")
    assert said.title == "Q3 [copies=0] [pages=3-1]"


def test_the_first_bracket_wins_and_the_header_wins_over_the_subject():
    said = parse_subject("x [simplex] [duplex]").options
    assert said.sides == "one-sided"
    header = JobOptions.parse("sides=two-sided-short-edge")
    merged = header.over(said)
    assert merged.sides == "two-sided-short-edge"


# -- a printer's policy ----------------------------------------------------------------


def test_a_site_forces_duplex_with_a_default_senders_may_not_change():
    defaults = parse_defaults("sides=two-sided-long-edge, media=a4")
    allowed = parse_option_names("copies, color, pages, media")
    asked = JobOptions(sides="one-sided", copies=2, media="letter")
    applied, notes = apply_policy(asked, allowed, defaults)
    assert (applied.sides, applied.copies, applied.media) == ("two-sided-long-edge", 2, "letter")
    assert notes == ["sides=one-sided is not allowed on this printer; not applied "
                     "(printed with sides=two-sided-long-edge)"]
    applied, notes = apply_policy(JobOptions(), allowed, defaults)
    assert (applied.sides, applied.media, notes) == ("two-sided-long-edge", "a4", [])


def test_option_names_and_defaults_are_read_strictly():
    assert parse_option_names("all") == ("copies", "sides", "media", "color", "pages")
    assert parse_option_names("none") == ()
    assert parse_option_names("pages copies") == ("copies", "pages")
    assert parse_defaults("pages=1-3,7; copies=2").pages == ((1, 3), (7, 7))
    for bad in ("sides=both", "staple=yes", "media=napkin", "copies=0", "duplex", "sides=one-sided; sides=one-sided"):
        with pytest.raises(ValueError):
            parse_defaults(bad)
    with pytest.raises(ValueError, match="'staples' is not an option"):
        parse_option_names("copies, staples")


def _site(tmp_path, extra: str):
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path / 'var'}\n[printer:p]\nallowed_senders = *\n{extra}")
    return path


@pytest.mark.parametrize("extra, key, why", [
    ("options_allowed = copies, staples\n", "options_allowed", "'staples' is not an option"),
    ("options_default = sides=both\n", "options_default", "sides='both'"),
    ("options_default = duplex\n", "options_default", "expected NAME=VALUE"),
    ("options_default = copies=20\n", "options_default", "more than copies_max (10)"),
    ("subject_options = perhaps\n", "subject_options", "is not yes or no"),
])
def test_option_mistakes_name_file_section_and_key(tmp_path, extra, key, why):
    path = _site(tmp_path, extra)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert (str(e.value.file), e.value.section, e.value.key) == (str(path), "printer:p", key)
    assert why in e.value.why, e.value.why


def test_option_keys_and_their_defaults(tmp_path):
    plain = config.load(_site(tmp_path, "")).printers["p"]
    assert (plain.subject_options, plain.options_allowed, plain.options_default) == (
        False, ("copies", "sides", "media", "color", "pages"), JobOptions())
    set_ = config.load(_site(tmp_path, "subject_options = yes\noptions_allowed = copies, pages\n"
                                       "options_default = sides=two-sided-long-edge, media=a4\n")).printers["p"]
    assert set_.subject_options and set_.options_allowed == ("copies", "pages")
    assert set_.options_default == JobOptions(sides="two-sided-long-edge", media="a4")


# -- PJL -----------------------------------------------------------------------------------


def test_pjl_set_lines_for_sides_media_and_colour():
    lines, notes = pjl.job_settings(JobOptions(sides="two-sided-short-edge", media="iso_a4_210x297mm",
                                               color="monochrome"))
    assert lines == [b"@PJL SET DUPLEX=ON", b"@PJL SET BINDING=SHORTEDGE", b"@PJL SET PAPER=A4",
                     b"@PJL SET RENDERMODE=GRAYSCALE"]
    assert notes == []
    lines, notes = pjl.job_settings(JobOptions(sides="one-sided", media="tabloid", color="color"))
    assert lines == [b"@PJL SET DUPLEX=OFF", b"@PJL SET PAPER=LEDGER", b"@PJL SET RENDERMODE=COLOR"]
    lines, notes = pjl.job_settings(JobOptions(media="iso_b5_176x250mm"))
    assert lines == [] and notes == ["media=iso_b5_176x250mm has no PJL paper name; printed on the "
                                     "printer's default paper"]
    assert pjl.header("n", 2, [b"@PJL SET DUPLEX=ON"]) == (
        b'\x1b%-12345X@PJL JOB NAME="n"\r\n@PJL USTATUS JOB=ON\r\n@PJL SET QTY=2\r\n@PJL SET DUPLEX=ON\r\n')


# -- the dispatcher: what an output is given ---------------------------------------------


class _Spool:
    def job_dir(self, job_id):
        from pathlib import Path

        return Path("/spool") / job_id


def _dispatcher(tmp_path, extra: str = ""):
    from phaserlink.printer.dispatch import Dispatcher

    printer = config.load(_site(tmp_path, extra)).printers["p"]
    return Dispatcher(printer, _Spool(), output=None, status=None, tools=None, reactor=None)


def _job(**kw):
    from phaserlink.printer.jobs import Job

    return Job(job_id="j1", printer="p", state="pending", reasons=[], created=0, changed=0, **kw)


def test_pages_chosen_before_are_not_asked_of_the_printer_again(tmp_path):
    """A job resumed after a crash: its document's pages were chosen by
    Ghostscript (Document.pages_by), so the output is not asked for them."""
    from phaserlink.printer.jobs import Document

    d = _dispatcher(tmp_path)
    job = _job(options="sides=two-sided-long-edge; pages=2", copies=3)
    chosen = d._output_job(job, Document(file="docs/pages-00.ps", format="postscript", pages_by="ghostscript"), 0)
    assert (chosen.options, chosen.copies) == ("sides=two-sided-long-edge", 3)
    by_printer = d._output_job(job, Document(file="docs/01.pdf", format="pdf", pages_by="printer"), 0)
    assert by_printer.options == "sides=two-sided-long-edge; pages=2"


def test_the_policy_is_applied_before_any_output_sees_the_options(tmp_path):
    from phaserlink.printer.jobs import Document

    d = _dispatcher(tmp_path, "options_allowed = pages\noptions_default = sides=two-sided-long-edge, copies=2\n")
    job = _job(options="sides=one-sided; color=color; staple=yes", copies=5)
    out = d._output_job(job, Document(file="docs/01.ps", format="postscript"), 0)
    assert (out.options, out.copies) == ("sides=two-sided-long-edge", 2)
    _options, notes = d.options(job)
    assert notes == ["option 'staple=yes' not understood; ignored",
                     "copies=5 is not allowed on this printer; not applied (printed with copies=2)",
                     "sides=one-sided is not allowed on this printer; not applied (printed with sides=two-sided-long-edge)",
                     "color=color is not allowed on this printer; not applied"]


# -- the intake: Subject and header ----------------------------------------------------


def _taken(tmp_path, extra: str, **facts):
    from phaserlink.printer.intake import Intake
    from phaserlink.printer.toolkit import MessageFacts

    intake = object.__new__(Intake)  # only its printer is needed here
    intake.printer = config.load(_site(tmp_path, extra)).printers["p"]
    fields = dict(sender="a@example.com", message_id=None, title=facts.get("subject"), copies=1, notify=None,
                  partial=None)
    fields.update(facts)
    job = _job()
    intake._take_options(job, MessageFacts(**fields))
    return job


def test_subject_options_only_when_the_printer_reads_them(tmp_path):
    on = _taken(tmp_path, "subject_options = yes\n", subject="Report [duplex] [copies=2] [Ticket 7] [pages=9-1]")
    assert (on.title, on.copies, on.options) == ("Report [Ticket 7] [pages=9-1]", 2, "sides=two-sided-long-edge")
    assert on.option_notes == ["[pages=9-1] in the Subject was not understood; not applied"]
    off = _taken(tmp_path, "", subject="Report [duplex] [copies=2]")
    assert (off.title, off.copies, off.options, off.option_notes) == ("Report [duplex] [copies=2]", 1, "", [])


def test_the_header_wins_over_the_subject(tmp_path):
    job = _taken(tmp_path, "subject_options = yes\n", subject="Report [duplex] [copies=3] [a4]", title="My title",
                 options="sides=one-sided", copies=1, copies_given=True)
    assert (job.title, job.copies) == ("My title", 1)
    assert JobOptions.parse(job.options) == JobOptions(sides="one-sided", media="a4")
    many = _taken(tmp_path, "subject_options = yes\n", subject="x [copies=50]")
    assert many.copies == 10
    assert many.option_notes == ["copies=50 is more than printer p makes (copies_max = 10); 10 printed"]

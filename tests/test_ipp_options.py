"""Job options (sides, media, colour, pages): ``phaserlink send`` flags ->
one X-PhaserLink-Options header -> the job -> IPP job-template attributes
at a real ippeveprinter; what the printer cannot do is said in the status
mail."""

from __future__ import annotations

import smtplib
from email.utils import make_msgid

import pytest

from phaserlink.client import cli
from phaserlink.client.send_command import send_options
from phaserlink.message import build, fields
from phaserlink.message.extract import job_request_of
from phaserlink.message.job_options import JobOptions
from support.e2e import SENDER, wait_until
from test_ipp_e2e import Site, ippeve, pdf_bytes, site_for  # noqa: F401 (fixtures)


def test_send_flags_become_one_header_value():
    args = cli.build_parser().parse_args(["send", "--to", "p", "--sides", "two-sided-long-edge", "--media", "A4",
                                          "--monochrome", "--pages", "1-3,7", "f.pdf"])
    assert send_options(args) == "sides=two-sided-long-edge; media=a4; color=monochrome; pages=1-3,7"
    plain = cli.build_parser().parse_args(["send", "--to", "p", "f.pdf"])
    assert send_options(plain) is None


@pytest.mark.parametrize("argv", [["--pages", "3-1"], ["--pages", "x"], ["--media", "napkin"],
                                  ["--sides", "both"], ["--color", "--monochrome"]])
def test_bad_option_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["send", "--to", "p", *argv, "f.pdf"])
    assert e.value.code == 2


def test_the_header_is_read_forgivingly():
    o = JobOptions.parse("Sides=two-sided-short-edge;media=letter; staple=yes; pages=0-2; color=color")
    assert (o.sides, o.media, o.color, o.pages) == ("two-sided-short-edge", "letter", "color", ())
    assert o.ignored == ("staple=yes", "pages=0-2")
    assert o.pwg_media == "na_letter_8.5x11in"


def test_the_header_travels_in_the_job_message(tmp_path):
    data = tmp_path / "d.pdf"
    data.write_bytes(pdf_bytes(1, "opts"))
    message = tmp_path / "m.eml"
    with open(message, "wb") as out:
        build.write_job_message(out, data, sender="alice@example.com", recipient="p@phaserlink.test",
                                title="t", format="pdf", filename="d.pdf", job_id="j1",
                                options="sides=two-sided-long-edge; pages=2")
    assert f"{fields.OPTIONS}: sides=two-sided-long-edge; pages=2".encode() in message.read_bytes()
    assert job_request_of(message).options == "sides=two-sided-long-edge; pages=2"


def human_text(site: Site, message_id: str) -> str:
    def find():
        for saved in site.sink.messages():
            if not saved.raw.rstrip().endswith(b"--") or message_id.encode() not in saved.raw:
                continue
            for part in saved.message.walk():
                if part.get_content_type() == "text/plain" and "delivered" in part.get_content():
                    return part.get_content()
        return None
    return wait_until(find, 40, "the printed status mail", site.log)


def test_sides_and_copies_reach_ippeveprinter_and_what_it_cannot_do_is_said(tmp_path, ippeve, site_for):
    printer = ippeve(duplex=True)
    site = site_for({"office": printer.uri})
    data = tmp_path / "d.pdf"
    data.write_bytes(pdf_bytes(2, "opts-e2e"))
    message = tmp_path / "m.eml"
    message_id = make_msgid(domain="example.com")
    with open(message, "wb") as out:
        build.write_job_message(out, data, sender=SENDER, recipient="office@phaserlink.test", title="duplex",
                                format="pdf", filename="d.pdf", job_id="opts1", copies=2, message_id=message_id,
                                options="sides=two-sided-long-edge; color=color; pages=1-2")
    with smtplib.SMTP("127.0.0.1", site.appliance.smtp_port, timeout=30) as smtp:
        smtp.sendmail(SENDER, ["office@phaserlink.test"], message.read_bytes().replace(b"\n", b"\r\n"))
    text = human_text(site, message_id)
    [doc] = printer.documents()
    env = printer.environment(doc)
    assert env.get("IPP_SIDES") == "two-sided-long-edge"
    assert env.get("IPP_COPIES") == "2"
    assert env.get("IPP_PAGE_RANGES") == "1-2"
    assert "cannot print in colour" in text

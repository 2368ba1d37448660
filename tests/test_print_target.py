"""What documents are converted to for a printer (phaserlink/printer/target.py):
an IPP printer's own answer (document-format-supported, media-default,
raster resolutions and colour spaces) against the site's ``formats`` and
``media`` keys and the job's options.  The answers here are shaped like
ippeveprinter's (tests/test_ipp_e2e.py talks to the real one)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from phaserlink import config
from phaserlink.message.formats import printer_formats_of
from phaserlink.message.job_options import JobOptions, media_size
from phaserlink.net.ipp_client import PrinterStatus
from phaserlink.net.ipp_codec import Delimiter, Group, Resolution, Tag, attr
from phaserlink.printer.convert import ghostscript_argv
from phaserlink.printer.faults import TemporaryFault
from phaserlink.printer.target import RasterMode, accepted_formats, photo_media, print_target


def status(formats=("application/octet-stream", "application/pdf"), *, media_default="na_letter_8.5x11in",
           media=("na_letter_8.5x11in", "iso_a4_210x297mm"), pwg_res=((300, 300), (600, 600)),
           pwg_types=("black_1", "sgray_8"), urf=("CP1", "RS600", "V1.4", "W8")) -> PrinterStatus:
    attrs = [attr("document-format-supported", Tag.MIME_MEDIA_TYPE, *formats),
             attr("media-supported", Tag.KEYWORD, *media),
             attr("pwg-raster-document-resolution-supported", Tag.RESOLUTION,
                  *(Resolution(x, y, 3) for x, y in pwg_res)),
             attr("pwg-raster-document-type-supported", Tag.KEYWORD, *pwg_types),
             attr("urf-supported", Tag.KEYWORD, *urf)]
    if media_default:
        attrs.append(attr("media-default", Tag.KEYWORD, media_default))
    return PrinterStatus.from_group(Group(Delimiter.PRINTER, tuple(attrs)))


@dataclass
class Printer:
    formats: tuple[str, ...] = ()
    media: str = "a4"


def test_mime_types_become_the_formats_vocabulary():
    assert printer_formats_of(["application/octet-stream", "image/pwg-raster", "image/urf", "application/PDF",
                               "text/plain; charset=utf-8", "application/vnd.hp-pclxl", "image/jpeg"]) == (
        "pwg-raster", "urf", "pdf", "text", "jpeg")


def test_an_ipp_printer_without_formats_gets_what_it_says_and_formats_restricts_it():
    said = status(("application/octet-stream", "application/pdf", "image/pwg-raster", "image/jpeg"))
    assert accepted_formats((), said) == ("pdf", "pwg-raster", "jpeg")
    assert accepted_formats(("pwg-raster", "postscript"), said) == ("pwg-raster",)
    # A printer that only auto-detects: the site's list as it is, else PostScript.
    assert accepted_formats(("pdf",), status(("application/octet-stream",))) == ("pdf",)
    assert accepted_formats((), status(("application/octet-stream",))) == ("postscript",)
    # Not an IPP printer: formats as configured.
    assert accepted_formats(("pcl",), None) == ("pcl",)


def test_formats_that_allow_nothing_the_printer_takes_hold_the_job_with_words():
    with pytest.raises(TemporaryFault) as e:
        accepted_formats(("postscript",), status(("image/pwg-raster",)), "ipp://p/ipp/print")
    assert e.value.holds_queue and e.value.ipp_reason == "printer-stopped"
    assert "says it takes pwg-raster" in e.value.reason and "(postscript) allow none" in e.value.reason


def test_photo_media_job_option_else_media_default_else_the_media_key():
    said = status()
    assert photo_media(JobOptions(media="a4"), said) == "a4"  # the printer lists it
    assert photo_media(JobOptions(media="a3"), said, "a5") == "letter"  # it does not: its default
    assert photo_media(JobOptions(), said, "a5") == "letter"
    assert photo_media(JobOptions(), status(media_default=None), "a5") == "a5"
    assert photo_media(JobOptions(media="legal"), None, "a4") == "legal"  # not IPP: the job decides
    assert photo_media(JobOptions(), None, "a5") == "a5"
    assert media_size("letter") == (612.0, 792.0)


def test_raster_resolution_and_colour_space_are_ones_the_printer_lists():
    target = print_target(Printer(), status(("image/pwg-raster", "image/urf")))
    assert target.formats == ("pwg-raster", "urf")
    letter = (612.0, 792.0)  # its media-default: pages are fitted to it
    assert target.raster("pwg-raster") == RasterMode((300, 300), "sgray_8", letter)
    assert target.raster("urf") == RasterMode((600, 600), "sgray_8", letter)
    assert print_target(Printer(), status(("image/pwg-raster",), pwg_res=((600, 600),), media_default=None,
                                          pwg_types=("srgb_8", "sgray_8"))).raster("pwg-raster") == \
        RasterMode((600, 600), "srgb_8", media_size("a4"))
    mono = print_target(Printer(), status(("image/pwg-raster",), pwg_types=("srgb_8", "sgray_8")),
                        JobOptions(color="monochrome"))
    assert mono.raster("pwg-raster").pwg_type == "sgray_8"
    argv = ghostscript_argv("gs", "in.pdf", "out.pwg", "pdf", "pwg-raster", RasterMode((600, 600), "srgb_8", letter))
    assert "-r600" in argv and "-dcupsColorSpace=19" in argv and "-dcupsBitsPerColor=8" in argv
    assert {"-dDEVICEWIDTHPOINTS=612", "-dDEVICEHEIGHTPOINTS=792", "-dFIXEDMEDIA", "-dFitPage"} <= set(argv)
    urf = ghostscript_argv("gs", "in.pdf", "out.urf", "pdf", "urf", None)
    assert "-r300" in urf and "-dcupsColorSpace=18" in urf  # never 1-bit: URF has none


def _load(tmp_path, extra: str):
    path = tmp_path / "site.ini"
    path.write_text(textwrap.dedent("""\
        [appliance]
        hostname = phaserlink.test
        spool = {spool}
        [printer:lab]
        allowed_senders = *@example.com
        """).format(spool=tmp_path / "var") + textwrap.dedent(extra))
    return config.load(path).printers["lab"]


def test_config_ipp_printer_without_formats_asks_the_printer_and_media_is_checked(tmp_path):
    assert _load(tmp_path, "output = ipp://localhost:631/ipp/print\n").formats == ()
    assert _load(tmp_path, "output = ipps://localhost/ipp/print\nformats = pdf\n").formats == ("pdf",)
    assert _load(tmp_path, "output = socket://localhost:9100\n").formats == ("postscript",)
    assert _load(tmp_path, "output = socket://localhost:9100\nmedia = Letter\n").media == "letter"
    assert _load(tmp_path, "output = socket://localhost:9100\nmedia = na_foolscap_8.5x13in\n").media == \
        "na_foolscap_8.5x13in"
    with pytest.raises(config.ConfigError) as e:
        _load(tmp_path, "output = socket://localhost:9100\nmedia = huge\n")
    assert "[printer:lab] media" in str(e.value) and "'huge' is not a media size" in str(e.value)


# -- the dispatcher asks the printer before it converts, and again at each retry --


def test_a_job_prepared_for_what_the_printer_took_is_converted_again_when_it_takes_other_formats(tmp_path):
    """Held while the IPP printer was down; when it is back it takes only
    PostScript: the PDF is converted then, not sent as it was prepared."""
    import dataclasses

    from support.printer_fakes import FakeOutput, Rig, make_site, message
    from twisted.internet import defer
    from zope.interface import implementer

    from phaserlink.printer.output.interfaces import IDescribingOutput

    @implementer(IDescribingOutput)
    class DescribingOutput(FakeOutput):
        said = ("application/pdf",)
        capabilities = None

        def probe(self):
            self.capabilities = status(self.said)
            return defer.succeed(self.capabilities)

    site = make_site(tmp_path)
    site = dataclasses.replace(site, printers={"lp": dataclasses.replace(site.printers["lp"], formats=())})
    rig = Rig(tmp_path, site)
    output = DescribingOutput("down")
    rig.start()
    rig.service.runners["lp"].output = rig.service.runners["lp"].dispatcher.output = output
    output.clock = rig.clock
    rig.deliver(message(body=b"%PDF-1.4 the report\n", X_Format="pdf"))
    assert output.attempts and not output.sent  # prepared for a PDF printer, held: it is down
    output.said, output.mode = ("application/postscript",), "ok"
    rig.run_for(30)
    [(job, data)] = output.sent
    assert data.startswith(b"%!converted from pdf") and job.format == "application/postscript"

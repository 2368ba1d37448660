"""Job options from the CUPS backend's options argument (phaserlink/message/job_options.py,
phaserlink/client/cups_backend.py): the same header ``phaserlink send`` writes."""

from __future__ import annotations

from phaserlink.message.job_options import from_cups_options


def test_cups_job_options_become_the_job_options_header():
    o = from_cups_options("job-uuid=urn:uuid:1 sides=two-sided-long-edge media=A4 "
                          "print-color-mode=monochrome page-ranges=1-3,7 number-up=2 'job-name=a b'")
    assert o.header_value() == "sides=two-sided-long-edge; media=a4; color=monochrome; pages=1-3,7"


def test_cups_spellings_and_garbage():
    assert from_cups_options("PageSize=Letter ColorModel=Gray").header_value() == "media=letter; color=monochrome"
    assert from_cups_options("ColorModel=RGB").color == "color"
    assert not from_cups_options("page-ranges=zz sides=sideways media=napkin 'unbalanced")
    assert not from_cups_options("")

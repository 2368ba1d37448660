"""Conversion: which format goes where (a table), and real Ghostscript runs.

A converted document is checked the way a person would: Ghostscript renders
it back to text and the marker string printed in the original is there.
"""

from __future__ import annotations

import subprocess

import pytest
import pytest_twisted
from twisted.internet import task

from phaserlink.printer import convert as convert_mod
from phaserlink.printer.convert import (
    ConversionError,
    ConverterFailed,
    GhostscriptMissing,
    convert,
    count_pages,
    needs_conversion,
    select_pages,
)
from support.peers import require_program

MARKER = "MARKER-PHASERLINK-4711"


# -- which conversion ---------------------------------------------------------

@pytest.mark.parametrize(
    "fmt, accepted, expected",
    [
        ("postscript", ("postscript",), None),
        ("pdf", ("postscript", "pdf"), None),
        ("pdf", ("postscript",), "postscript"),
        ("pdf", ("postscript", "pcl"), "postscript"),
        ("postscript", ("pdf",), "pdf"),
        ("text", ("text", "postscript"), None),
        ("text", ("postscript",), "postscript"),
        ("text", ("pdf",), "pdf"),
        ("pcl", ("pcl",), None),
    ],
)
def test_needs_conversion(fmt, accepted, expected):
    assert needs_conversion(fmt, accepted) == expected


@pytest.mark.parametrize(
    "fmt, accepted",
    [
        ("pcl", ("postscript",)),
        ("pcl", ("postscript", "pdf", "text")),
        ("pdf", ("pcl",)),
        ("postscript", ("pcl", "text")),
        ("text", ("pcl",)),
        ("msword", ("postscript",)),
    ],
)
def test_impossible_conversion_is_a_format_error(fmt, accepted):
    with pytest.raises(ConversionError) as e:
        needs_conversion(fmt, accepted)
    assert e.value.ipp_reason == "document-format-error"
    assert fmt in e.value.reason


# -- real Ghostscript ------------------------------------------------------


@pytest.fixture
def gs():
    return require_program("gs", "ghostscript")


def reactor():
    from twisted.internet import reactor as r

    return r


def postscript(path, pages: int = 1):
    body = "".join(
        f"/Helvetica findfont 24 scalefont setfont 72 700 moveto ({MARKER} page {i + 1}) show showpage\n"
        for i in range(pages)
    )
    path.write_text("%!PS-Adobe-3.0\n" + body)
    return path


def make_pdf(gs, tmp_path, pages: int = 1):
    ps = postscript(tmp_path / "orig.ps", pages)
    pdf = tmp_path / "orig.pdf"
    subprocess.run(
        [gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", f"-sOutputFile={pdf}", str(ps)],
        check=True,
    )
    assert pdf.read_bytes().startswith(b"%PDF")
    return pdf


def text_of(gs, path) -> str:
    return subprocess.run(
        [gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=txtwrite", "-sOutputFile=-", str(path)],
        check=True, capture_output=True,
    ).stdout.decode("utf-8", "replace")


@pytest_twisted.inlineCallbacks
def test_pdf_to_postscript_renders_the_marker(gs, tmp_path):
    pdf = make_pdf(gs, tmp_path)
    out = tmp_path / "job.ps"
    result = yield convert(reactor(), pdf, out, "pdf", "postscript", timeout=60)
    assert result == out
    assert out.read_bytes().startswith(b"%!PS")
    assert f"{MARKER} page 1" in text_of(gs, out)
    assert not (tmp_path / "job.ps.part").exists()


@pytest_twisted.inlineCallbacks
def test_pdf_to_postscript_is_pdftops_and_keeps_pages_count_and_selection(gs, tmp_path):
    """pdftops writes the PostScript (docs/convert.md); its ``%%Pages:``
    gives the count without a Ghostscript start, and Ghostscript can still
    keep pages 2-3 of it (pages=, for a printer that cannot select)."""
    require_program("pdftops", "poppler-utils")
    pdf = make_pdf(gs, tmp_path, pages=3)
    out = tmp_path / "job.ps"
    yield convert(reactor(), pdf, out, "pdf", "postscript", timeout=60)
    head = out.read_bytes()[:300]
    assert head.startswith(b"%!PS-Adobe-3.0") and b"poppler pdftops" in head, head
    assert b"%%LanguageLevel: 3" in head
    assert convert_mod._dsc_pages(out) == 3
    assert (yield count_pages(reactor(), out, "postscript", interpret=False)) == 3
    kept = tmp_path / "kept.ps"
    yield select_pages(reactor(), out, kept, "postscript", "2-3", timeout=60)
    text = text_of(gs, kept)
    assert f"{MARKER} page 2" in text and f"{MARKER} page 3" in text and f"{MARKER} page 1" not in text


@pytest_twisted.inlineCallbacks
def test_without_pdftops_ghostscript_converts_pdf_to_postscript(gs, tmp_path, monkeypatch):
    """pdftops missing is the old behaviour (ps2write), not a held job."""
    monkeypatch.setattr(convert_mod, "PDFTOPS", "pdftops-not-installed-here")
    pdf = make_pdf(gs, tmp_path)
    out = tmp_path / "job.ps"
    yield convert(reactor(), pdf, out, "pdf", "postscript", timeout=60)
    assert b"poppler" not in out.read_bytes()[:300] and b"Ghostscript" in out.read_bytes()[:1000]
    assert f"{MARKER} page 1" in text_of(gs, out)


def use_fake_pdftops(tmp_path, monkeypatch, script: str) -> None:
    """Make the converter run a pdftops that is the shell *script*."""
    fake = tmp_path / "bin" / "pdftops"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    monkeypatch.setattr(convert_mod, "PDFTOPS", str(fake))


@pytest_twisted.inlineCallbacks
def test_a_pdftops_that_cannot_run_leaves_the_job_to_ghostscript(gs, tmp_path, monkeypatch):
    """A broken pdftops (its loader exits 127: a library missing) does not
    hold PDFs that Ghostscript can convert."""
    use_fake_pdftops(tmp_path, monkeypatch,
                     "echo 'pdftops: error while loading shared libraries: libpoppler.so' >&2\nexit 127\n")
    pdf = make_pdf(gs, tmp_path)
    out = tmp_path / "job.ps"
    yield convert(reactor(), pdf, out, "pdf", "postscript", timeout=60)
    assert b"Ghostscript" in out.read_bytes()[:1000]
    assert f"{MARKER} page 1" in text_of(gs, out)


@pytest_twisted.inlineCallbacks
def test_a_pdftops_that_stops_half_way_is_a_temporary_fault(gs, tmp_path, monkeypatch):
    """pdftops exiting 0 with its PostScript cut short (a full disk): the
    output check (``%%EOF``) holds the job; nothing half written is sent."""
    use_fake_pdftops(tmp_path, monkeypatch, 'for last; do :; done\nprintf "%%!PS-Adobe-3.0\\n%%%%Pages: 1\\n" > "$last"\n')
    pdf = make_pdf(gs, tmp_path)
    out = tmp_path / "job.ps"
    with pytest.raises(ConverterFailed) as e:
        yield convert(reactor(), pdf, out, "pdf", "postscript", timeout=60)
    assert "pdftops" in e.value.reason and "%%EOF" in e.value.reason, e.value.reason
    assert not out.exists() and not (tmp_path / "job.ps.part").exists()


@pytest_twisted.inlineCallbacks
def test_postscript_to_pdf(gs, tmp_path):
    ps = postscript(tmp_path / "orig.ps")
    out = tmp_path / "job.pdf"
    yield convert(reactor(), ps, out, "postscript", "pdf", timeout=60)
    assert out.read_bytes().startswith(b"%PDF")
    assert f"{MARKER} page 1" in text_of(gs, out)


@pytest_twisted.inlineCallbacks
def test_text_to_postscript(gs, tmp_path):
    txt = tmp_path / "note.txt"
    txt.write_bytes(b"Dear printer,\nplease print MARKER_TEXT_99 today.\n")
    out = tmp_path / "note.ps"
    yield convert(reactor(), txt, out, "text", "postscript", timeout=60)
    assert "please print MARKER_TEXT_99 today." in text_of(gs, out)


@pytest.mark.parametrize("damage", ["garbage", "cut-short", "binary"])
@pytest_twisted.inlineCallbacks
def test_broken_pdf_is_a_conversion_error_with_ghostscripts_message(gs, tmp_path, damage):
    bad = tmp_path / "bad.pdf"
    if damage == "garbage":
        bad.write_bytes(b"%PDF-1.4\nthis is not a PDF at all\n")
    elif damage == "cut-short":
        # Ghostscript repairs many truncated PDFs (and prints what it can);
        # one cut inside the first object is beyond repair.
        bad.write_bytes(make_pdf(gs, tmp_path).read_bytes()[:300])
    else:
        bad.write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "job.ps"
    with pytest.raises(ConversionError) as e:
        yield convert(reactor(), bad, out, "pdf", "postscript", timeout=60)
    assert e.value.ipp_reason == "document-format-error"
    # Ghostscript's own words, e.g. "Error: /syntaxerror in --runpdf--".
    assert "Error: /" in e.value.reason, e.value.reason
    assert "Unrecoverable error" in e.value.details
    assert not out.exists() and not (tmp_path / "job.ps.part").exists()


@pytest_twisted.inlineCallbacks
def test_reactor_keeps_running_during_conversion(gs, tmp_path):
    # 400 pages: pdftops takes a few hundred ms, long enough for the reactor
    # to tick many times however busy the machine is.
    pdf = make_pdf(gs, tmp_path, pages=400)
    ticks = []
    loop = task.LoopingCall(lambda: ticks.append(reactor().seconds()))
    loop.start(0.005)
    try:
        before = len(ticks)
        yield convert(reactor(), pdf, tmp_path / "job.ps", "pdf", "postscript", timeout=60)
        during = len(ticks) - before
    finally:
        loop.stop()
    # A blocking conversion would allow no tick at all until it returned.
    assert during >= 3, during
    assert f"{MARKER} page 400" in text_of(gs, tmp_path / "job.ps")


@pytest_twisted.inlineCallbacks
def test_endless_document_is_killed_at_the_timeout(gs, tmp_path):
    ps = tmp_path / "loop.ps"
    ps.write_text("%!PS\n{ 1 pop } loop\n")
    start = reactor().seconds()
    # Temporary: a busy machine may be what made it slow (docs/faults.md).
    with pytest.raises(ConverterFailed) as e:
        yield convert(reactor(), ps, tmp_path / "out.pdf", "postscript", "pdf", timeout=0.5)
    assert reactor().seconds() - start < 10
    assert "took longer than 0.5 s" in e.value.reason
    assert not (tmp_path / "out.pdf").exists() and not (tmp_path / "out.pdf.part").exists()


@pytest_twisted.inlineCallbacks
def test_missing_ghostscript_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(convert_mod, "GHOSTSCRIPT", "gs-not-installed-here")
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4\n")
    with pytest.raises(GhostscriptMissing) as e:
        yield convert(reactor(), tmp_path / "a.pdf", tmp_path / "a.ps", "pdf", "postscript")
    # The print server's fault, held and tried again: never the document's.
    assert "not installed" in e.value.reason and e.value.ipp_reason == "resources-are-not-ready"
    assert not isinstance(e.value, ConversionError) and e.value.holds_queue


def _converter_peak_mb(tmp_path, name: str, pictures: list) -> float:
    """Run the picture converter's main in a fresh interpreter; its peak RSS
    (VmHWM: a child's ru_maxrss would carry the forking pytest's)."""
    import sys

    script = ("import sys; from phaserlink.printer.convert_image import main; rc = main(sys.argv[1:]); "
              "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); "
              "sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{name}.pdf"), *map(str, pictures)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024


def test_the_picture_converter_holds_each_photo_once(tmp_path):
    """Photos to one PDF: the converter's memory grows by the photos once
    (img2pdf keeps them to embed), not twice (the PDF was made as bytes
    before it was written: 200 MB for a mail of 20 phone photos)."""
    from PIL import Image

    pictures = []
    for n in range(6):
        path = tmp_path / f"p{n}.jpg"
        Image.effect_noise((1800, 1400), 60 + n).convert("RGB").save(path, "JPEG", quality=95)
        pictures.append(path)
    photos_mb = sum(p.stat().st_size for p in pictures) / 2**20
    one = tmp_path / "one.jpg"
    Image.new("RGB", (10, 10), "red").save(one, "JPEG")
    base = _converter_peak_mb(tmp_path, "one", [one])
    grown = _converter_peak_mb(tmp_path, "all", pictures) - base
    assert grown < 1.7 * photos_mb, f"the converter grew by {grown:.0f} MB for {photos_mb:.0f} MB of photos"

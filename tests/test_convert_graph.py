"""The conversion graph (which path a document takes to the printer's
formats) and the converters' sandbox and limits, on real tools."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted
from support.peers import require_program
from twisted.internet import defer

from phaserlink.printer import convert as C
from phaserlink.printer.convert import ConversionError, ConverterFailed, conversion_path, convert


def reactor():
    from twisted.internet import reactor as r

    return r


@pytest.mark.parametrize(
    "fmt, accepted, path",
    [
        ("jpeg", ("jpeg", "pdf"), ["jpeg"]),  # a printer that takes JPEG gets the photo as it is
        ("jpeg", ("postscript",), ["jpeg", "pdf", "postscript"]),
        ("heif", ("pdf",), ["heif", "pdf"]),
        ("docx", ("pwg-raster",), ["docx", "pdf", "pwg-raster"]),
        ("xlsx", ("urf", "pdf"), ["xlsx", "pdf"]),  # PDF straight through: the shorter path
        ("pptx", ("urf",), ["pptx", "pdf", "urf"]),
        ("postscript", ("pwg-raster",), ["postscript", "pwg-raster"]),
        ("text", ("pwg-raster",), ["text", "postscript", "pwg-raster"]),
        ("html", ("postscript",), ["html", "pdf", "postscript"]),
        ("pdf", ("pdf", "postscript"), ["pdf"]),
    ],
)
def test_the_shortest_path_to_what_the_printer_takes(fmt, accepted, path):
    assert conversion_path(fmt, accepted) == path


@pytest.mark.parametrize("fmt, accepted", [("docx", ("pcl",)), ("pcl", ("pwg-raster",)), ("jpeg", ("text",))])
def test_no_path_is_a_format_error_saying_what_the_printer_takes(fmt, accepted):
    with pytest.raises(ConversionError) as e:
        conversion_path(fmt, accepted)
    assert e.value.ipp_reason == "document-format-error"
    assert f"this printer takes {accepted[0]}" in e.value.reason


def _listening() -> tuple[socket.socket, list[bytes]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    got: list[bytes] = []

    def serve():
        while server.fileno() >= 0:
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            got.append(conn.recv(1024))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, got


def test_a_converter_has_no_network_not_even_localhost():
    server, got = _listening()
    port = server.getsockname()[1]
    try:
        # What any converter runs under: the same prefix, a child that tries.
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'hi')"
        done = subprocess.run(C._sandbox_prefix() + [sys.executable, "-c", probe], capture_output=True)
        assert done.returncode != 0, "the sandboxed child reached the network"
        assert b"Network is unreachable" in done.stderr or b"Connection refused" in done.stderr
        # ...while the same child outside the sandbox does get through.
        subprocess.run([sys.executable, "-c", probe], check=True)
        time.sleep(0.3)
        assert got == [b"hi"]
    finally:
        server.close()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_an_html_mail_body_converts_without_fetching_its_images(tmp_path):
    require_program("chromium", "chromium")
    pdftotext = require_program("pdftotext", "poppler-utils")
    server, got = _listening()
    port = server.getsockname()[1]
    try:
        page = tmp_path / "01.html"
        page.write_text(f'<html><body><h1>Order MARKERHTML42</h1><img src="http://127.0.0.1:{port}/pixel.gif">'
                        f'<link rel="stylesheet" href="http://127.0.0.1:{port}/style.css"></body></html>')
        out = await convert(reactor(), page, tmp_path / "out.pdf", "html", "pdf", timeout=45)
        text = subprocess.run([pdftotext, str(out), "-"], check=True, capture_output=True).stdout.decode()
        assert "Order MARKERHTML42" in text
        assert got == []  # the tracking pixel was never asked for
    finally:
        server.close()


@pytest_twisted.ensureDeferred
async def test_output_past_the_size_limit_is_the_documents_fault(tmp_path, monkeypatch):
    require_program("gs", "ghostscript")
    monkeypatch.setattr(C, "MAX_OUTPUT_BYTES", 64 * 1024)
    ps = tmp_path / "many.ps"
    ps.write_text("%!PS\n" + "".join(f"/Helvetica findfont 30 scalefont setfont 72 {100 + i % 600} moveto "
                                     f"(page {i} of a file bomb) show showpage\n" for i in range(2000)))
    with pytest.raises(ConversionError) as e:
        await convert(reactor(), ps, tmp_path / "out.pdf", "postscript", "pdf", timeout=60)
    assert "too large to print" in e.value.reason
    assert not (tmp_path / "out.pdf").exists() and not (tmp_path / "out.pdf.part").exists()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _fake_soffice(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "soffice"
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


@pytest_twisted.ensureDeferred
async def test_without_libreoffice_an_office_document_is_a_format_error_saying_so(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "SOFFICE", "soffice-not-installed-here")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `libreoffice` either
    (tmp_path / "a.docx").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ConversionError) as e:
        await convert(reactor(), tmp_path / "a.docx", tmp_path / "a.pdf", "docx", "pdf")
    assert "LibreOffice is not installed" in e.value.reason
    assert e.value.ipp_reason == "document-format-error"


@pytest_twisted.ensureDeferred
async def test_a_hanging_libreoffice_is_killed_with_its_children_and_tried_again(tmp_path, monkeypatch):
    # A wrapper that does not exec (as Debian's soffice script runs oosplash).
    fake = _fake_soffice(tmp_path, f"echo $$ > {tmp_path}/pid\nsleep 30 &\necho $! > {tmp_path}/child\nwait\n")
    monkeypatch.setattr(C, "SOFFICE", str(fake))
    (tmp_path / "a.odt").write_bytes(b"PK\x03\x04" + bytes(100))
    start = time.monotonic()
    with pytest.raises(ConverterFailed) as e:  # temporary: held and retried, never lost
        await convert(reactor(), tmp_path / "a.odt", tmp_path / "a.pdf", "odt", "pdf", timeout=1)
    assert time.monotonic() - start < 10
    assert "took longer than 1 s" in e.value.reason
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)  # the whole process group went, not just the script
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".lo")] == []  # no profile left


@pytest_twisted.ensureDeferred
async def test_max_conversions_one_runs_libreoffice_one_at_a_time(tmp_path, monkeypatch):
    log = tmp_path / "log"
    fake = _fake_soffice(tmp_path, f"""
echo start >> {log}; sleep 0.5
for a in "$@"; do last="$a"; done
while [ $# -gt 0 ]; do [ "$1" = --outdir ] && out="$2"; shift; done
mkdir -p "$out"; printf '%%PDF-1.4\\n%%%%EOF\\n' > "$out/document.pdf"
echo end >> {log}
""")
    monkeypatch.setattr(C, "SOFFICE", str(fake))
    C.set_max_conversions(1)
    docs = []
    for i in range(3):
        (tmp_path / f"{i}.docx").write_bytes(b"PK\x03\x04" + bytes(100))
        docs.append(convert(reactor(), tmp_path / f"{i}.docx", tmp_path / f"{i}.pdf", "docx", "pdf", timeout=20))
    await defer.gatherResults(docs, consumeErrors=True)
    assert log.read_text().split() == ["start", "end"] * 3  # never two at once
    C.set_max_conversions(2)
    docs = [convert(reactor(), tmp_path / f"{i}.docx", tmp_path / f"{i}b.pdf", "docx", "pdf", timeout=20)
            for i in range(2)]
    log.write_text("")
    await defer.gatherResults(docs, consumeErrors=True)
    assert log.read_text().split()[:2] == ["start", "start"]
    C.set_max_conversions(1)


def test_max_conversions_is_read_from_the_appliance_section(tmp_path):
    from phaserlink import config

    base = "[appliance]\nhostname = p.test\nspool = {spool}\nsmtp_listen = tcp:0\npop3_listen = tcp:0\n"
    path = tmp_path / "site.ini"
    path.write_text(base.format(spool=tmp_path / "var"))
    assert config.load(path).appliance.max_conversions == 1
    path.write_text(base.format(spool=tmp_path / "var") + "max_conversions = 3\n")
    assert config.load(path).appliance.max_conversions == 3
    path.write_text(base.format(spool=tmp_path / "var") + "max_conversions = 0\n")
    with pytest.raises(config.ConfigError, match="max_conversions"):
        config.load(path)


def _pictures(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    made = {}
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100), "red").save(small, dpi=(300, 300))
    made["small"] = small
    big = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), "green").save(big, quality=50)
    made["big"] = big
    webp = tmp_path / "a.webp"
    Image.new("RGB", (200, 100), "blue").save(webp, "WEBP")
    made["webp"] = webp
    gif = tmp_path / "anim.gif"
    frames = [Image.new("P", (50, 50), i) for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    made["gif"] = gif
    return made


@pytest_twisted.ensureDeferred
async def test_pictures_are_fitted_never_enlarged_and_webp_and_animated_gif_print(tmp_path):
    pdfimages = require_program("pdfimages", "poppler-utils")
    pics = _pictures(tmp_path)
    out = await convert(reactor(), [pics["small"], pics["big"], pics["webp"], pics["gif"]], tmp_path / "p.pdf",
                        "png", "pdf", timeout=60)
    listing = subprocess.run([pdfimages, "-list", str(out)], check=True, capture_output=True).stdout.decode()
    rows = [line.split() for line in listing.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]  # one page each, an animated GIF too
    ppi = [int(r[12]) for r in rows]
    assert ppi[0] == 300  # small: printed at its own resolution, not blown up to the page
    # big: 6000 px shrunk into A4 minus margins (~10.7 in): about 560 ppi.
    assert 500 < ppi[1] < 620, ppi

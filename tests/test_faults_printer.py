"""Fault injection on the printer side with real resources: the real
toolkit (MIME extraction, Ghostscript conversion), the real reactor, a
``file:`` printer, and

- a fake ``gs`` put first on PATH that is missing a library, is killed, hangs
  or exits 0 leaving a truncated file;
- a real full disk (a small tmpfs filled to ENOSPC) under the job spool while
  real Ghostscript converts, and under the file printer's directory.

Each test checks what a user would: nothing lost (the job stays spooled,
held, and prints once the fault is gone), nothing printed twice (one file),
nothing truncated reported as printed (the printed file ends with %%EOF and
renders; no "printed" mail before), and the status mail says what happened.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from support.peers import require_program
from support.live_printer import FilePrinter, reactor
from support.message_samples import mail_with

from phaserlink.printer import convert as convert_mod
from phaserlink.printer import jobs as J
from phaserlink.printer.output.file_output import FileOutput

MARKER = "MARKER-FAULTS-0815"

FAKE_GS = {
    "missing-library": """#!/bin/sh
echo "gs: error while loading shared libraries: libgs.so.10: cannot open shared object file: No such file or directory" >&2
exit 127
""",
    "bad-interpreter": """#!/nonexistent/interpreter
""",
    "killed": """#!/bin/sh
kill -KILL $$
""",
    "hang": """#!/bin/sh
exec sleep 60
""",
    # A wrapper that does not exec: its child keeps the pipes open after
    # the shell is killed.
    "hang-in-wrapper": """#!/bin/sh
sleep 20
""",
    "truncated": """#!/bin/sh
# Exit 0 after writing half a PostScript file, as ps2write does on a full disk.
for a in "$@"; do
  case "$a" in -sOutputFile=*) out="${a#-sOutputFile=}";; esac
done
printf '%%!PS-Adobe-3.0\\n%%%%Pages: 40\\n/Helvetica findfont' > "$out"
exit 0
""",
}


@pytest.fixture(scope="module")
def real_gs():
    return require_program("gs", "ghostscript")


def make_pdf(gs: str, directory: Path, pages: int = 2) -> bytes:
    ps = directory / "orig.ps"
    ps.write_text("%!PS-Adobe-3.0\n" + "".join(
        f"/Helvetica findfont 24 scalefont setfont 72 700 moveto ({MARKER} page {i + 1}) show showpage\n"
        for i in range(pages)))
    pdf = directory / "orig.pdf"
    subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite",
                    f"-sOutputFile={pdf}", str(ps)], check=True)
    return pdf.read_bytes()


def mail_with_pdf(pdf: bytes, msgid: str = "<pdf@example.com>") -> bytes:
    return mail_with((pdf, "application", "pdf", "report.pdf"), subject="Quarterly report",
                     message_id=msgid).as_bytes()


def text_of(gs: str, path: Path) -> str:
    return subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=txtwrite",
                           "-sOutputFile=-", str(path)], check=True, capture_output=True).stdout.decode()


def held(live: FilePrinter) -> bool:
    s = live.states()
    return len(s) == 1 and s[0]["state"] == J.PENDING_HELD


@pytest.fixture
def fake_gs(tmp_path, monkeypatch):
    """Put a fake ``gs`` first on PATH; returns a function that sets its
    behaviour, and ``None`` takes it off PATH again (the real one is back).
    pdftops is taken away: these PDFs go to PostScript by Ghostscript, as
    where poppler-utils is not installed (pdftops' own faults: below)."""
    monkeypatch.setattr(convert_mod, "PDFTOPS", "pdftops-not-installed-here")
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    real_path = os.environ.get("PATH", "/usr/bin:/bin")

    def use(kind: str | None) -> None:
        if kind is None:
            monkeypatch.setenv("PATH", real_path)
            return
        script = bindir / "gs"
        script.write_text(FAKE_GS[kind])
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:{real_path}")

    return use


def assert_printed_once_and_whole(live: FilePrinter, gs: str) -> None:
    [printed] = live.printed()
    data = printed.read_bytes()
    assert data.startswith(b"%!PS") and b"%%EOF" in data[-1024:]
    assert f"{MARKER} page 2" in text_of(gs, printed)
    assert live.leftovers() == [] and live.states() == []
    assert live.queue.events() == ["received", "printed"]


# -- converters that fail to start, are killed, hang, or exit 0 with truncated output --

@pytest.mark.parametrize("kind", ["missing-library", "bad-interpreter", "killed", "hang", "hang-in-wrapper", "truncated"])
@pytest_twisted.ensureDeferred
async def test_a_failing_converter_holds_the_job_and_it_prints_once_when_fixed(
        kind, real_gs, fake_gs, tmp_path, monkeypatch):
    pdf = make_pdf(real_gs, tmp_path)
    monkeypatch.setattr(convert_mod, "CONVERSION_TIMEOUT", 1.0)
    fake_gs(kind)
    live = FilePrinter(tmp_path, spool=tmp_path / "var", out_dir=tmp_path / "printed").start()
    try:
        live.deliver(mail_with_pdf(pdf))
        await live.until(lambda: held(live), "the job to be held")
        [state] = live.states()
        assert state["reasons"] == ["resources-are-not-ready"], state
        expected = {"missing-library": "cannot run on the print server (exit 127",
                    "bad-interpreter": "cannot run on the print server (exit 1",  # 127 under prlimit
                    "killed": "killed by signal 9",
                    "hang": "took longer than 1 s",
                    "hang-in-wrapper": "took longer than 1 s",
                    "truncated": "is incomplete: no %%EOF at its end"}[kind]
        assert expected in state["detail"], state["detail"]
        # Nothing sent, nobody told it failed, the document not blamed.
        assert live.printed() == [] and live.queue.events() == ["received"]
        fake_gs(None)
        live.dispatcher.retry_now()
        await live.until(lambda: live.printed() and not live.states(), "the job to print")
        assert_printed_once_and_whole(live, real_gs)
    finally:
        await live.stop()


FAKE_PDFTOPS = {
    "missing-library": FAKE_GS["missing-library"],
    "killed": FAKE_GS["killed"],
    "hang": FAKE_GS["hang"],
    # Exit 0 after writing half the PostScript (its last argument).
    "truncated": """#!/bin/sh
for out; do :; done
printf '%%!PS-Adobe-3.0\\n%%%%Pages: 2\\n/xpdf 75 dict def' > "$out"
exit 0
""",
}


@pytest.mark.parametrize("kind", sorted(FAKE_PDFTOPS))
@pytest_twisted.ensureDeferred
async def test_a_failing_pdftops_holds_the_job_or_leaves_it_to_ghostscript(
        kind, real_gs, tmp_path, monkeypatch):
    """pdftops killed, hung or cut short holds the job (and it prints once
    pdftops works); a pdftops that cannot run at all is passed over:
    Ghostscript converts the PDF at once (docs/convert.md)."""
    require_program("pdftops", "poppler-utils")
    pdf = make_pdf(real_gs, tmp_path)
    monkeypatch.setattr(convert_mod, "CONVERSION_TIMEOUT", 1.0)
    fake = tmp_path / "fakebin" / "pdftops"
    fake.parent.mkdir()
    fake.write_text(FAKE_PDFTOPS[kind])
    fake.chmod(0o755)
    monkeypatch.setattr(convert_mod, "PDFTOPS", str(fake))
    live = FilePrinter(tmp_path, spool=tmp_path / "var", out_dir=tmp_path / "printed").start()
    try:
        live.deliver(mail_with_pdf(pdf))
        if kind == "missing-library":
            await live.until(lambda: live.printed() and not live.states(), "the job to print")
            assert b"Ghostscript" in live.printed()[0].read_bytes()[:1000]  # ps2write's, not pdftops'
            assert_printed_once_and_whole(live, real_gs)
            return
        await live.until(lambda: held(live), "the job to be held")
        [state] = live.states()
        expected = {"killed": "pdftops was killed by signal 9",
                    "hang": "took longer than 1 s; pdftops was stopped",
                    "truncated": "pdftops's postscript output"}[kind]
        assert expected in state["detail"], state["detail"]
        assert live.printed() == [] and live.queue.events() == ["received"]
        monkeypatch.setattr(convert_mod, "PDFTOPS", "pdftops")
        live.dispatcher.retry_now()
        await live.until(lambda: live.printed() and not live.states(), "the job to print")
        assert b"poppler pdftops" in live.printed()[0].read_bytes()[:300]
        assert_printed_once_and_whole(live, real_gs)
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_a_document_ghostscript_rejects_is_aborted_with_its_words(real_gs, tmp_path):
    live = FilePrinter(tmp_path, spool=tmp_path / "var", out_dir=tmp_path / "printed").start()
    try:
        live.deliver(mail_with_pdf(b"%PDF-1.4\nthis is not a PDF at all\n"))
        await live.until(lambda: "failed" in live.queue.events(), "the failed mail")
        mail = live.queue.messages[-1]
        assert mail.field("reasons") == "['document-format-error']"
        assert "report.pdf: cannot convert this pdf document to postscript" in mail.text
        assert "Error: /" in mail.text  # Ghostscript's own words
        # The mail is queued before the job leaves the spool.
        await live.until(lambda: live.states() == [], "the aborted job to leave the spool")
        assert live.printed() == []
    finally:
        await live.stop()


# -- a real full disk --------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_conversion_on_a_full_disk_is_held_never_sent_and_prints_when_space_is_back(
        real_gs, tmp_path, small_disk):
    """ps2write exits 0 after ``ioerror ... on closing ps2write device`` on
    a full disk and leaves a truncated file: that must not be printed."""
    pdf = make_pdf(real_gs, tmp_path, pages=400)
    message = mail_with_pdf(pdf)
    # Room for the spooled message and the extracted PDF, not for the PostScript.
    small_disk.fill(leave=len(message) + len(pdf) + 64 * 1024)
    live = FilePrinter(tmp_path, spool=small_disk.path / "var", out_dir=tmp_path / "printed").start()
    try:
        live.deliver(message)
        await live.until(lambda: held(live), "the job to be held", timeout=25)
        [state] = live.states()
        assert "disk is full" in state["detail"] or "no space left" in state["detail"], state["detail"]
        assert live.printed() == [] and live.queue.events() == ["received"]
        small_disk.release()
        live.dispatcher.retry_now()
        await live.until(lambda: live.printed() and not live.states(), "the job to print", timeout=25)
        [printed] = live.printed()
        data = printed.read_bytes()
        assert b"%%EOF" in data[-1024:]
        assert f"{MARKER} page 400" in text_of(real_gs, printed)
        assert live.queue.events() == ["received", "printed"]
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_file_printer_on_a_full_disk_holds_and_prints_once_when_space_is_back(real_gs, tmp_path, small_disk):
    ps = ("%!PS-Adobe-3.0\n" + "".join(
        f"/Helvetica findfont 24 scalefont setfont 72 700 moveto ({MARKER} page {i + 1}) show showpage\n"
        for i in range(4000)) + "%%EOF\n").encode()
    msg = mail_with((ps, "application", "postscript", "big.ps"), subject="Big PostScript",
                    message_id="<ps@example.com>")
    small_disk.fill(leave=len(ps) // 2)
    live = FilePrinter(tmp_path, spool=tmp_path / "var", out_dir=small_disk.path / "printed").start()
    try:
        live.deliver(msg.as_bytes())
        await live.until(lambda: held(live), "the job to be held")
        [state] = live.states()
        assert state["reasons"] == [J.PRINTER_STOPPED] and "no space left" in state["detail"]
        assert live.printed() == [] and live.leftovers() == []
        small_disk.release()
        live.dispatcher.retry_now()
        await live.until(lambda: live.printed() and not live.states(), "the job to print")
        [printed] = live.printed()
        assert printed.read_bytes() == ps  # whole, once
        assert live.leftovers() == [] and live.queue.events() == ["received", "printed"]
    finally:
        await live.stop()


@pytest_twisted.ensureDeferred
async def test_file_printer_fsyncs_and_renames_outside_the_reactor_thread(tmp_path, monkeypatch):
    import threading

    from phaserlink.printer.output import OutputJob
    from phaserlink.printer.output import file_output

    seen = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("fsync", threading.current_thread() is threading.main_thread()))
        return real_fsync(fd)

    def replace(a, b):
        seen.append(("rename", threading.current_thread() is threading.main_thread()))
        return real_replace(a, b)

    monkeypatch.setattr(file_output.os, "fsync", fsync)
    monkeypatch.setattr(file_output.os, "replace", replace)
    src = tmp_path / "job.ps"
    src.write_bytes(b"%!PS\nshowpage\n%%EOF\n")
    out = FileOutput("file:out", tmp_path / "out", reactor=reactor())
    (tmp_path / "out").mkdir()
    await out.send(OutputJob(path=src, job_id="j1", title="t", user="u", host="h",
                             format="application/postscript"))
    assert (tmp_path / "out" / "j1.ps").read_bytes() == src.read_bytes()
    assert ("rename", False) in seen and ("fsync", False) in seen
    assert all(not in_reactor for _what, in_reactor in seen), seen

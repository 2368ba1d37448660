"""max_pages_per_job: pages counted with Ghostscript before printing (docs/trust.md).

A job over the cap is aborted before a byte reaches the printer, and its
status mail says the count and the cap; a job at the cap prints.
"""

from __future__ import annotations

import subprocess

from phaserlink import config
from phaserlink.printer.convert import count_pages_blocking as count_pages
from support.peers import require_program
from support.printer_fakes import Rig, make_site, message


def postscript(pages: int) -> bytes:
    return b"%!PS\n" + b"showpage\n" * pages


def rig_with_cap(tmp_path, cap: int) -> Rig:
    site = make_site(tmp_path, notify="printed, errors")
    text = site.path.read_text().replace("[printer:lp]\n", f"[printer:lp]\nmax_pages_per_job = {cap}\n")
    site.path.write_text(text)
    return Rig(tmp_path, config.load(site.path)).start()


def test_counts_pdf_and_postscript(tmp_path):
    gs = require_program("gs", "ghostscript")
    ps = tmp_path / "three.ps"
    ps.write_bytes(postscript(3))
    pdf = tmp_path / "three (copy).pdf"  # parentheses must not break the PostScript string
    subprocess.run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pdfwrite", f"-sOutputFile={pdf}", str(ps)],
                   check=True)
    assert count_pages(ps, "postscript") == 3
    assert count_pages(pdf, "pdf") == 3
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really")
    assert count_pages(broken, "pdf") is None  # unknown: not refused for its count
    assert count_pages(ps, "pcl") is None


def test_a_job_over_the_cap_is_aborted_with_the_count_and_the_cap(tmp_path):
    require_program("gs", "ghostscript")
    rig = rig_with_cap(tmp_path, 2)
    rig.deliver(message(body=postscript(3), subject="too long"))
    assert rig.outputs["lp"].sent == []
    (mail,) = [m for m in rig.queue.messages if m.field("event") == "failed"]
    assert "the job has 3 pages; printer lp prints at most 2 pages per job" in mail.text
    rig.deliver(message(msgid="<m2@example.com>", body=postscript(2), subject="fits"))
    assert len(rig.outputs["lp"].sent) == 1


def test_copies_count_too(tmp_path):
    require_program("gs", "ghostscript")
    rig = rig_with_cap(tmp_path, 4)
    rig.deliver(message(body=postscript(2), X_PhaserLink_Copies="3"))
    assert rig.outputs["lp"].sent == []
    (mail,) = [m for m in rig.queue.messages if m.field("event") == "failed"]
    assert "the job has 6 pages (3 copies); printer lp prints at most 4 pages per job" in mail.text

"""Counting a document's pages with Ghostscript, for ``max_pages_per_job`` (docs/trust.md).

A sender who may print may still not print a 5,000-page PDF.  Before a job
is sent, its PDF and PostScript documents are counted and a job over the
printer's cap is aborted with a status mail that says the count and the cap.

- PDF: Ghostscript's own PDF interpreter reports the page count without
  rendering (``runpdfbegin pdfpagecount``), ~0.1 s.  A file it cannot read
  prints 0 or fails: then the count is unknown, and the job is not refused
  for it (converting or printing it will say what is wrong).
- PostScript has no page count until it is run: the ``bbox`` device runs it
  and prints one ``%%BoundingBox`` per page (it renders, so it costs about
  what a conversion costs).
- PCL and text are not counted (None).

Blocking (a subprocess): callers run it in a worker thread.  ``-dSAFER``
with read access to the one file only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    COUNT_TIMEOUT,
)

GS = "gs"


def count_pages(path: Path, fmt: str) -> int | None:
    """The number of pages of *path* (format *fmt*), or None if unknown."""
    gs = shutil.which(GS)
    if gs is None:
        return None
    path = Path(path).resolve()
    if fmt == "pdf":
        name = str(path).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        args = [gs, "-q", "-dNODISPLAY", "-dSAFER", "-dNOPAUSE", "-dBATCH", f"--permit-file-read={path}",
                "-c", f"({name}) (r) file runpdfbegin pdfpagecount = quit"]
    elif fmt == "postscript":
        args = [gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=bbox", str(path)]
    else:
        return None
    try:
        done = subprocess.run(args, capture_output=True, timeout=COUNT_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if fmt == "pdf":
        try:
            pages = int(done.stdout.decode("ascii", "replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        return pages if pages > 0 else None
    pages = done.stderr.count(b"%%BoundingBox:")
    return pages if done.returncode == 0 else None

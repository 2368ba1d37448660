"""Shared setup for the end-to-end tests (tests/test_e2e_*.py).

The end-to-end tests run everything as a user or an operator would: the
``phaserlink`` command as a subprocess, the appliance as ``twistd`` in a
subprocess, and real peers (Postfix, Dovecot, p910nd, LPRng, smtp-sink,
Ghostscript, mpack).  What they assert is what a person would check: the
sha256 of the file the printer received, the text Ghostscript finds in it,
the exit code and message of the command, the report in the mailbox.

Every wait here polls a condition with a deadline; nothing sleeps to let
time pass as a way of asserting.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

from support.appliance import Appliance
from support.peers import require_program

T = TypeVar("T")

#: A text Ghostscript's txtwrite device finds on the printed page.
MARKER = "PHASERLINK-E2E-MARKER"
SENDER = "alice@example.com"
POLL = 0.02


# -- print data -------------------------------------------------------------------


def postscript(marker: str = MARKER, size: int = 0, seed: bytes = b"") -> bytes:
    """A one-page PostScript job that shows *marker*, padded with comment
    lines of pseudo-random hex to about *size* bytes (a big job that
    Ghostscript still renders quickly, and whose every byte differs from a
    neighbour's, so a lost or repeated block changes the hash)."""
    head = (b"%!PS-Adobe-3.0\n%%Title: PhaserLink end-to-end test\n%%Pages: 1\n%%EndComments\n")
    page = (b"/Helvetica findfont 24 scalefont setfont\n72 700 moveto ("
            + marker.encode() + b") show\nshowpage\n%%EOF\n")
    body = []
    have = len(head) + len(page)
    counter = 0
    block = hashlib.sha256(seed or marker.encode()).digest()
    while have < size:
        # 64 hex digits per line from a hash chain: cheap, and unique per line.
        block = hashlib.sha256(block + counter.to_bytes(8, "big")).digest()
        line = b"%" + block.hex().encode() * 2 + b"\n"
        body.append(line)
        have += len(line)
        counter += 1
    return head + b"".join(body) + page


def pdf_from_postscript(ps: Path, pdf: Path) -> Path:
    gs = require_program("gs", "ghostscript")
    subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite",
                    f"-sOutputFile={pdf}", str(ps)], check=True, capture_output=True, timeout=60)
    return pdf


def rendered_text(path: Path) -> str:
    """What Ghostscript reads on the pages of *path* (txtwrite): the proof
    that what reached the printer is a document, not just bytes."""
    gs = require_program("gs", "ghostscript")
    out = subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=txtwrite",
                          "-sOutputFile=-", str(path)], capture_output=True, timeout=120)
    assert out.returncode == 0, f"gs could not render {path}: {out.stderr.decode(errors='replace')}"
    return out.stdout.decode(errors="replace")


def sha256(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, Path):
        with open(data, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    else:
        h.update(data)
    return h.hexdigest()


# -- waiting ------------------------------------------------------------------------


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               context: Callable[[], str] = lambda: "", interval: float = POLL) -> T:
    """Poll *predicate* until it returns something true; fail with *what*
    and *context()* (a log tail) after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{context()}")
        time.sleep(interval)


# -- the appliance's spool, as an operator reads it --------------------------------------


def job_states(app: Appliance, printer: str) -> dict[str, dict]:
    """The printer's jobs in the spool: job id -> its state.json."""
    root = app.spool / "jobs" / printer
    states = {}
    if not root.is_dir():
        return states
    for entry in root.iterdir():
        state = entry / "state.json"
        if entry.is_dir() and state.exists():
            try:
                states[entry.name] = json.loads(state.read_text())
            except (OSError, ValueError):
                continue  # being replaced right now; the next poll reads it
    return states


def incoming(app: Appliance, printer: str) -> list[Path]:
    root = app.spool / "jobs" / printer / "incoming"
    return sorted(root.iterdir()) if root.is_dir() else []


def journal(app: Appliance, printer: str) -> list[dict]:
    path = app.spool / "jobs" / printer / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def local_mailbox(app: Appliance, printer: str) -> list[Path]:
    box = app.spool / "mail" / printer
    return [p for sub in ("new", "cur") if (box / sub).is_dir() for p in (box / sub).iterdir()]


def printer_idle(app: Appliance, printer: str) -> bool:
    """Nothing left to do for *printer*: its local mailbox and incoming/
    are empty and no job is in the spool (every job finished and was
    forgotten).  Waiting for this before counting printed jobs is what makes
    "printed exactly once" a deterministic assertion: a second copy could
    only come from work that is still there."""
    return not local_mailbox(app, printer) and not incoming(app, printer) and not job_states(app, printer)


# -- the command a user runs ---------------------------------------------------------------


def user_env(home: Path) -> dict[str, str]:
    """An environment for a fresh user whose files live under *home*."""
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[var] = str(home / var.lower())
    env["HOME"] = str(home)
    env["PHASERLINK_SITE_DESTINATIONS"] = str(home / "no-site-destinations.ini")
    env.pop("PHASERLINK_PASSWORD", None)
    return env


def phaserlink(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``phaserlink ARGS`` as a user would (the console script's module)."""
    return subprocess.run([sys.executable, "-m", "phaserlink.client.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def write_destinations(env: dict[str, str], text: str) -> Path:
    path = Path(env["XDG_CONFIG_HOME"]) / "phaserlink" / "destinations.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def printer_section(name: str, output: str, *, senders: str = "*@example.com", formats: str | None = "postscript",
                    notify: str = "printed, errors", **extra: str) -> str:
    """A ``[printer:NAME]`` section; *formats* None leaves the key out (an
    IPP printer then takes what it says it takes)."""
    lines = [f"[printer:{name}]", "sender_auth = none", f"addresses = {name}@phaserlink.test", f"output = {output}",
             f"allowed_senders = {senders}", f"notify = {notify}"]
    if formats is not None:
        lines.append(f"formats = {formats}")
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"

"""``phaserlink cups-install``: put the backend where CUPS looks for it.

CUPS runs ``BACKEND_DIR/SCHEME`` for a queue whose URI is ``SCHEME://...``,
and refuses a backend (or a directory holding it) that is not owned by root
or is group/world-writable ("insecure permissions").  The mode decides who it
runs as: without the other-execute bit (0700) as root, with it (0755) as
the ``lp`` user.  We install a two-line shell wrapper that execs this very
Python with ``-m phaserlink.client.cups_backend``, so it keeps working in a
virtualenv and needs no console script on cupsd's PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from phaserlink.client.cups_backend import SCHEME

DEFAULT_BACKEND_DIR = Path("/usr/lib/cups/backend")
MODES = {"root": 0o700, "lp": 0o755}


def backend_dir() -> Path:
    """CUPS's backend directory: ``cups-config --serverbin``/backend, else
    the Debian/Red Hat default."""
    tool = shutil.which("cups-config")
    if tool:
        try:
            out = subprocess.run([tool, "--serverbin"], capture_output=True, text=True, timeout=10, check=True)
            if out.stdout.strip():
                return Path(out.stdout.strip()) / "backend"
        except (OSError, subprocess.SubprocessError):
            pass
    return DEFAULT_BACKEND_DIR


def wrapper_text(python: str | None = None) -> str:
    python = python or sys.executable
    return ("#!/bin/sh\n"
            "# PhaserLink CUPS backend (installed by 'phaserlink cups-install')\n"
            f"exec {shlex.quote(python)} -m phaserlink.client.cups_backend \"$@\"\n")


def install(directory: Path | None = None, *, run_as: str = "root") -> Path:
    """Write the wrapper atomically as DIR/phaserlink, root-owned, mode by
    *run_as*; return its path."""
    directory = Path(directory) if directory is not None else backend_dir()
    mode = MODES[run_as]
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SCHEME
    tmp = directory / f".{SCHEME}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(wrapper_text())
        f.flush()
        os.fsync(f.fileno())
    try:
        if os.geteuid() == 0:
            os.chown(tmp, 0, 0)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target

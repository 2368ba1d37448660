"""Finding real third-party peers, and the CI rule for when one is missing.

Under CI (``CI=true``) a test that needs a peer fails if the peer is not
installed: a green CI must mean the peer really ran.  Elsewhere (a laptop
without root) the test is skipped and says what to install.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SBIN = ("/usr/sbin", "/sbin", "/usr/lib/postfix/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_program(name: str, package: str | None = None) -> str:
    """Return the path of *name*, or fail (CI) / skip (elsewhere)."""
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in SBIN if (Path(d) / name).exists()), None
    )
    if path:
        return path
    why = f"{name} is not installed (apt-get install {package or name}; see scripts/test)"
    if in_ci():
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)
    raise AssertionError


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail(f"CI=true but not root, needed for {what}")
        pytest.skip(f"{what} needs root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

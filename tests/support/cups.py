"""A private cupsd for tests, and CUPS's client tools beside LPRng.

cups-client and LPRng both ship ``lp``/``lpr``, so the client tools are not
installed: the package is downloaded with ``apt-get download cups-client``
and unpacked with ``dpkg-deb -x`` into a cache directory
(``$PHASERLINK_CUPS_CLIENT_CACHE``, default ``/var/tmp/phaserlink-cups-client``),
and its bin/sbin go first in PATH.  cupsd itself (cups-daemon) coexists with
LPRng and is installed by scripts/install-peers.

The cupsd runs from a directory of its own (config, spool, logs, backends),
on a free loopback port, and is stopped by PID.  The directory lives under
/tmp with mode 0755 so that a backend running as ``lp`` can reach it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.peers import free_port, in_ci, require_program, stop_process

CACHE_ENV = "PHASERLINK_CUPS_CLIENT_CACHE"
DEFAULT_CACHE = Path("/var/tmp/phaserlink-cups-client")
CUPS_DAEMON_DIR = Path("/usr/lib/cups/daemon")
READY_TIMEOUT = 15.0
CONNECT_RETRIES = 25


def _unavailable(why: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


def cups_client_dir() -> Path:
    """The unpacked cups-client package (lp, lpadmin, lpstat), fetched once."""
    cache = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    root = cache / "root"
    if (root / "usr" / "sbin" / "lpadmin").exists():
        return root
    require_program("dpkg-deb", "dpkg")
    require_program("apt-get", "apt")
    cache.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix="dl-", dir=cache))
    os.chmod(download, 0o777)  # apt's _apt user writes the .deb here
    try:
        out = subprocess.run(["apt-get", "download", "cups-client"], cwd=download, capture_output=True,
                             text=True, timeout=300)
        debs = list(download.glob("cups-client_*.deb"))
        if out.returncode != 0 or not debs:
            _unavailable(f"cannot download cups-client (apt-get update done?): {out.stderr.strip()[-300:]}")
        staging = Path(tempfile.mkdtemp(prefix="root-", dir=cache))
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True, timeout=120)
        try:
            staging.rename(root)
        except OSError:  # another test run got there first
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return root


@dataclass
class CupsServer:
    """A running private cupsd."""

    directory: Path
    port: int = field(default_factory=free_port)
    client_root: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def backend_dir(self) -> Path:
        return self.directory / "lib" / "backend"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        assert self.client_root is not None
        env["PATH"] = f"{self.client_root / 'usr/bin'}:{self.client_root / 'usr/sbin'}:{env.get('PATH', '')}"
        env["CUPS_SERVER"] = f"127.0.0.1:{self.port}"
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        for _ in range(CONNECT_RETRIES):
            out = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
            # cupsd sometimes drops a connection in its first moments (seen as
            # "Unable to connect to server: Bad file descriptor"): ask again.
            if "Unable to connect to server" not in out.stderr:
                break
            time.sleep(0.2)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr}\n{self.log()}")
        return out

    def write_config(self, env_lines: dict[str, str] | None = None) -> None:
        d = self.directory
        for sub in ("etc", "lib/backend", "spool/tmp", "run", "cache", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "lib", 0o755)
        os.chmod(d / "lib" / "backend", 0o755)
        daemon = d / "lib" / "daemon"
        if not daemon.exists():
            daemon.symlink_to(CUPS_DAEMON_DIR)
        (d / "cups-files.conf").write_text(
            f"ServerRoot {d / 'etc'}\nServerBin {d / 'lib'}\nDataDir /usr/share/cups\n"
            f"RequestRoot {d / 'spool'}\nTempDir {d / 'spool/tmp'}\nStateDir {d / 'run'}\n"
            f"CacheDir {d / 'cache'}\nErrorLog {d / 'log/error_log'}\nAccessLog {d / 'log/access_log'}\n"
            f"PageLog {d / 'log/page_log'}\nPrintcap {d / 'run/printcap'}\n"
            "User lp\nGroup lp\nSystemGroup root\n"
            # SetEnv belongs here (CUPS 2.4 warns about it in cupsd.conf and ignores it)
            + "".join(f"SetEnv {k} {v}\n" for k, v in (env_lines or {}).items()))
        (d / "cupsd.conf").write_text(
            f"Listen 127.0.0.1:{self.port}\nBrowsing No\nWebInterface No\nDefaultAuthType None\n"
            "ErrorPolicy abort-job\nLogLevel debug\nJobRetryInterval 1\nJobRetryLimit 2\n"
            "<Location />\n  Order allow,deny\n  Allow 127.0.0.1\n</Location>\n"
            "<Policy default>\n  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n")

    def start(self, env_lines: dict[str, str] | None = None) -> "CupsServer":
        cupsd = require_program("cupsd", "cups-daemon")
        self.client_root = cups_client_dir()
        self.write_config(env_lines)
        self.proc = subprocess.Popen(
            [cupsd, "-f", "-c", str(self.directory / "cupsd.conf"), "-s", str(self.directory / "cups-files.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cupsd exited {self.proc.returncode}: {self.proc.stderr.read().decode()}"
                                   f"\n{self.log()}")
            probe = subprocess.run(["lpstat", "-r"], env=self.env, capture_output=True, text=True, timeout=30)
            if "is running" in probe.stdout and self.run("lpstat", "-e", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"cupsd did not answer in {READY_TIMEOUT}s\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.directory / "log" / "error_log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def wait_job_done(self, job: str, timeout: float = 30.0) -> str:
        """Wait until *job* (e.g. ``Q-1``) is no longer active; return
        ``completed`` if CUPS says so in its log, else the job's last
        logged line (aborted, stopped...)."""
        number = job.rpartition("-")[2]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = self.run("lpstat", "-o", check=False).stdout
            if job not in active.split():
                log = self.log()
                if f"[Job {number}] Job completed." in log:
                    return "completed"
                lines = [line for line in log.splitlines() if f"[Job {number}]" in line]
                return lines[-1] if lines else "gone"
            time.sleep(0.1)
        lines = [line for line in self.log().splitlines() if f"[Job {number}]" in line or "SetEnv" in line]
        raise AssertionError(f"job {job} not done after {timeout}s\n" + "\n".join(lines[-60:]))


def make_cups_directory() -> Path:
    """A root-owned 0755 directory under /tmp (pytest's tmp_path is 0700,
    which a backend running as lp could not enter)."""
    path = Path(tempfile.mkdtemp(prefix="phaserlink-cupsd-"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def cupsd():
    """An unstarted private cupsd (in make_cups_directory) for the tests
    that install the root-owned PhaserLink backend into it; skipped (a
    failure under CI) without root.  Stopped and removed afterwards."""
    from support.peers import require_root

    require_root("a private cupsd with a root-owned backend")
    directory = make_cups_directory()
    server = CupsServer(directory)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def phaserlink_queue(cups: CupsServer, to: str, smtp_port: int, sender: str, queue: str = "pl") -> None:
    """Start *cups*, install the PhaserLink backend into it (as root) and
    add the queue *queue* whose device mails each job to *to* through the
    appliance's SMTP server on *smtp_port*, from *sender*."""
    from urllib.parse import quote

    from phaserlink.client import cups_install

    cups.start()
    cups_install.install(cups.backend_dir, run_as="root")
    uri = f"phaserlink://{quote(to, safe='')}?server=127.0.0.1:{smtp_port}&from={quote(sender, safe='')}"
    cups.run("lpadmin", "-p", queue, "-E", "-v", uri)

"""What the real-printer fixtures (LPRng lpd, p910nd) have in common.

Each runs in its own session (process group) so that stop, pause and
resume reach the daemon and every child it forked (a job being received,
a filter running) by that one group id, which the fixture started itself.
Both write one file per job into ``out/`` under a temporary name and rename
it only when complete, so ``jobs()`` never sees half a job.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from support.peers import free_port

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something LISTENs on host:port, without connecting to it.

    Connecting would be a job to a raw printer (an empty output file), so
    read the kernel's socket table instead.
    """
    want = f"{_hex_ipv4(host)}:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":  # 0A = TCP_LISTEN
                    return True
    except FileNotFoundError:  # not Linux: fall back to the caller's patience
        return True
    return False


def _hex_ipv4(host: str) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(host.split(".")))


class PrinterPeer:
    """Base for a daemon fixture with start/stop/pause/resume and jobs()."""

    name = "printer"

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        # The daemons drop root (lpd runs as `daemon`): pytest's tmp_path is
        # 0700, so by default use a world-traversable directory of our own.
        self._own_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix=f"phaserlink-{self.name}-"))
        self.base.chmod(0o755)
        self.out = self.base / "out"
        self.out.mkdir(exist_ok=True)
        self.out.chmod(0o777)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self._paused = False

    # --- lifecycle -------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration before each start."""

    def start(self) -> "PrinterPeer":
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already running")
        self.prepare()
        self.log = open(self.base / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not is_listening(self.port, self.host):
            if self.proc.poll() is not None:
                log = (self.base / f"{self.name}.log").read_text(errors="replace")
                self.proc = None
                raise RuntimeError(f"{self.name} exited at start:\n{log}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} does not listen on {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the daemon and everything it forked (the printer goes
        offline: connections are refused).  start() brings it back on the
        same port."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        tree = self._tree(proc)  # before the leader dies and they are reparented
        self._signal_all(proc, tree, signal.SIGTERM)
        self._signal_all(proc, tree, signal.SIGCONT)  # a paused process must wake to die
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # Children (a filter, a job receiver) may outlive the leader briefly.
        self._signal_all(proc, tree + self._tree(proc), signal.SIGKILL)
        proc.wait()
        self._paused = False
        self.log.close()

    def pause(self) -> None:
        """A hung printer: kill -STOP.  Connects still complete (the kernel
        backlog) but nothing is read or answered."""
        assert self.proc is not None
        self._signal_all(self.proc, self._tree(self.proc), signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self._signal_all(self.proc, self._tree(self.proc), signal.SIGCONT)
        self._paused = False

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "PrinterPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    @staticmethod
    def _tree(proc: subprocess.Popen) -> list[int]:
        """PIDs of every descendant of the process we started (lpd's
        children call setsid, so the process group alone misses them)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    @staticmethod
    def _signal_all(proc: subprocess.Popen, pids: list[int], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # the session we started: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # --- captured jobs ---------------------------------------------------

    def jobs(self) -> list[Path]:
        """Complete job files, oldest first."""
        return sorted(self.out.glob("job-*.data"))

    def wait_for_jobs(self, count: int, timeout: float = 15.0) -> list[Path]:
        """Wait until at least *count* complete jobs were captured."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs()
            if len(jobs) >= count or time.monotonic() > deadline:
                return jobs
            time.sleep(0.02)

    def clear_jobs(self) -> None:
        for path in self.out.iterdir():
            path.unlink()

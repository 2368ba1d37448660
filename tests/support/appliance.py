"""Run the real appliance (``twistd -n phaserlink``) in a subprocess.

Integration tests write a site.ini into a temporary directory, start the
appliance exactly as a user would, talk to it over loopback with real peers,
and may ``kill -9`` it to prove what survives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from support.peers import free_port, wait_for_port
from support.twistd import TWISTD

def password_hash(password: str) -> str:
    """A cheap hash (1000 rounds) for test configs."""
    from phaserlink.passwords import hash_password

    return hash_password(password, iterations=1000)


def pull_printer(name: str = "pull", password: str = "pull") -> str:
    """A ``[printer:NAME]`` section for NAME@phaserlink.test from anyone,
    whose jobs wait in its mailbox for pick-up over POP3 (``output =
    pull``) as NAME with *password*."""
    return (f"[printer:{name}]\nsender_auth = none\naddresses = {name}@phaserlink.test\noutput = pull\n"
            f"allowed_senders = *\npop3_password = {password_hash(password)}\n\n")


@dataclass
class Appliance:
    """A configured appliance directory; ``start()`` runs twistd on it."""

    directory: Path
    smtp_port: int = field(default_factory=free_port)
    pop3_port: int = field(default_factory=free_port)
    appliance_extra: str = ""
    sections: str = ""
    proc: subprocess.Popen | None = None
    log_dir: Path | None = None  # default: the appliance directory
    preexec: "Callable[[], None] | None" = None  # runs in the child before twistd (limits)

    @property
    def config_path(self) -> Path:
        return self.directory / "site.ini"

    @property
    def spool(self) -> Path:
        return self.directory / "var"

    @property
    def log_path(self) -> Path:
        return (self.log_dir or self.directory) / "twistd.log"

    def write_config(self) -> Path:
        text = textwrap.dedent(
            f"""\
            [appliance]
            hostname = phaserlink.test
            spool = {self.spool}
            smtp_listen = tcp:{self.smtp_port}:interface=127.0.0.1
            pop3_listen = tcp:{self.pop3_port}:interface=127.0.0.1
            """
        ) + textwrap.dedent(self.appliance_extra) + "\n" + textwrap.dedent(self.sections)
        self.config_path.write_text(text)
        return self.config_path

    def start(self, timeout: float = 20.0) -> "Appliance":
        self.write_config()
        self.proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "--logfile", str(self.log_path),
             "phaserlink", "--config", str(self.config_path)],
            cwd=self.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        try:
            wait_for_port(self.smtp_port, timeout=timeout)
            wait_for_port(self.pop3_port, timeout=timeout)
        except TimeoutError:
            self.stop()
            out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
            raise RuntimeError(f"appliance did not start:\n{out}\n{self.log()}") from None
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- log ---\n{self.log()[-4000:]}")

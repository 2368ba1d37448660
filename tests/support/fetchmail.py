"""Run the real ``fetchmail`` against the appliance's POP3 store.

Each run gets a private HOME with a mode-0600 rcfile, no syslog, and an MDA
that saves each message it is handed as its own file, so a test can compare
what fetchmail got with what was in the mailbox, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from support.peers import require_program

CAPTURE = """\
import os, sys, time
data = sys.stdin.buffer.read()
path = os.path.join(sys.argv[1], "%020d.eml" % time.time_ns())
with open(path + ".tmp", "wb") as f:
    f.write(data)
os.rename(path + ".tmp", path)
"""


@dataclass
class FetchmailResult:
    returncode: int
    output: str
    messages: list[bytes]


class Fetchmail:
    """A fetchmail set up to pull one mailbox over STLS, verifying the CA."""

    def __init__(self, directory: Path, port: int, ca_file: Path, user: str = "pull", password: str = "pull"):
        self.program = require_program("fetchmail")
        self.home = Path(directory)
        self.captured = self.home / "captured"
        self.captured.mkdir(parents=True, exist_ok=True)
        self.capture_script = self.home / "capture.py"
        self.capture_script.write_text(CAPTURE)
        self.port = port
        self.ca_file = ca_file
        self.user = user
        self.password = password
        self.idfile = self.home / ".fetchids"

    def rcfile(self, keep: bool, uidl: bool) -> Path:
        # We connect to the IPv4 loopback only (localhost may be ::1 first) and
        # check the certificate against the name it was issued for, "localhost".
        text = textwrap.dedent(
            f"""\
            set no bouncemail
            set invisible
            poll localhost via 127.0.0.1 port {self.port} protocol POP3 {'uidl' if uidl else 'no uidl'}
                timeout 30
                user "{self.user}" password "{self.password}" is "nobody" here
                sslproto 'tls1.2+' sslcertck sslcertfile "{self.ca_file}" sslcommonname localhost
                {'keep' if keep else 'nokeep'}
                mda "{sys.executable} {self.capture_script} {self.captured}"
            """
        )
        path = self.home / ".fetchmailrc"
        path.write_text(text)
        path.chmod(0o600)
        return path

    def run(self, keep: bool = False, uidl: bool = False, timeout: float = 60) -> FetchmailResult:
        before = set(self.captured.iterdir())
        rc = self.rcfile(keep, uidl)
        env = {**os.environ, "HOME": str(self.home), "FETCHMAILHOME": str(self.home)}
        proc = subprocess.run(
            [self.program, "--nosyslog", "--nodetach", "-v", "-f", str(rc), "-i", str(self.idfile),
             "--pidfile", str(self.home / "fetchmail.pid")],
            env=env,
            capture_output=True,
            timeout=timeout,
        )
        new = sorted(set(self.captured.iterdir()) - before)
        return FetchmailResult(
            proc.returncode,
            (proc.stdout + proc.stderr).decode(errors="replace"),
            [p.read_bytes() for p in new],
        )

"""A real ``p910nd`` raw (port 9100 / AppSocket) printer on 127.0.0.1.

    with P910ndPrinter() as printer:
        ... send to socket://127.0.0.1:{printer.port} ...
        [job] = printer.wait_for_jobs(1)

p910nd's own listener takes only ports 9100-9102, so it runs in inetd
mode under ``tcpserver -c 1`` (one job at a time, like a printer; more
connections wait in the backlog).  A wrapper per connection gives each job
its own file (p910nd's ``-f`` file is opened without O_TRUNC) and renames
it to ``out/job-<ns>-<pid>.data`` before the connection closes: the wrapper
holds the socket too, so when the client sees EOF the job file is complete.
p910nd never sends a byte back.
"""

from __future__ import annotations

from pathlib import Path

from support.peers import require_program, require_root
from support.printer_peer import PrinterPeer

LOCK_DIR = Path("/var/lock/p910nd")  # p910nd insists on it

_WRAPPER = """#!/bin/sh
# One raw-printer job: p910nd copies the socket (fd 0) into a fresh file.
n=$(date +%s%N)-$$
t="{out}/.tmp-$n"
: > "$t" || exit 1
"{p910nd}" -f "$t" || exit 1
exec mv "$t" "{out}/job-$n.data"
"""


class P910ndPrinter(PrinterPeer):
    name = "p910nd"

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        require_root("p910nd (its lock directory is /var/lock/p910nd)")
        self.p910nd = require_program("p910nd")
        self.tcpserver = require_program("tcpserver", "ucspi-tcp")
        super().__init__(base, port)

    def uri(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def prepare(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        wrapper = self.base / "job.sh"
        wrapper.write_text(_WRAPPER.format(out=self.out, p910nd=self.p910nd))
        wrapper.chmod(0o755)

    def command(self) -> list[str]:
        # -c 1: one connection at a time; -R -H -l0: no ident/DNS lookups.
        return [self.tcpserver, "-c", "1", "-RHl0", self.host, str(self.port),
                str(self.base / "job.sh")]

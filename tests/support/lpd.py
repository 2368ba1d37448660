"""A real LPRng ``lpd`` (RFC 1179 server) on 127.0.0.1 for tests.

    with LPRngServer(queues=("raw",)) as lpd:
        ... send to lpd://127.0.0.1:{lpd.port}/raw ...
        [job] = lpd.wait_for_jobs(1)
        job.read_bytes(), lpd.job_args(job)["-n"]   # data, user

LPRng reads only ``/etc/lprng/lpd.conf``, so it runs inside ``unshare -m``
with our own directory bind-mounted over ``/etc/lprng`` (root needed; see
docs/README.md).  Each queue's ``if=`` filter copies the job to
``out/job-<ns>-<pid>.data`` (renamed when complete) with the filter's
arguments beside it in ``.args``.  LPRng runs the filter once per ``l``
line, so a job with two copies arrives as two files.  Printing is
asynchronous: a file appears 0.1-1 s after the last ack; use
``wait_for_jobs``.
"""

from __future__ import annotations

import time
from pathlib import Path

from support.peers import require_program, require_root
from support.printer_peer import PrinterPeer

_FILTER = """#!/bin/sh
# LPRng if= filter: the job on stdin -> one file per job, renamed when complete.
n=$(date +%s%N)-$$
t="{out}/.tmp-$n"
printf '%s\\n' "$@" > "$t.args" || exit 32
cat > "$t" || exit 32
mv "$t.args" "{out}/job-$n.args" && mv "$t" "{out}/job-$n.data" || exit 32
exit 0
"""


class LPRngServer(PrinterPeer):
    name = "lpd"

    def __init__(self, base: Path | None = None, port: int | None = None,
                 queues: tuple[str, ...] = ("raw",)) -> None:
        require_root("LPRng lpd (unshare -m and a bind mount over /etc/lprng)")
        self.lpd = require_program("lpd", "lprng")
        self.unshare = require_program("unshare", "util-linux")
        super().__init__(base, port)
        self.queues = queues

    def uri(self, queue: str | None = None) -> str:
        return f"lpd://{self.host}:{self.port}/{queue or self.queues[0]}"

    def prepare(self) -> None:
        etc = self.base / "etc"
        etc.mkdir(exist_ok=True)
        spool = self.base / "spool"
        spool.mkdir(exist_ok=True)
        spool.chmod(0o777)
        capture = self.base / "capture.sh"
        capture.write_text(_FILTER.format(out=self.out))
        capture.chmod(0o755)
        entries = []
        for queue in self.queues:
            (spool / queue).mkdir(exist_ok=True)
            (spool / queue).chmod(0o777)
            # sh: no banner; mx=0: no size limit; lp=/dev/null: the filter
            # does the "printing".
            entries.append(f"{queue}:sd={spool / queue}:if={capture}:lp=/dev/null:sh:mx=0\n")
        (etc / "printcap").write_text("".join(entries))
        (etc / "lpd.perms").write_text("DEFAULT ACCEPT\n")
        address = f"{self.host}%{self.port}"
        (etc / "lpd.conf").write_text(
            f"lpd_port={address}\n"
            # Debian's LPRng listens nowhere unless told (default "off").
            f"lpd_listen_port={address}\n"
            "unix_socket_path=off\n"
            f"lockfile={self.base / 'lpd.lock'}\n"
            f"printcap_path={etc / 'printcap'}\n"
            f"perms_path={etc / 'lpd.perms'}\n"
        )
        # lpd drops to user daemon and must create its lock file here.
        self.base.chmod(0o777)

    def command(self) -> list[str]:
        script = f'mount --bind "{self.base / "etc"}" /etc/lprng && exec "{self.lpd}" -F'
        return [self.unshare, "-m", "--propagation", "private", "sh", "-c", script]

    def job_args(self, job: Path) -> dict[str, str]:
        """The filter's arguments for a captured job: {'-n': user, '-H': host,
        '-J': title, '-j': job number, '-b': byte count, ...}."""
        args = {}
        for line in job.with_suffix(".args").read_text().splitlines():
            if line.startswith("-") and len(line) >= 2:
                args[line[:2]] = line[2:]
        return args

    def spooled(self, queue: str | None = None) -> list[str]:
        """Control files still waiting in a queue's spool directory."""
        spool = self.base / "spool" / (queue or self.queues[0])
        return sorted(p.name for p in spool.glob("cf*"))

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every queue's spool holds no job any more."""
        deadline = time.monotonic() + timeout
        while any(self.spooled(q) for q in self.queues) and time.monotonic() < deadline:
            time.sleep(0.05)

"""Printers whose mailboxes Dovecot holds: what one appliance's polling costs.

    python3 bench/remote_polls.py                    # 250 printers, poll 60 s and 10 s, mailbox_sessions 10
    python3 bench/remote_polls.py --printers 50 --seconds 20 --polls 5   # quicker

One appliance (``twistd -n phaserlink``) with N printers, each ``mailbox =
pop3s://...`` on one real Dovecot (implicit TLS, the certificate verified,
``pop3_lock_session = yes``), ``output = file:``.  For each poll interval:

- the login rate Dovecot sees (its own "Login:" log lines per second) and
  what the appliance's process spends on it (CPU seconds per second of
  wall time, from /proc; 1.0 = one core) and what Dovecot spends (its
  master with every child it reaped: login, auth, pop3 processes), with
  every mailbox empty;
- the delay from a job landing in a Dovecot Maildir (as dovecot-lda or
  Postfix's virtual agent would put it) to the job file printed, for
  probes delivered at random moments (median and p99: half the poll
  interval on average is the price of polling);
- the appliance's peak RSS and open fds.

The first figure sizes Dovecot for a site (logins/s from all appliances;
``mailbox_sessions`` per appliance bounds connections at once); the second
says which poll interval a site can afford.  Prints figures, asserts
nothing.  Needs root (Dovecot's mail uid) and scripts/install-peers.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from measure import vm_hwm_kb  # noqa: E402
from support.appliance import Appliance  # noqa: E402
from support.ca import TestCA  # noqa: E402
from support.dovecot import Dovecot  # noqa: E402
from support.mailbox_printer import pop3s_printer_section  # noqa: E402

PS = b"%!PS-Adobe-3.0\n%%Title: probe\n/Helvetica findfont 12 scalefont setfont\n72 720 moveto (probe) show\nshowpage\n"


class LockingDovecot(Dovecot):
    def _config(self) -> str:
        return super()._config() + "pop3_lock_session = yes\n"

    def logins_all(self) -> list[str]:
        """Dovecot's own "Login:" lines, every user."""
        return [line for line in self.log_text.splitlines() if "Login:" in line]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_with_children(pid: int) -> float:
    """CPU of *pid* and of its children it has reaped (Dovecot's master
    reaps its login and pop3 processes, so this is Dovecot's whole cost)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def dovecot_cpu(master: int) -> float:
    """The master's own and reaped CPU plus what its live children used so far."""
    total = cpu_with_children(master)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                total += cpu_with_children(int(entry.name))
    return total


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def job(printer: str, n: int) -> bytes:
    import base64

    body = base64.encodebytes(PS).decode()
    return (f"From: alice@big.test\nTo: {printer}@printers.test\nSubject: probe {n}\n"
            f"Message-ID: <probe-{printer}-{n}-{time.time_ns()}@big.test>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nprobe\n"
            "--b\nContent-Type: application/postscript\nContent-Transfer-Encoding: base64\n\n"
            f"{body}--b--\n").encode()


def run(printers: int, poll: float, sessions: int, seconds: float, probes: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="phaserlink-remote-polls-"))
    ca = TestCA(work / "ca")
    names = [f"r{i:04d}" for i in range(printers)]
    dovecot = LockingDovecot(cert=ca.issue())
    app = Appliance(work / "app")
    app.directory.mkdir()
    out = work / "printed"
    try:
        dovecot.start(users={n: "pw" for n in names})
        (work / "pw").write_text("pw\n")
        app.appliance_extra = f"mailbox_sessions = {sessions}\n"
        app.sections = "".join(pop3s_printer_section(n, out / n, dovecot, work / "pw", ca.ca_path, poll=f"{poll:g}s")
                               for n in names)
        started = time.monotonic()
        app.start(timeout=120)
        pid = app.proc.pid
        # Let the first round (every printer at once, bounded by
        # mailbox_sessions) pass, then measure the steady state.
        time.sleep(min(poll, 15) + 2)
        master = dovecot.proc.pid
        logins0, cpu0, t0 = len(dovecot.logins_all()), cpu_seconds(pid), time.monotonic()
        dcpu0 = dovecot_cpu(master)
        time.sleep(seconds)
        logins1, cpu1, t1 = len(dovecot.logins_all()), cpu_seconds(pid), time.monotonic()
        dcpu1 = dovecot_cpu(master)
        rate = (logins1 - logins0) / (t1 - t0)
        cpu = (cpu1 - cpu0) / (t1 - t0)
        dcpu = (dcpu1 - dcpu0) / (t1 - t0)
        # Probes to distinct printers at random moments over one poll
        # interval; each one's delay is its printed file's mtime minus the
        # moment it landed in Dovecot (both wall clock).
        landed: dict[str, float] = {}
        for i, printer in enumerate(random.sample(names, min(probes, len(names)))):
            time.sleep(random.uniform(0, poll / max(1, probes)) * 2)
            landed[printer] = time.time()
            dovecot.deliver(printer, job(printer, i))
        deadline = time.monotonic() + poll * 2 + 60
        delays = []
        for printer, at in landed.items():
            while not (files := list((out / printer).glob("*"))) and time.monotonic() < deadline:
                time.sleep(0.05)
            delays.append(min(f.stat().st_mtime for f in files) - at if files else float("inf"))
        delays.sort()
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(f"printers {printers}, poll_interval {poll:g} s, mailbox_sessions {sessions}: "
              f"Dovecot logins {rate:.1f}/s (expected {printers / poll:.1f}/s), appliance CPU {cpu:.2f} s/s, "
              f"Dovecot CPU {dcpu:.2f} s/s ({1000 * dcpu / max(rate, 0.001):.1f} ms per login), "
              f"delivery-to-printed median {statistics.median(delays):.2f} s p99 {p99:.2f} s ({len(delays)} probes), "
              f"peak RSS {vm_hwm_kb(pid) / 1024:.0f} MB, fds {fds(pid)}; "
              f"load average {os.getloadavg()[0]:.1f}; run {time.monotonic() - started:.0f} s",
              flush=True)
    finally:
        app.stop()
        dovecot.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--printers", type=int, default=250)
    ap.add_argument("--polls", type=float, nargs="+", default=[60.0, 10.0], help="poll intervals (s)")
    ap.add_argument("--sessions", type=int, default=10, help="[appliance] mailbox_sessions")
    ap.add_argument("--seconds", type=float, default=60.0, help="steady-state measuring time per interval")
    ap.add_argument("--probes", type=int, default=20)
    args = ap.parse_args(argv)
    for poll in args.polls:
        run(args.printers, poll, args.sessions, args.seconds, args.probes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

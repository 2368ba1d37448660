"""SMTP intake benchmark: the appliance against a real Postfix, same run.

    python3 bench/smtp_load.py            # full run (about 2-4 minutes)
    python3 bench/smtp_load.py --quick    # a tenth of the messages

Postfix's own load generator ``smtp-source`` sends to each server in turn:

- 10,000 messages of 5 KB over 20 sessions,
- 200 messages of 1 MB over 10 sessions,

each three times, alternating which server goes first (the median is
reported), and, to the appliance alone, one 50 KB and one 200 MB message, to show that
peak memory does not grow with the message.  A message counts when its 250
arrives, and both servers promise the same thing by then: the message is on
disk, fsync'd (the appliance in the printer's Maildir, Postfix in its queue).
The appliance logs to memory (/dev/shm), as it does to journald under
etc/phaserlink.service; Postfix logs through its own postlogd.
Peak RSS is the kernel's high-water mark (VmHWM) of the appliance process,
reset before each load; for Postfix the sum over its daemons.

Needs root (Postfix) and the peers from scripts/install-peers.  Prints a table
and the ratios the README quotes; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from postfix_local import PostfixLocal  # noqa: E402
from measure import reset_hwm, vm_hwm_kb  # noqa: E402
from support.appliance import Appliance  # noqa: E402
from support.peers import free_port  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
DOMAIN = "phaserlink.test"
MAILBOX = "bench"


def load(port: int, sessions: int, count: int, size: int) -> float:
    """Run smtp-source; return seconds from start to the last 250."""
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size),
           "-f", "bench@client.test", "-t", f"{MAILBOX}@{DOMAIN}", "-M", "client.test",
           f"127.0.0.1:{port}"]
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if result.returncode != 0 or result.stderr.strip():
        print(f"  smtp-source said: {result.stderr.strip()[:500]}", file=sys.stderr)
    return elapsed


def clear_maildir(path: Path) -> None:
    for sub in ("new", "cur"):
        d = path / sub
        if d.exists():
            for f in d.iterdir():
                f.unlink()


def count_new(path: Path) -> int:
    d = path / "new"
    return len(list(d.iterdir())) if d.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--no-postfix", action="store_true", help="skip the Postfix comparison")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and load (median reported)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    loads = [("5 KB x %d, 20 sessions" % (10000 // scale), 20, 10000 // scale, 5 * 1024),
             ("1 MB x %d, 10 sessions" % (200 // scale), 10, 200 // scale, 1024 * 1024)]

    work = Path(tempfile.mkdtemp(prefix="phaserlink-bench-"))
    # The log goes to memory (/dev/shm), as it does to journald under the
    # shipped systemd unit (--logfile=-): a log file on the spool's disk
    # makes each log line wait behind the fsyncs of 20 sessions.
    app = Appliance(work / "appliance", log_dir=Path(tempfile.mkdtemp(prefix="phaserlink-bench-log-", dir="/dev/shm")))
    app.directory.mkdir()
    app.appliance_extra = "max_message_size = 300M\nmax_sessions = 1000\n"
    app.sections = (
        f"[printer:{MAILBOX}]\nsender_auth = none\naddresses = {MAILBOX}@{DOMAIN}\noutput = pull\nallowed_senders = *\n"
    )
    postfix = None
    results: dict[str, dict[str, tuple[float, float, int]]] = {}
    try:
        app.start()
        pid = app.proc.pid
        box = app.spool / "mail" / MAILBOX
        servers = [("phaserlink", app.smtp_port, lambda: [pid], lambda: count_new(box), lambda: clear_maildir(box))]
        if not args.no_postfix:
            postfix = PostfixLocal(work / "postfix", free_port(), DOMAIN, MAILBOX)
            postfix.start()
            servers.append(("postfix", postfix.port, postfix.pids, postfix.delivered,
                            lambda: clear_maildir(postfix.mail / MAILBOX)))
        for name, sessions, count, size in loads:
            rates: dict[str, list[float]] = {}
            peaks: dict[str, int] = {}
            for round_ in range(args.rounds):
                # Alternate who goes first, and start each run with the
                # disk's write-back done: on a shared virtual disk the run
                # after a big write is slower, whoever it is.
                order = servers if round_ % 2 == 0 else servers[::-1]
                for server, port, pids, delivered, clear in order:
                    clear()
                    os.sync()
                    time.sleep(1)
                    load(port, min(sessions, count), min(50, count), size)  # warm-up
                    for p in pids():
                        reset_hwm(p)
                    elapsed = load(port, sessions, count, size)
                    peaks[server] = max(peaks.get(server, 0), sum(vm_hwm_kb(p) for p in pids()))
                    rates.setdefault(server, []).append(count / elapsed)
                    print(f"  round {round_ + 1}: {name:26} {server:11} {count / elapsed:8.1f} msg/s", flush=True)
            for server, *_ in servers:
                rate = statistics.median(rates[server])
                results.setdefault(name, {})[server] = (rate, rate * size / 1e6, peaks[server])
                print(f"{name:28} {server:11} {rate:8.1f} msg/s {rate * size / 1e6:7.1f} MB/s  "
                      f"peak RSS {peaks[server] / 1024:6.1f} MB  (median of {args.rounds})", flush=True)
        # Peak memory against message size, appliance alone.
        for label, size in (("50 KB message", 50 * 1024), ("200 MB message", 200 * 1024 * 1024)):
            clear_maildir(box)
            reset_hwm(pid)
            elapsed = load(app.smtp_port, 1, 1, size)
            rss = vm_hwm_kb(pid)
            print(f"{label:28} {'phaserlink':11} {size / elapsed / 1e6:8.1f} MB/s           "
                  f"peak RSS {rss / 1024:6.1f} MB", flush=True)
            results.setdefault(label, {})["phaserlink"] = (1 / elapsed, size / elapsed / 1e6, rss)
        if postfix:
            print()
            for name, target in zip([n for n, *_ in loads], (1.2, 1.0)):
                ours, theirs = results[name]["phaserlink"][0], results[name]["postfix"][0]
                verdict = "met" if ours / theirs >= target else "NOT met"
                print(f"{name:28} ratio {ours / theirs:5.2f}x Postfix (target {target}x: {verdict})")
        big = results["200 MB message"]["phaserlink"][2] / 1024
        print(f"{'200 MB message':28} peak RSS {big:.1f} MB (target < 64 MB: {'met' if big < 64 else 'NOT met'})")
    finally:
        app.stop()
        if postfix:
            postfix.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(app.log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

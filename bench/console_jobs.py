"""Console benchmark: does the job history cost start-up time, memory or
a slow job list?

    python3 bench/console_jobs.py                 # about a minute
    python3 bench/console_jobs.py --history 10000 --waiting 1000 --runs 3

Three spools, each started as a user runs it (``twistd -n phaserlink``,
console on loopback) ``--runs`` times:

1. empty;
2. ``--history`` finished jobs in the console's history index;
3. the same history and ``--waiting`` jobs waiting in the spool (their
   printer paused, so they stay ``pending``).

For each: start-up time (process start until ``/healthz`` answers and the
first ``GET /api/v1/jobs`` page came back), peak RSS of twistd (VmHWM from
/proc after the requests), and the latency of ``GET /api/v1/jobs`` (first
page, 50 jobs, with HTTP Basic; median and max of ``--requests``).  The
history is written with the appliance's own JobHistory; waiting jobs are
real spool jobs (state.json and a PostScript message).  Prints a table; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from phaserlink.passwords import hash_password  # noqa: E402
from phaserlink.printer.history import JobHistory, history_path  # noqa: E402
from phaserlink.printer.jobs import Job  # noqa: E402

TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
USER, PASSWORD = "bench", "bench-secret"
PS = b"%!PS-Adobe-3.0\n/Helvetica findfont 24 scalefont setfont 72 700 moveto (bench) show showpage\n%%EOF\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_site(directory: Path) -> tuple[Path, int]:
    admin = free_port()
    (directory / "site.ini").write_text(
        f"[appliance]\nhostname = bench.test\nspool = {directory / 'var'}\n"
        f"smtp_listen = tcp:{free_port()}:interface=127.0.0.1\npop3_listen = tcp:{free_port()}:interface=127.0.0.1\n"
        f"admin_listen = tcp:{admin}:interface=127.0.0.1\n\n"
        f"[printer:demo]\nsender_auth = none\naddresses = demo@bench.test\noutput = file:{directory / 'printed'}\n"
        f"allowed_senders = *\nnotify = none\n\n"
        f"[admin:{USER}]\npassword = {hash_password(PASSWORD, iterations=1000)}\nrole = operator\n")
    return directory / "site.ini", admin


def fill(directory: Path, history: int, waiting: int) -> None:
    spool = directory / "var"
    h = JobHistory(history_path(spool))
    now = time.time()
    start = now - 20 * 86400
    for i in range(history):
        t = start + i * (19 * 86400 / max(history, 1))
        state = {"job_id": f"20260101-000000-h{i:06d}", "printer": "demo", "state": "pending",
                 "reasons": ["job-queued"], "created": t, "sender": f"user{i % 50}@example.com",
                 "title": f"history job {i}", "detail": ""}
        h.record("demo", state, 2000, now=t)
        h.record("demo", dict(state, state="completed", reasons=["job-completed-successfully"]), now=t + 5)
    jobs_dir = spool / "jobs" / "demo"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    if waiting:
        (jobs_dir / "paused").write_text("paused by bench\n")
    for i in range(waiting):
        job_id = f"20261201-000000-w{i:06d}"
        job = Job(job_id=job_id, printer="demo", state="pending", reasons=["job-queued"], created=now - 3600 + i,
                  changed=now - 3600 + i, source="local mailbox demo", sender="alice@example.com",
                  title=f"waiting job {i}", message_id=f"<w{i}@bench>")
        d = jobs_dir / job_id
        d.mkdir()
        (d / "message").write_bytes(b"From: alice@example.com\nContent-Type: application/postscript\n\n" + PS)
        (d / "state.json").write_text(json.dumps(job.to_json()))
        h.record("demo", job.to_json(), len(PS), now=job.created)
    h.close()


def get(port: int, path: str, timeout: float = 10) -> bytes:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.read()


def run_once(directory: Path, requests: int) -> dict:
    site, port = write_site(directory)
    t0 = time.monotonic()
    proc = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "--logfile", str(directory / "twistd.log"), "phaserlink",
                             "--config", str(site)], cwd=directory, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        deadline = t0 + 60
        while True:
            try:
                get(port, "/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((directory / "twistd.log").read_text()[-3000:])
                time.sleep(0.01)
        first = json.loads(get(port, "/api/v1/jobs"))
        started = time.monotonic() - t0
        latencies = []
        for _ in range(requests):
            t = time.perf_counter()
            page = json.loads(get(port, "/api/v1/jobs"))
            latencies.append((time.perf_counter() - t) * 1000)
        assert len(page["jobs"]) == len(first["jobs"])
        waiting = json.loads(get(port, "/api/v1/printers/demo"))["jobs_waiting"]
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        return {"start": started, "rss_kb": hwm, "median_ms": statistics.median(latencies),
                "max_ms": max(latencies), "jobs_on_page": len(page["jobs"]), "waiting": waiting}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    cases = [("empty spool", 0, 0), (f"{args.history} in history", args.history, 0),
             (f"{args.history} history + {args.waiting} waiting", args.history, args.waiting)]
    print(f"{'case':34} {'start-up s':>10} {'peak RSS MB':>11} {'GET jobs median ms':>18} {'max ms':>7} waiting")
    for name, history, waiting in cases:
        results = []
        for _ in range(args.runs):
            directory = Path(tempfile.mkdtemp(prefix="phaserlink-bench-console-"))
            try:
                fill(directory, history, waiting)
                results.append(run_once(directory, args.requests))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        start = statistics.median(r["start"] for r in results)
        rss = statistics.median(r["rss_kb"] for r in results) / 1024
        med = statistics.median(r["median_ms"] for r in results)
        mx = max(r["max_ms"] for r in results)
        print(f"{name:34} {start:10.2f} {rss:11.1f} {med:18.2f} {mx:7.1f} {results[0]['waiting']}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    main()

"""SMTP intake with and without sender verification (issue 8, docs/trust.md).

    python3 bench/sender_auth_load.py            # 2,000 messages x 3 rounds per setting
    python3 bench/sender_auth_load.py --quick    # 400 messages x 1 round
    python3 bench/sender_auth_load.py --code 4970657           # and that commit, in the same rounds
    python3 bench/sender_auth_load.py --verify-processes 1,2   # and dmarc with 2 workers, same rounds

The same DKIM-signed 5 KB message (rsa-sha256, 2048-bit key, relaxed/relaxed)
is sent over 20 concurrent sessions to one printer address of the running
appliance (twistd), once with ``sender_auth = none`` and once with
``sender_auth = dmarc`` (SPF, the DKIM key and the DMARC record served by a
local dnsmasq).  DNS answers carry a TTL of 300 s (``--ttl``; 0 makes every
message ask DNS three times: the worst case).  Reported per setting: messages
per second (to the last 250), the latency from the end of DATA to the 250
(median and 99th percentile), and the CPU the appliance used per message
(twistd and its verifier workers, from /proc: this does not move with the
shared machine's load as much as the rate does), the median of the rounds.

All appliances (both settings, and with ``--code`` the same two of an older
commit extracted from git) run at once and their rounds alternate, so a
change in the load of the shared machine hits each alike; the load average
is printed with each round.

The appliances run under twistd's cProfile (``--profile``; ``--no-profile``
without, cProfile slows the reactor thread by ~0.4 ms per message), which
profiles the reactor thread only: the report lists the reactor's time in DNS
code (dnspython, pyspf, dkimpy, authheaders), which must be nil: the checks
run in the verifier worker processes (``--profile-workers`` profiles those
too and prints their top functions).  Needs the peers of
scripts/install-peers (dnsmasq).  It is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
# twistd runs this checkout, not whatever an editable install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

import dkim  # noqa: E402

from support.dnsmasq import DnsServer, dkim_key  # noqa: E402
from support.peers import free_port, wait_for_port  # noqa: E402
from support.twistd import TWISTD  # noqa: E402

SESSIONS = 20
ADDRESS = "lp@phaserlink.test"
DNS_MODULES = ("/dns/", "/spf.py", "/dkim/", "/authheaders/")  # the libraries that do DNS


def signed_message(key: Path, size: int = 5 * 1024) -> bytes:
    body = b"".join(b"line %05d of a 5 KB print job, nothing but text here.....\r\n" % i
                    for i in range(size // 60))
    msg = (b"From: Alice <alice@good.test>\r\nTo: " + ADDRESS.encode() + b"\r\nSubject: bench\r\n"
           b"Message-ID: <bench@good.test>\r\n\r\n" + body)
    return dkim.sign(msg, b"sel", b"good.test", key.read_bytes(), include_headers=[b"from", b"to", b"subject"],
                     canonicalize=(b"relaxed", b"relaxed")) + msg


def site_ini(directory: Path, port: int, sender_auth: str, dns: str, processes: int | None) -> Path:
    path = directory / "site.ini"
    workers = "" if processes is None else f"verify_processes = {processes}\n"  # None: code before the key
    path.write_text(
        f"[appliance]\nhostname = phaserlink.test\nspool = {directory / 'var'}\n"
        f"smtp_listen = tcp:{port}:interface=127.0.0.1\npop3_listen = tcp:{free_port()}:interface=127.0.0.1\n"
        f"max_sessions = 1000\ndns_servers = {dns}\n{workers}\n"
        f"[printer:lp]\naddresses = {ADDRESS}\noutput = pull\nallowed_senders = *@good.test\n"
        f"sender_auth = {sender_auth}\n")
    return path


def run_load(port: int, message: bytes, count: int) -> tuple[float, list[float]]:
    """(seconds to the last 250, end-of-DATA-to-250 latencies)."""
    per = [count // SESSIONS + (1 if i < count % SESSIONS else 0) for i in range(SESSIONS)]
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def session(n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo("bench.client.test")
                for _ in range(n):
                    client.mail("bounces@elsewhere.test")
                    client.rcpt(ADDRESS)
                    code, _ = client.docmd("DATA")
                    assert code == 354
                    client.send(message.replace(b"\r\n.", b"\r\n..") + b"\r\n")
                    t = time.perf_counter()
                    client.send(b".\r\n")
                    code, text = client.getreply()
                    took = time.perf_counter() - t
                    if code != 250:
                        raise RuntimeError(f"{code} {text!r}")
                    with lock:
                        latencies.append(took)
        except Exception as e:  # report, do not hide
            errors.append(repr(e))

    threads = [threading.Thread(target=session, args=(n,)) for n in per]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if errors:
        print(f"  errors: {errors[:3]}", file=sys.stderr)
    return elapsed, latencies


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU of *pid*, and of its live descendants (the
    verifier workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    own, workers, todo = 0.0, 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            used = (int(fields[11]) + int(fields[12])) / tick
            if p == pid:
                own += used
            else:
                workers += used
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return own, workers


class Appliance:
    """One twistd with one sender_auth setting, and its rounds' figures."""

    def __init__(self, work: Path, sender_auth: str, dns: DnsServer, processes: int | None, profile_workers: bool,
                 code: Path = ROOT, label: str = "", profile: bool = True):
        self.sender_auth = sender_auth
        self.label = label or sender_auth
        self.directory = work / self.label.replace("@", "-at-")
        self.directory.mkdir()
        self.port = free_port()
        config = site_ini(self.directory, self.port, sender_auth, dns.address, processes)
        self.profile = self.directory / "reactor.prof"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)
        if profile_workers:  # cProfile in the workers too (it slows them down)
            env["PHASERLINK_VERIFIER_PROFILE"] = str(self.directory)
        self.profiled = profile
        profiling = [f"--profile={self.profile}", "--profiler=cprofile", "--savestats"] if profile else []
        self.proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "--logfile", str(self.directory / "twistd.log"), *profiling,
             "phaserlink", "--config", str(config)], cwd=self.directory,
            stdout=(self.directory / "twistd.out").open("wb"), stderr=subprocess.STDOUT, env=env)
        self.rates: list[float] = []
        self.p50s: list[float] = []
        self.p99s: list[float] = []
        self.cpu: list[float] = []  # CPU ms per message, appliance and its workers
        self.worker_cpu: list[float] = []  # of that, in the verifier workers

    def round(self, message: bytes, count: int) -> None:
        own0, workers0 = cpu_seconds(self.proc.pid)
        elapsed, lat = run_load(self.port, message, count)
        own1, workers1 = cpu_seconds(self.proc.pid)
        n = max(1, len(lat))
        self.cpu.append((own1 - own0 + workers1 - workers0) * 1000 / n)
        self.worker_cpu.append((workers1 - workers0) * 1000 / n)
        lat.sort()
        self.rates.append(len(lat) / elapsed)
        self.p50s.append(lat[len(lat) // 2] * 1000)
        self.p99s.append(lat[int(len(lat) * 0.99)] * 1000)
        print(f"  round {len(self.rates)}: {self.label:14} {self.rates[-1]:7.1f} msg/s  "
              f"end of DATA -> 250: p50 {self.p50s[-1]:6.1f} ms  p99 {self.p99s[-1]:6.1f} ms  "
              f"CPU {self.cpu[-1]:5.2f} ms/msg ({self.worker_cpu[-1]:4.2f} in workers)  (load average {os.getloadavg()[0]:.1f})", flush=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def summary(self):
        if not self.profiled:
            return (statistics.median(self.rates), statistics.median(self.p50s), statistics.median(self.p99s),
                    statistics.median(self.cpu), float("nan"), float("nan"))
        stats = pstats.Stats(str(self.profile))
        in_dns = sum(tt for (file, _line, _name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items()
                     if any(m in file for m in DNS_MODULES))
        return (statistics.median(self.rates), statistics.median(self.p50s), statistics.median(self.p99s),
                statistics.median(self.cpu), stats.total_tt, in_dns)


def code_dir(work: Path, code: str) -> Path:
    """A commit of this repository, extracted (as bench/auth_flood.py does)."""
    target = work / "code"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", code], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def measure(work: Path, dns: DnsServer, message: bytes, count: int, rounds: int, processes: list[int],
            profile_workers: bool = False, old: str | None = None, profile: bool = True):
    """All appliances run at once (both settings, of this checkout and of
    the commit *old*, and dmarc with each further verify_processes value);
    their rounds alternate, so a change in the shared machine's load hits
    each alike."""
    appliances = [Appliance(work, auth, dns, processes[0], profile_workers, profile=profile)
                  for auth in ("none", "dmarc")]
    appliances += [Appliance(work, "dmarc", dns, n, False, label=f"dmarc/p{n}", profile=profile)
                   for n in processes[1:]]
    if old is not None:
        code = code_dir(work, old)
        appliances += [Appliance(work, auth, dns, None, False, code, f"{auth}@{old}", profile) for auth in ("none", "dmarc")]
    try:
        for a in appliances:
            wait_for_port(a.port, timeout=30)
            run_load(a.port, message, 100)  # warm-up (imports, thread pools, workers, DNS cache)
        for _ in range(rounds):
            for a in appliances:
                a.round(message, count)
    finally:
        for a in appliances:
            a.stop()
    return {a.label: a.summary() for a in appliances}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ttl", type=int, default=300, help="TTL of the DNS answers (0: no caching)")
    parser.add_argument("--verify-processes", default="1",
                        help="the appliance's verify_processes (0: verify in its lookup threads); "
                             "N,M,...: also dmarc with M... (labelled dmarc/pM), in the same rounds")
    parser.add_argument("--profile-workers", action="store_true",
                        help="also cProfile the verifier workers (slower; prints their top functions)")
    parser.add_argument("--no-profile", action="store_true",
                        help="run twistd without cProfile (which slows the reactor thread down)")
    parser.add_argument("--code", metavar="COMMIT",
                        help="also measure this commit of the repository, in the same alternating rounds")
    args = parser.parse_args()
    processes = [int(n) for n in args.verify_processes.split(",")]
    count, rounds = (400, 1) if args.quick else (2000, 3)
    work = Path(tempfile.mkdtemp(prefix="phaserlink-bench-auth-"))
    key, txt = dkim_key(work, "bench")
    dns = DnsServer(work)
    dns.extra_args = [f"--local-ttl={args.ttl}"]
    dns.add_txt("sel._domainkey.good.test", txt)
    dns.add_txt("good.test", "v=spf1 -all")
    dns.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    dns.start()
    message = signed_message(key)
    try:
        results = measure(work, dns, message, count, rounds, processes, args.profile_workers, args.code,
                          not args.no_profile)
    finally:
        dns.stop()
    print(f"\n{count} DKIM-signed messages of {len(message)} bytes over {SESSIONS} sessions, "
          f"DNS TTL {args.ttl} s, verify_processes = {processes[0]}, median of {rounds} round(s), "
          f"load average at the end {os.getloadavg()[0]:.1f}:")
    for label, (rate, p50, p99, cpu, total, in_dns) in results.items():
        profiled = "" if args.no_profile else \
            f"   reactor thread profile: {total:6.1f} s (wall), {in_dns * 1000:6.1f} ms of it in DNS code"
        print(f"  {label:14}  {rate:7.1f} msg/s   end of DATA -> 250 p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
              f"   CPU {cpu:5.2f} ms/msg{profiled}")
    for suffix in ("", f"@{args.code}") if args.code else ("",):
        none, dmarc = results["none" + suffix], results["dmarc" + suffix]
        print(f"  {'this checkout' if not suffix else args.code}: rate with verification / without: "
              f"{dmarc[0] / none[0]:.2f}x; added latency (p50): {dmarc[1] - none[1]:.1f} ms; "
              f"added CPU: {dmarc[3] - none[3]:.2f} ms/msg")
    for n in processes[1:]:
        none, dmarc = results["none"], results[f"dmarc/p{n}"]
        print(f"  verify_processes = {n}: rate with verification / without: {dmarc[0] / none[0]:.2f}x; "
              f"added latency (p50): {dmarc[1] - none[1]:.1f} ms")
    if args.profile_workers:
        for prof in sorted((work / "dmarc").glob("verifier-*.prof")):
            print(f"\nverifier worker profile ({prof}), by own time:")
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())

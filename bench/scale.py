"""One appliance at site scale: 500 printers, 1,000 SMTP sessions, 10,000 queued jobs.

    python3 bench/scale.py --quick    # 50 printers, 100 sessions, 500 jobs (about a minute)
    python3 bench/scale.py            # 500 printers, 1,000 sessions, 10,000 jobs (a few minutes)

The appliance runs as a user runs it (``twistd -n phaserlink``, log in
/dev/shm as under journald) with its file limit at the common default of
1,024 (soft; the hard limit above it), as systemd starts a service.

- Half the printers are ``socket://`` to one fast raw-socket sink (a
  process of its own, started here: it reads each job to EOF, notes the
  job's marker, then closes, so the appliance sees the printer's clean
  close), half are ``file:`` folders.  Every printer takes PostScript, has
  ``sender_auth = none`` and ``notify = none`` (no DNS, no status mail).
- Phase 1, printers down: the sink is not listening; ``--jobs`` jobs are
  sent over SMTP (20 sessions) to the socket printers and wait in their
  spools (``pending-held``, printer-stopped).
- Phase 2, start-up: the appliance is stopped and started again on that
  spool; start-up is the time from the process start until SMTP answers and
  until every printer logged its resumed jobs.
- Phase 3, drain: the sink starts listening; drain rate = jobs / seconds
  from the first to the last job at the sink (and from the sink's start,
  which includes the dispatchers' back-off wait).
- Phase 4, sessions: ``--sessions`` SMTP sessions opened and held (EHLO
  done); one more must get ``421``.  20 of them send 5 KB job messages as
  fast as they can (their own process), one sends a probe job every
  ``--probe-gap`` seconds to an idle ``file:`` printer; the probe's latency
  is from its 250 to its file in the printer's folder.
- Then all sessions close and the queues drain.

Every job carries a unique marker in its print data; at the end the
markers at the sink and in the folders are counted against the markers
that got a 250: lost and printed-twice are reported.  File descriptors of
twistd (``/proc/PID/fd``): idle (after start-up and the drain), peak
(sampled every 0.2 s while the sessions are open), after (sessions closed,
queues empty).  Peak RSS is VmHWM of each appliance process.  Prints a
table; asserts nothing.  Needs nothing but Python and loopback.

Set ``PHASERLINK_PROFILE=FILE`` to run the appliance under cProfile
(``twistd --profile FILE --profiler cprofile --savestats``); the second
(restarted) process writes FILE.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import vm_hwm_kb  # noqa: E402

TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
# The same, with the collector's pauses over 5 ms noted in $SCALE_GC_LOG
# (generation and milliseconds): a pause stops the reactor, so it is what a
# probe's p99 is made of when nothing else is.
GC_NOTE = """
import gc, os, time
_gc_log = open(os.environ["SCALE_GC_LOG"], "a", buffering=1)
_gc_start = [0.0]
def _gc_note(phase, info):
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        ms = (time.perf_counter() - _gc_start[0]) * 1000
        if ms > 5:
            _gc_log.write(f"{info['generation']} {ms:.1f}\\n")
gc.callbacks.append(_gc_note)
if os.environ.get("SCALE_DURABLE_THREADS"):  # experiments: a wider durable pool
    import phaserlink.threads as _threads
    _threads.DURABLE_THREADS = int(os.environ["SCALE_DURABLE_THREADS"])
if os.environ.get("SCALE_INFLOW_BACKLOG"):  # experiments: inflow control's bound (before the server is imported)
    import phaserlink.limits as _limits
    _limits.INFLOW_DURABLE_BACKLOG = int(os.environ["SCALE_INFLOW_BACKLOG"])
if os.environ.get("SCALE_INFLOW_TICK"):  # experiments: how often held sessions are looked at, seconds
    import phaserlink.limits as _limits
    _limits.INFLOW_TICK = float(os.environ["SCALE_INFLOW_TICK"])
if os.environ.get("SCALE_GC_THRESHOLD"):  # experiments: the collector's thresholds, "g0,g1,g2"
    gc.set_threshold(*(int(x) for x in os.environ["SCALE_GC_THRESHOLD"].split(",")))
if os.environ.get("SCALE_SWITCH_INTERVAL"):  # experiments: the GIL's switch interval, seconds
    import sys as _sys
    _sys.setswitchinterval(float(os.environ["SCALE_SWITCH_INTERVAL"]))
if os.environ.get("SCALE_STATS"):
    # Per second: each pool's tasks, mean and longest wait in its queue,
    # mean run time; the reactor's longest lateness for a 10 ms timer.
    import json, threading
    import phaserlink.threads as _threads
    from twisted.internet import reactor as _reactor
    _stats, _lag = {}, [0.0]
    _orig_run = _threads.WorkPools.run
    def _run(self, name, f, *a, **k):
        if not self._threaded or self._stopping:
            return _orig_run(self, name, f, *a, **k)
        queued = time.perf_counter()
        def timed(*a, **k):
            began = time.perf_counter()
            prof = _thread_profile()
            if prof is not None:
                prof.enable()
            try:
                return f(*a, **k)
            finally:
                if prof is not None:
                    prof.disable()
                    _maybe_dump(prof)
                s = _stats.setdefault(name, [0, 0.0, 0.0, 0.0])
                s[0] += 1; s[1] += began - queued; s[2] += time.perf_counter() - began
                s[3] = max(s[3], began - queued)
        return _orig_run(self, name, timed, *a, **k)
    _threads.WorkPools.run = _run
    _local = threading.local()
    def _thread_profile():
        if not os.environ.get("SCALE_THREAD_PROFILE"):
            return None
        prof = getattr(_local, "prof", None)
        if prof is None:
            import cProfile
            prof = _local.prof = cProfile.Profile()
            _local.dumped = time.monotonic()
        return prof
    def _maybe_dump(prof):
        if time.monotonic() - _local.dumped > 3:
            _local.dumped = time.monotonic()
            prof.dump_stats(os.path.join(os.environ["SCALE_THREAD_PROFILE"],
                                         f"{threading.current_thread().name}.pstats"))
    _out = open(os.environ["SCALE_STATS"], "a", buffering=1)
    def _tick(expected):
        now = time.perf_counter()
        _lag[0] = max(_lag[0], now - expected)
        _reactor.callLater(0.01, _tick, time.perf_counter() + 0.01)
    def _dump():
        while True:
            time.sleep(1)
            snap = {k: v[:] for k, v in _stats.items()}
            _stats.clear()
            lag, _lag[0] = _lag[0], 0.0
            _out.write(json.dumps({"t": time.monotonic(), "lag": lag, "pools": snap}) + "\\n")
            if os.environ.get("SCALE_CENSUS") and int(time.monotonic()) % 15 == 0:
                from collections import Counter
                objects = gc.get_objects()
                top = Counter(type(o).__name__ for o in objects).most_common(12)
                with open(os.environ["SCALE_CENSUS"], "a") as census:
                    census.write(f"{time.monotonic():.0f} tracked={len(objects)} frozen={gc.get_freeze_count()} "
                                 f"{top}\\n")
                del objects
    _reactor.callWhenRunning(_tick, time.perf_counter())
    threading.Thread(target=_dump, daemon=True).start()
"""
TWISTD_GC = [sys.executable, "-c", GC_NOTE + "import sys; from twisted.scripts.twistd import run; "
             "sys.argv[0] = 'twistd'; run()"]
DOMAIN = "scale.test"
MARK = re.compile(rb"PLMARK-[A-Za-z0-9-]+")
NOFILE_SOFT = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_message(printer: str, marker: str, size: int = 0) -> bytes:
    """A single-part PostScript job mail (CRLF, dot-stuffing not needed:
    no line starts with a dot) whose print data carries *marker*."""
    body = (f"%!PS-Adobe-3.0\n% {marker}\n/Helvetica findfont 12 scalefont setfont\n").encode()
    filler = b"% scale bench filler line, a comment the printer skips ......\n"
    while len(body) < size:
        body += filler
    body += b"72 72 moveto (scale) show showpage\n%%EOF\n"
    head = (f"From: bench@client.test\nTo: {printer}@{DOMAIN}\nSubject: {marker}\n"
            f"Message-ID: <{marker}@client.test>\nMIME-Version: 1.0\nContent-Type: application/postscript\n\n").encode()
    return (head + body).replace(b"\n", b"\r\n")


class Session:
    """A blocking SMTP session (EHLO done)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()
        if self.greeting.startswith(b"220"):
            self.command(b"EHLO client.test")

    def reply(self) -> bytes:
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if line[3:4] != b"-":
                return line

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def send(self, printer: str, message: bytes) -> bytes:
        """MAIL, RCPT, DATA pipelined in one write; return the DATA reply.
        ``self.took``: seconds from the MAIL write to that reply (what the
        client waits for its 250, flow control's delay included)."""
        began = time.monotonic()
        self.sock.sendall(b"MAIL FROM:<bench@client.test>\r\nRCPT TO:<" + f"{printer}@{DOMAIN}".encode()
                          + b">\r\nDATA\r\n")
        for _ in range(3):
            r = self.reply()
            if not r.startswith((b"2", b"3")):
                raise RuntimeError(f"server said {r!r}")
        self.sock.sendall(message + b".\r\n")
        r = self.reply()
        if not r.startswith(b"250"):
            raise RuntimeError(f"server said {r!r} after DATA")
        self.took = time.monotonic() - began
        return r

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- the sink and the blasters run as processes of their own -----------------------------

def run_sink(port: int, out: Path) -> None:
    """Raw-socket printer sink: read to EOF, note the markers, close."""
    import asyncio

    log = open(out, "ab", buffering=0)

    async def job(reader, writer):
        data = bytearray()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
        marks = MARK.findall(bytes(data)) or [b"NOMARK"]
        now = f" {time.monotonic():.4f}\n".encode()  # CLOCK_MONOTONIC: the same clock as the bench's
        log.write(b"".join(m + now for m in marks))
        writer.close()

    async def main():
        server = await asyncio.start_server(job, "127.0.0.1", port, backlog=1024)
        print("listening", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def run_blast(port: int, sessions: int, printers: list[str], out: Path, stop: Path, size: int) -> None:
    """*sessions* sessions, each sending *size* jobs in a loop until *stop*
    exists; every marker that got its 250 is written to *out*."""
    log = open(out, "a", buffering=1)
    took_log = open(str(out) + ".took", "a", buffering=1)  # MAIL-to-250 seconds, one a line
    lock = threading.Lock()
    ready = threading.Barrier(sessions + 1)
    errors: list[str] = []

    def one(i: int) -> None:
        s = Session(port)
        ready.wait()
        n = 0
        while not stop.exists():
            printer = printers[(i * 7919 + n) % len(printers)]
            marker = f"PLMARK-b{i}-{n}-{secrets.token_hex(3)}"
            try:
                s.send(printer, job_message(printer, marker, size))
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                errors.append(str(e))
                break
            with lock:
                log.write(marker + "\n")
                took_log.write(f"{s.took:.4f}\n")
            n += 1
        s.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    ready.wait()
    print("connected", flush=True)
    for t in threads:
        t.join()
    if errors:
        print(f"blast errors: {errors[:3]}", flush=True)


# -- the appliance ------------------------------------------------------------------------

class App:
    def __init__(self, work: Path, printers: int, sessions: int, sink_port: int, in_flow_delay: str = "0"):
        self.work = work
        self.dir = work / "appliance"
        self.dir.mkdir()
        self.log_dir = Path(tempfile.mkdtemp(prefix="phaserlink-scale-log-", dir="/dev/shm"))
        self.smtp_port, self.pop3_port = free_port(), free_port()
        self.socket_printers = [f"p{i:03d}" for i in range(printers // 2)]
        self.file_printers = [f"p{i:03d}" for i in range(printers // 2, printers)]
        self.out = work / "printed"
        sections = []
        for name in self.socket_printers + self.file_printers:
            output = f"socket://127.0.0.1:{sink_port}" if name in self.socket_printers else f"file:{self.out / name}"
            sections.append(f"[printer:{name}]\naddresses = {name}@{DOMAIN}\noutput = {output}\n"
                            "sender_auth = none\nallowed_senders = *\nformats = postscript\nnotify = none\n")
        (self.dir / "site.ini").write_text(
            f"[appliance]\nhostname = {DOMAIN}\nspool = {self.dir / 'var'}\n"
            f"smtp_listen = tcp:{self.smtp_port}:interface=127.0.0.1:backlog=1024\n"
            f"pop3_listen = tcp:{self.pop3_port}:interface=127.0.0.1\n"
            f"max_sessions = {sessions}\nsmtp_timeout = 30m\nin_flow_delay = {in_flow_delay}\n\n" + "\n".join(sections))
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.runs = 0

    @property
    def gc_log(self) -> Path:
        return self.log_dir / "gc.log"

    def gc_pauses(self) -> list[tuple[int, float]]:
        """(generation, ms) of the collector's pauses over 5 ms so far."""
        if not self.gc_log.exists():
            return []
        return [(int(g), float(ms)) for g, ms, *_ in (line.split() for line in self.gc_log.read_text().splitlines())]

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"twistd-{self.runs}.log"

    def start(self, profile: str | None = None) -> tuple[float, float]:
        """Start twistd; return (seconds until SMTP answers, until every printer resumed)."""
        self.runs += 1
        extra = ["--profile", profile, "--profiler", "cprofile", "--savestats"] if profile else []

        def limits() -> None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_SOFT, hard))

        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   SCALE_GC_LOG=str(self.gc_log), SCALE_STATS=str(self.log_dir / "stats.jsonl"))
        self.gc_log.unlink(missing_ok=True)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [*TWISTD_GC, "-n", "--pidfile=", "--logfile", str(self.log_path), *extra, "phaserlink",
             "--config", str(self.dir / "site.ini")],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=limits, env=env)
        listening = None
        deadline = self.started_at + 300
        while listening is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("appliance did not start:\n" + self.log_path.read_text(errors="replace")[-4000:])
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=5) as s:
                    if s.makefile("rb").readline().startswith(b"220"):
                        listening = time.monotonic() - self.started_at
            except OSError:
                time.sleep(0.01)
        n = len(self.socket_printers) + len(self.file_printers)
        while True:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            if text.count("resumed from the spool") >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("printers did not all start:\n" + text[-4000:])
            time.sleep(0.02)
        return listening, time.monotonic() - self.started_at

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds (user + system, all threads) the appliance used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def waiting(self) -> int:
        """Jobs in the spools plus messages still in the Maildirs."""
        n = 0
        jobs = self.dir / "var" / "jobs"
        if jobs.exists():
            for printer in jobs.iterdir():
                n += sum(1 for d in printer.iterdir() if d.name != "incoming" and d.is_dir())
        mail = self.dir / "var" / "mail"
        if mail.exists():
            for box in mail.iterdir():
                for sub in ("new", "cur"):
                    if (box / sub).exists():
                        n += sum(1 for _ in (box / sub).iterdir())
        return n


def printed_markers(app: App, sink_log: Path) -> list[bytes]:
    marks = [line.split()[0] for line in sink_log.read_bytes().splitlines()] if sink_log.exists() else []
    if app.out.exists():
        for folder in app.out.iterdir():
            for f in folder.iterdir():
                if not f.name.startswith("."):
                    marks += MARK.findall(f.read_bytes())
    return marks


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def send_many(port: int, targets: list[tuple[str, str]], sessions: int) -> float:
    """Send one job per (printer, marker) over *sessions* sessions; seconds taken."""
    chunks = [targets[i::sessions] for i in range(sessions)]
    errors: list[str] = []

    def one(chunk):
        s = Session(port)
        try:
            for printer, marker in chunk:
                s.send(printer, job_message(printer, marker))
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))
        finally:
            s.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"sending failed: {errors[:3]}")
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 printers, 100 sessions, 500 jobs")
    parser.add_argument("--printers", type=int)
    parser.add_argument("--sessions", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--blasters", type=int, default=20)
    parser.add_argument("--probes", type=int)
    parser.add_argument("--probe-gap", type=float, default=0.25)
    parser.add_argument("--in-flow-delay", default="0",
                        help="the appliance's in_flow_delay (default 0, off; 1s: inflow control, docs/smtp.md)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--sink", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--blast", nargs=5, metavar=("PORT", "N", "PRINTERS", "OUT", "STOP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run_sink(int(args.sink[0]), Path(args.sink[1]))
        return 0
    if args.blast:
        port, n, printers, out, stop = args.blast
        run_blast(int(port), int(n), printers.split(","), Path(out), Path(stop), 5 * 1024)
        return 0
    printers = args.printers or (50 if args.quick else 500)
    sessions = args.sessions or (100 if args.quick else 1000)
    jobs = args.jobs or (500 if args.quick else 10_000)
    probes = args.probes or (40 if args.quick else 200)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the bench holds the client sides
    work = Path(tempfile.mkdtemp(prefix="phaserlink-scale-"))
    sink_port = free_port()
    sink_log = work / "sink.log"
    app = App(work, printers, sessions, sink_port, args.in_flow_delay)
    profile = os.environ.get("PHASERLINK_PROFILE")
    figures: dict[str, str] = {}
    sink = blast = None
    held: list[Session] = []

    def say(key: str, value: str) -> None:
        figures[key] = value
        print(f"{key:48} {value}", flush=True)

    print(f"scale bench: {printers} printers ({len(app.socket_printers)} socket, {len(app.file_printers)} file), "
          f"{sessions} sessions, {jobs} jobs; load average {os.getloadavg()[0]:.2f} at start", flush=True)
    try:
        # -- phase 1: jobs queue while the printers are down -----------------------------
        listening, resumed = app.start()
        say("start-up, empty spool (SMTP / all printers)", f"{listening:.2f} s / {resumed:.2f} s")
        time.sleep(1)
        say("fds, empty spool", f"{app.fds()}")
        targets = [(app.socket_printers[i % len(app.socket_printers)], f"PLMARK-q{i}-{secrets.token_hex(3)}")
                   for i in range(jobs)]
        cpu0 = app.cpu()
        took = send_many(app.smtp_port, targets, 20)
        say("queued jobs sent (20 sessions)", f"{jobs} in {took:.1f} s = {jobs / took:.0f} msg/s")
        spooled = wait_until(lambda: sum(1 for _ in (app.dir / "var" / "jobs").glob("p*/*/state.json")) >= jobs
                             and not any((app.dir / "var" / "mail").glob("*/new/*")) and time.monotonic(),
                             600, "the jobs in the spools", poll=0.5)
        say("all in the spools after", f"{spooled - app.started_at - resumed - took:.1f} s more "
            f"(rss {vm_hwm_kb(app.pid) / 1024:.0f} MB peak)")
        say("CPU per job taken in (SMTP to spool, printer down)", f"{(app.cpu() - cpu0) / jobs * 1000:.1f} ms")
        rss_first = vm_hwm_kb(app.pid)
        app.stop()

        # -- phase 2: start-up with the queued jobs ---------------------------------------
        listening, resumed = app.start(profile)
        say(f"start-up, {jobs} queued (SMTP / all printers)", f"{listening:.2f} s / {resumed:.2f} s")

        # -- phase 3: the printers come back -------------------------------------------------
        # Once every socket printer has failed its first attempt after the
        # start (they are down): then all wait out their back-off together.
        def failed_once() -> bool:
            text = "".join(p.read_text(errors="replace") for p in app.log_dir.glob(app.log_path.name + "*"))
            return len(set(re.findall(r"printer (p\d+): next attempt in", text))) >= len(app.socket_printers)

        wait_until(failed_once, 300, "every socket printer's first attempt", poll=0.2)
        text = "".join(p.read_text(errors="replace") for p in app.log_dir.glob(app.log_path.name + "*"))
        waits = [float(w) for w in re.findall(r"printer p\d+: next attempt in ([0-9.]+)s", text)]
        sink = subprocess.Popen([sys.executable, __file__, "--sink", str(sink_port), str(sink_log)],
                                stdout=subprocess.PIPE, text=True)
        sink.stdout.readline()
        sink_up = time.monotonic()
        cpu0 = app.cpu()

        def at_sink() -> int:
            try:
                return sink_log.stat().st_size and sink_log.read_bytes().count(b"\n")
            except FileNotFoundError:
                return 0

        wait_until(lambda: at_sink() >= jobs, 3600, "every job at the sink", 0.2)
        times = sorted(float(line.split()[1]) for line in sink_log.read_bytes().splitlines())
        first, last = times[0], times[-1]
        say("drain once printers are back", f"{jobs / max(last - first, 1e-6):.0f} jobs/s first-to-last "
            f"({last - first:.1f} s); first job {first - sink_up:.1f} s after the sink started "
            f"(back-off: printers waiting {min(waits):.0f}-{max(waits):.0f} s)")
        tenth = times[len(times) // 10]
        say("drain, the middle 80%", f"{0.8 * jobs / max(times[len(times) * 9 // 10] - tenth, 1e-6):.0f} jobs/s")
        wait_until(lambda: app.waiting() == 0, 300, "the spools to empty")
        cpu_drain = app.cpu() - cpu0
        say("CPU per job drained (spool to printer)", f"{cpu_drain / jobs * 1000:.1f} ms")
        time.sleep(2)
        idle_fds = app.fds()
        say("fds, idle (after drain)", f"{idle_fds}")

        # -- phase 4: many sessions, 20 busy, a probe -----------------------------------------
        t0 = time.monotonic()
        refused = 0
        for _ in range(sessions - args.blasters - 1):
            held.append(Session(app.smtp_port))
        probe_session = Session(app.smtp_port)
        stop_file = work / "stop-blast"
        blast_log = work / "blast.log"
        probe_printer = app.file_printers[-1]
        blast_targets = [p for p in app.socket_printers + app.file_printers if p != probe_printer]
        blast = subprocess.Popen([sys.executable, __file__, "--blast", str(app.smtp_port), str(args.blasters),
                                  ",".join(blast_targets), str(blast_log), str(stop_file)],
                                 stdout=subprocess.PIPE, text=True)
        line = blast.stdout.readline()
        if "connected" not in line:
            raise RuntimeError(f"blasters: {line}")
        opened = time.monotonic() - t0
        extra = Session(app.smtp_port)
        refused = extra.greeting.startswith(b"421")
        extra.close()
        say(f"{sessions} sessions open; session {sessions + 1}", f"opened in {opened:.1f} s; "
            f"{'got 421' if refused else 'NOT refused: ' + extra.greeting.decode(errors='replace').strip()}")
        peak_fds = app.fds()
        sampling = threading.Event()

        def sample() -> None:
            nonlocal peak_fds
            while not sampling.is_set():
                try:
                    peak_fds = max(peak_fds, app.fds())
                except OSError:
                    pass
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        folder = app.out / probe_printer
        latencies = []
        probe_marks = []
        probe_took: list[float] = []
        gc_before = len(app.gc_pauses())
        probe_began = time.monotonic()
        load_began = os.getloadavg()[0]
        cpu0 = app.cpu()
        for n in range(probes):
            marker = f"PLMARK-p{n}-{secrets.token_hex(3)}"
            probe_marks.append(marker)
            before = len(os.listdir(folder)) if folder.exists() else 0
            probe_session.send(probe_printer, job_message(probe_printer, marker))
            accepted = time.monotonic()
            probe_took.append(probe_session.took * 1000)
            wait_until(lambda: folder.exists() and sum(1 for f in os.listdir(folder) if not f.startswith("."))
                       > before, 60, f"probe {n}", poll=0.001)
            latencies.append((time.monotonic() - accepted) * 1000)
            time.sleep(args.probe_gap)
        stop_file.touch()
        pauses = app.gc_pauses()[gc_before:]
        probe_ended = time.monotonic()
        cpu_probe = app.cpu() - cpu0
        blast.wait(120)
        blasted = blast_log.read_text().split() if blast_log.exists() else []
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        say(f"probe 250 -> printed ({probes} probes)", f"p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")
        say("load average (1 min) as the probes began / ended", f"{load_began:.2f} / {os.getloadavg()[0]:.2f}")
        say(f"blasters ({args.blasters} x 5 KB)", f"{len(blasted)} messages during the probes, "
            f"{len(blasted) / (probe_ended - probe_began):.0f} msg/s; CPU "
            f"{cpu_probe / max(len(blasted) + probes, 1) * 1000:.1f} ms per message (SMTP to printed)")
        blast_took_file = Path(str(blast_log) + ".took")
        blast_took = sorted(float(x) * 1000 for x in blast_took_file.read_text().split()) \
            if blast_took_file.exists() else []
        probe_took.sort()
        for who, took in (("probe", probe_took), ("blasters", blast_took)):
            if took:
                say(f"{who} MAIL -> 250", f"p50 {statistics.median(took):.1f} ms, "
                    f"p99 {took[min(len(took) - 1, int(len(took) * 0.99))]:.1f} ms, max {took[-1]:.1f} ms")
        full = [ms for g, ms in pauses if g == 2]
        stats_file = app.log_dir / "stats.jsonl"
        if stats_file.exists():
            import json
            rows = [json.loads(line) for line in stats_file.read_text().splitlines()]
            rows = [r for r in rows if probe_began <= r["t"] <= probe_ended]
            lags = sorted(r["lag"] * 1000 for r in rows)
            if lags:
                say("reactor lateness of a 10 ms timer, per second", f"median {statistics.median(lags):.0f} ms, "
                    f"worst {lags[-1]:.0f} ms")
            for pool in ("durable", "cpu", "lookup"):
                n = sum(r["pools"].get(pool, [0])[0] for r in rows)
                if n:
                    wait = sum(r["pools"][pool][1] for r in rows if pool in r["pools"]) / n * 1000
                    run = sum(r["pools"][pool][2] for r in rows if pool in r["pools"]) / n * 1000
                    worst = max(r["pools"][pool][3] for r in rows if pool in r["pools"]) * 1000
                    say(f"pool {pool} during the probes", f"{n / max(len(rows), 1):.0f} tasks/s, queue wait "
                        f"mean {wait:.1f} ms (worst {worst:.0f} ms), run {run:.2f} ms")
        say("collector pauses > 5 ms during the probes", f"{len(pauses)} ({len(full)} full), longest "
            f"{max((ms for _, ms in pauses), default=0):.0f} ms")
        probe_session.close()
        for s in held:
            s.close()
        held.clear()
        wait_until(lambda: app.waiting() == 0, 600, "the spools to empty after the sessions")
        time.sleep(3)
        sampling.set()
        after_fds = app.fds()
        say("fds idle / peak / after", f"{idle_fds} / {peak_fds} / {after_fds}"
            f" ({'back to idle' if after_fds <= idle_fds else 'LEAK of ' + str(after_fds - idle_fds)})")
        rss = max(rss_first, vm_hwm_kb(app.pid)) / 1024
        say("peak RSS (both processes)", f"{rss:.0f} MB (first {rss_first / 1024:.0f} MB, "
            f"restarted {vm_hwm_kb(app.pid) / 1024:.0f} MB)")

        # -- count every marker -----------------------------------------------------------------
        expected = [m for _, m in targets] + probe_marks + blasted
        got = printed_markers(app, sink_log)
        counts: dict[bytes, int] = {}
        for m in got:
            counts[m] = counts.get(m, 0) + 1
        lost = sum(1 for m in expected if m.encode() not in counts)
        twice = sum(1 for c in counts.values() if c > 1)
        unknown = len(set(counts) - {m.encode() for m in expected})
        say("messages accepted / printed / lost / twice", f"{len(expected)} / {len(got)} / {lost} / {twice}"
            + (f" ({unknown} printed that got no 250 here)" if unknown else ""))
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for s in held:
            s.close()
        if blast and blast.poll() is None:
            blast.kill()
        app.stop()
        if sink:
            sink.kill()
        if args.keep:
            print(f"kept {work} and {app.log_dir}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(app.log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

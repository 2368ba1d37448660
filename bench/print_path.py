"""Printer-side benchmark: from the SMTP 250 to the last byte at a p910nd printer.

    python3 bench/print_path.py           # full run (about 2-3 minutes, 1.5 GB of disk)
    python3 bench/print_path.py --quick   # 20 small jobs, 1 MB and 100 MB only (then 100 MB split)

The appliance runs as a user runs it (``twistd -n phaserlink``) with one
printer ``socket://`` to a real p910nd (raw 9100) on loopback.  Jobs are
built by PhaserLink's own job-message writer (PostScript, base64, as the
client sends them) and sent over SMTP by a small blocking client here, so the
sender's timing is not mixed into the reactor being measured.

Figures:

- latency from the 250 after DATA to the job file complete at the printer,
  for 100 small jobs in a row (median and p99), and jobs per second;
- for 1 MB, 100 MB and 500 MB jobs: print data MB/s from the first byte of
  DATA to the last byte at the printer, and the appliance's peak RSS (VmHWM,
  reset before each job);
- the 500 MB job again as 5 MB message/partial fragments, as a client sends
  it through relays with a 5 MB limit.

Needs root (p910nd's lock directory) and the peers from scripts/install-peers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from phaserlink.message.build import write_job_message  # noqa: E402
from phaserlink.message.partial import split_message  # noqa: E402
from phaserlink.message.wire import DotStuffer  # noqa: E402
from measure import reset_hwm, vm_hwm_kb  # noqa: E402
from support.appliance import Appliance  # noqa: E402
from support.p910nd import P910ndPrinter  # noqa: E402

PRINTER = "bench"
ADDRESS = "bench@phaserlink.test"
CHUNK = 1 << 20


def make_postscript(path: Path, size: int) -> None:
    """A valid PostScript job of about *size* bytes (comment filler)."""
    line = b"% " + b"PhaserLink benchmark filler line " * 2 + b"\n"
    with open(path, "wb") as f:
        f.write(b"%!PS-Adobe-3.0\n/Helvetica findfont 12 scalefont setfont\n")
        block = line * (CHUNK // len(line))
        written = 0
        while written + len(block) < size:
            f.write(block)
            written += len(block)
        f.write(line * max(0, (size - written) // len(line)))
        f.write(b"72 72 moveto (PhaserLink) show showpage\n%%EOF\n")


def make_message(data: Path, out: Path, n: int, recipient: str = ADDRESS) -> None:
    with open(out, "wb") as f:
        write_job_message(f, data, sender="bench@client.test", recipient=recipient, title=f"bench {n}",
                          format="postscript", filename="bench.ps", job_id=f"bench-{n}-{os.getpid()}")


class SMTPSender:
    """A minimal blocking SMTP client for the benchmark (one connection)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")
        self.reply()
        self.command(b"EHLO client.test")

    def reply(self) -> bytes:
        while True:
            line = self.file.readline()
            if line[3:4] != b"-":
                if not line.startswith((b"2", b"3")):
                    raise RuntimeError(f"server said {line!r}")
                return line

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def send(self, message: Path, recipient: str = ADDRESS) -> tuple[float, float]:
        """Send; return (monotonic time DATA started, time of the 250)."""
        self.command(b"MAIL FROM:<bench@client.test>")
        self.command(b"RCPT TO:<" + recipient.encode() + b">")
        self.command(b"DATA")
        started = time.monotonic()
        stuffer = DotStuffer()
        with open(message, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                self.sock.sendall(stuffer.feed(chunk))
        self.sock.sendall(stuffer.finish())
        self.reply()
        return started, time.monotonic()

    def close(self) -> None:
        try:
            self.command(b"QUIT")
        finally:
            self.sock.close()


def wait_for_job(printer: P910ndPrinter, count: int, timeout: float = 600) -> float:
    """Poll (1 ms) until the printer has *count* complete jobs; return when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(printer.out.glob("job-*.data"))) >= count:
            return time.monotonic()
        time.sleep(0.001)
    raise TimeoutError(f"printer has fewer than {count} jobs after {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    small_jobs = 20 if args.quick else 100
    sizes = [1, 100] if args.quick else [1, 100, 500]

    work = Path(tempfile.mkdtemp(prefix="phaserlink-printbench-"))
    (work / "printer").mkdir()
    printer = P910ndPrinter(work / "printer")
    printer.start()
    app = Appliance(work / "appliance")
    app.directory.mkdir()
    app.appliance_extra = "max_message_size = 1G\n"
    app.sections = (
        f"[printer:{PRINTER}]\nsender_auth = none\naddresses = {ADDRESS}\noutput = {printer.uri()}\n"
        "allowed_senders = *\nformats = postscript\nnotify = none\n"
    )
    try:
        app.start()
        pid = app.proc.pid
        data = work / "job.ps"
        message = work / "job.eml"
        make_postscript(data, 4 * 1024)
        sender = SMTPSender(app.smtp_port)
        latencies = []
        begin = time.monotonic()
        for n in range(small_jobs):
            # A new Message-ID each time: the same one again is a redelivery
            # and is (rightly) not printed twice.
            make_message(data, message, n)
            _, accepted = sender.send(message)
            done = wait_for_job(printer, n + 1)
            latencies.append((done - accepted) * 1000)
        elapsed = time.monotonic() - begin
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"{small_jobs} small jobs (4 KB PostScript) in a row: {small_jobs / elapsed:.1f} jobs/s; "
              f"250 -> printer median {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms "
              f"(targets: median < 50 ms, p99 < 250 ms)", flush=True)
        printed = small_jobs
        for mb in sizes:
            make_postscript(data, mb * 1024 * 1024)
            make_message(data, message, 1000 + mb)
            reset_hwm(pid)
            started, accepted = sender.send(message)
            printed += 1
            done = wait_for_job(printer, printed)
            rss = vm_hwm_kb(pid) / 1024
            rate = data.stat().st_size / (done - started) / 1e6
            print(f"{mb:4d} MB job: DATA start -> last byte at printer {done - started:6.2f} s = {rate:6.1f} MB/s "
                  f"of print data (250 after {accepted - started:5.2f} s); appliance peak RSS {rss:5.1f} MB",
                  flush=True)
            for f in printer.out.glob("job-*.data"):
                if f.stat().st_size > 1024 * 1024:
                    f.unlink()
                    printed -= 1
        # The largest job again, as the client sends it through a relay with
        # a 5 MB limit: message/partial fragments, reassembled from disk.
        mb = sizes[-1]
        fragments_dir = work / "fragments"
        fragments_dir.mkdir()
        make_message(data, message, 2000 + mb)
        fragments = split_message(message, 5 * 1024 * 1024, fragments_dir)
        reset_hwm(pid)
        started = time.monotonic()
        for fragment in fragments:
            sender.send(fragment)
        printed += 1
        done = wait_for_job(printer, printed)
        rss = vm_hwm_kb(pid) / 1024
        rate = data.stat().st_size / (done - started) / 1e6
        print(f"{mb:4d} MB job in {len(fragments)} fragments of 5 MB: {done - started:6.2f} s = {rate:6.1f} MB/s; "
              f"appliance peak RSS {rss:5.1f} MB", flush=True)
        sender.close()
        print("targets: 100 MB job >= 20 MB/s; peak RSS < 64 MB at every size")
    finally:
        app.stop()
        printer.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

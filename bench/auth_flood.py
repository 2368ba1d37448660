"""AUTH flood benchmark: does a password-guessing flood slow other senders' 250?

    python3 bench/auth_flood.py                 # this checkout (about 90 s)
    python3 bench/auth_flood.py --code 7dc97fe  # the same run against a commit of this repository

The appliance runs as a user runs it (``twistd -n phaserlink``) on loopback,
with a certificate from a throw-away CA and one ``[user:alice]`` whose
password hash has the real cost (200,000 PBKDF2 rounds, as
``phaserlink-passwd`` makes it).  One probe sender sends 5 KB messages to a
printer mailbox, one after another on one plain connection, and measures
the time from the end of DATA (the ``.`` line sent) to the 250.  Three
phases of ``--seconds`` each:

1. unloaded: the probe alone;
2. flood from one address: 20 attacker sessions on 127.0.0.1, each doing
   STARTTLS and then wrong AUTH PLAIN passwords in a loop, reconnecting
   whenever the server hangs up (the attack of issue 7);
3. flood from many addresses: the same, but every connection comes from a
   fresh source address (127.1.0.0/16, as a botnet would), so no
   per-address limit ever applies;
4. unloaded again, to show how much the machine itself drifted meanwhile.

Attackers run in a separate process (their TLS handshakes and GIL are not
the probe's).  Prints the probe's median, p99 and max per phase, the ratio
to the unloaded median, and what the attackers got (attempts per second,
replies by code).  Loopback only; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from phaserlink.passwords import hash_password  # noqa: E402
from support.appliance import Appliance  # noqa: E402
from support.ca import TestCA  # noqa: E402

PRINTER = "bench"
ADDRESS = f"{PRINTER}@phaserlink.test"
USER, PASSWORD = "alice", "wonderland"
MESSAGE = b"Subject: probe\r\n\r\n" + (b"x" * 70 + b"\r\n") * 70  # about 5 KB


def read_reply(f) -> bytes:
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


# -- the probe -------------------------------------------------------------------


def probe(port: int, seconds: float) -> list[float]:
    """Send messages for *seconds*; return each end-of-DATA-to-250 in ms."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = sock.makefile("rb")
    read_reply(f)
    sock.sendall(b"EHLO probe.test\r\n")
    read_reply(f)
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.sendall(b"MAIL FROM:<probe@client.test>\r\nRCPT TO:<" + ADDRESS.encode() + b">\r\nDATA\r\n")
        for _ in range(3):
            reply = read_reply(f)
            if not reply.startswith((b"250", b"354")):
                raise RuntimeError(f"probe: server said {reply!r}")
        sock.sendall(MESSAGE)
        start = time.perf_counter()
        sock.sendall(b".\r\n")
        reply = read_reply(f)
        latencies.append((time.perf_counter() - start) * 1000)
        if not reply.startswith(b"250"):
            raise RuntimeError(f"probe: server said {reply!r}")
    sock.sendall(b"QUIT\r\n")
    sock.close()
    return latencies


# -- the attackers ----------------------------------------------------------------


def attacker(port: int, ca: str, many: bool, index: int, stop, counts: Counter, lock) -> None:
    """STARTTLS + wrong AUTH PLAIN in a loop, reconnecting when cut off."""
    context = ssl.create_default_context(cafile=ca)
    n = 0
    while not stop.is_set():
        n += 1
        source = None
        if many:  # a fresh 127.1.x.y for every connection
            k = index * 4096 + n % 4096
            source = (f"127.1.{k // 256 % 256}.{k % 256}", 0)
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=source)
            f = sock.makefile("rb")
            read_reply(f)
            sock.sendall(b"EHLO attacker.test\r\n")
            read_reply(f)
            sock.sendall(b"STARTTLS\r\n")
            read_reply(f)
            tls = context.wrap_socket(sock, server_hostname="localhost")
            f = tls.makefile("rb")
            tls.sendall(b"EHLO attacker.test\r\n")
            read_reply(f)
            with lock:
                counts["connections"] += 1
            guess = 0
            while not stop.is_set():
                guess += 1
                token = base64.b64encode(f"\0{USER}\0guess{index}-{n}-{guess}".encode())
                tls.sendall(b"AUTH PLAIN " + token + b"\r\n")
                reply = read_reply(f)
                code = reply[:3].decode()
                if code == "421":
                    code += " (address)" if b"your address" in reply else " (session)"
                with lock:
                    counts["attempts"] += 1
                    counts[code] += 1
                if code.startswith("421"):
                    break
        except (OSError, ssl.SSLError, ConnectionError):
            with lock:
                counts["cut off"] += 1
        finally:
            try:
                sock.close()
            except Exception:
                pass


def attack(port: int, ca: str, many: bool, sessions: int, seconds: float, results) -> None:
    """The attacker process: *sessions* threads for *seconds*."""
    stop = threading.Event()
    counts: Counter = Counter()
    lock = threading.Lock()
    threads = [threading.Thread(target=attacker, args=(port, ca, many, i, stop, counts, lock), daemon=True)
               for i in range(sessions)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(5)
    results.put(dict(counts))


# -- running it ----------------------------------------------------------------------


def figures(label: str, latencies: list[float], base: float | None) -> float:
    latencies = sorted(latencies)
    median = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    ratio = f"  {median / base:5.2f}x unloaded median" if base else ""
    print(f"{label:34} {len(latencies):6d} msgs  250 after end of DATA: median {median:7.1f} ms  "
          f"p99 {p99:7.1f} ms  max {latencies[-1]:7.1f} ms{ratio}", flush=True)
    return median


def code_dir(work: Path, code: str | None) -> Path:
    """The checkout under test: this one, or a commit of it extracted."""
    if code is None:
        return ROOT
    target = work / "code"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", code], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=18.0, help="length of each phase")
    parser.add_argument("--attackers", type=int, default=20, help="attacker sessions")
    parser.add_argument("--code", help="a commit of this repository to measure instead of the checkout")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="phaserlink-authflood-"))
    log_dir = Path(tempfile.mkdtemp(prefix="phaserlink-authflood-log-", dir="/dev/shm"))
    code = code_dir(work, args.code)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    cert = TestCA(work / "ca").issue("localhost")
    app = Appliance(work / "appliance", log_dir=log_dir)
    app.directory.mkdir()
    app.appliance_extra = (f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\n"
                           "max_sessions = 1000\n")
    app.sections = (
        f"[printer:{PRINTER}]\nsender_auth = none\naddresses = {ADDRESS}\noutput = pull\nallowed_senders = *\n\n"
        f"[user:{USER}]\npassword = {hash_password(PASSWORD)}\n"
    )
    print(f"code: {args.code or 'this checkout'} ({code}); {args.attackers} attacker sessions, "
          f"{args.seconds:.0f} s per phase; PBKDF2 200000 rounds", flush=True)
    try:
        app.start()
        probe(app.smtp_port, 1.0)  # warm-up
        base = figures("unloaded", probe(app.smtp_port, args.seconds), None)
        for label, many in (("flood from one address", False), ("flood from many addresses", True)):
            results: multiprocessing.Queue = multiprocessing.Queue()
            proc = multiprocessing.Process(target=attack, args=(app.smtp_port, str(cert.ca), many,
                                                                args.attackers, args.seconds + 2, results))
            proc.start()
            time.sleep(2)  # let the flood get going
            figures(label, probe(app.smtp_port, args.seconds), base)
            counts = results.get(timeout=60)
            proc.join(10)
            attempts = counts.pop("attempts", 0)
            replies = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            print(f"{'':34} attackers: {attempts / (args.seconds + 2):6.1f} AUTH attempts/s ({replies})",
                  flush=True)
        figures("unloaded again", probe(app.smtp_port, args.seconds), base)
    finally:
        app.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory does not grow with the job (docs/README.md, guarantee 6).

A ~200 MB job message (a Thunderbird-style multipart/mixed with a 150 MB
attachment, so the boundary scanner walks all of it) is split into
message/partial fragments, reassembled from shuffled fragments and
extracted, in a fresh subprocess; the peak RSS growth over the run must stay
far below the job size.  A parser that held the message even once would
grow by 200 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DATA_MB = 150
MAX_GROWTH_MB = 30

SCRIPT = textwrap.dedent(
    """
    import base64, hashlib, json, os, random, resource, sys, time
    from pathlib import Path
    from phaserlink.message.partial import split_message, reassemble
    from phaserlink.message.extract import extract_documents

    tmp = Path(sys.argv[1]); size = int(sys.argv[2]) << 20
    def rss_mb():
        # VmHWM: this process image's peak RSS (ru_maxrss would carry the
        # forking pytest's peak across exec and hide growth below it)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = rss_mb()
    src_hash = hashlib.sha256()
    msg = tmp / "job.eml"
    with open(msg, "wb") as f:
        f.write(b'From: a@example.org\\nTo: lp@print.example\\nSubject: big\\nMIME-Version: 1.0\\n'
                b'Content-Type: multipart/mixed; boundary="------------BiG"\\n\\n'
                b'--------------BiG\\nContent-Type: text/plain\\n\\nplease print\\n'
                b'--------------BiG\\nContent-Type: application/octet-stream\\n'
                b'Content-Disposition: attachment; filename="big.pdf"\\n'
                b'Content-Transfer-Encoding: base64\\n\\n')
        left = size
        first = True
        rnd = random.Random(1)
        block = bytes(rnd.getrandbits(8) for _ in range(57 * 1024))
        n = 0
        while left > 0:
            chunk = (b"%PDF-1.4\\n" + block[9:]) if first else block[:min(len(block), left)]
            chunk = chunk[:left]
            first = False
            chunk = bytes([n % 251]) + chunk[1:] if n else chunk
            n += 1
            src_hash.update(chunk)
            f.write(base64.encodebytes(chunk))
            left -= len(chunk)
        f.write(b"--------------BiG--\\n")
    t0 = time.monotonic()
    (tmp / "frags").mkdir()
    frags = split_message(msg, 50 << 20, tmp / "frags")
    t1 = time.monotonic()
    msg_size = msg.stat().st_size
    msg.unlink()
    random.Random(2).shuffle(frags)
    whole = tmp / "whole.eml"
    reassemble(frags, whole)
    t2 = time.monotonic()
    for p in frags:
        p.unlink()
    (tmp / "out").mkdir()
    docs = extract_documents(whole, tmp / "out")
    t3 = time.monotonic()
    out_hash = hashlib.sha256()
    with open(docs[0].path, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""):
            out_hash.update(c)
    print(json.dumps(dict(
        base=base, peak=rss_mb(), fragments=len(frags), message=msg_size,
        docs=[(d.format, d.size) for d in docs], same=out_hash.digest() == src_hash.digest(),
        split=t1 - t0, reassemble=t2 - t1, extract=t3 - t2,
    )))
    """
)


@pytest.mark.timeout(120)
def test_200mb_job_streams_with_flat_memory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(DATA_MB)],
        capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    print(r)
    assert r["same"], "extracted document differs from the original data"
    assert r["docs"] == [["pdf", DATA_MB << 20]]
    assert r["fragments"] == 5 and r["message"] > 200 << 20
    growth = r["peak"] - r["base"]
    assert growth < MAX_GROWTH_MB, f"peak RSS grew by {growth:.0f} MB for a {r['message'] >> 20} MB job"


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _verifier_workers(pid: int) -> list[int]:
    """The sender verification's worker processes among *pid*'s children."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        for child in map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split()):
            if b"phaserlink.trust.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


@pytest.mark.timeout(120)
@pytest.mark.parametrize("verify_processes", [1, 0])
def test_the_appliance_takes_a_large_mail_without_holding_it_in_memory(appliance, tmp_path: Path,
                                                                       verify_processes: int) -> None:
    """A mail of 80 MB (20 phone photos are more) gets its 250 and prints
    while neither twistd's peak RSS nor the verifier worker's grows by
    anything like the mail: sender verification reads the header block,
    not the body, and stamps its Authentication-Results in front of the
    body by moving it in pieces."""
    import base64
    import hashlib
    import smtplib
    import time

    printed = tmp_path / "printed"
    printed.mkdir()
    appliance.appliance_extra = f"max_message_size = 200M\nverify_processes = {verify_processes}\n"
    appliance.sections = (f"[printer:big]\naddresses = big@phaserlink.test\noutput = file:{printed}\n"
                          "allowed_senders = *\nsender_auth = none\nformats = pdf\nnotify = none\n")
    appliance.start()
    pid = appliance.proc.pid
    pdf = bytearray(b"%PDF-1.4\n1 0 obj<</Type /Catalog /Pages 2 0 R>>endobj\n"
                    b"2 0 obj<</Type /Pages /Kids [3 0 R] /Count 1>>endobj\n"
                    b"3 0 obj<</Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]>>endobj\n")
    line = b"%" + b"x" * 1022 + b"\n"
    while len(pdf) < 60 << 20:
        pdf += line
    pdf += b"trailer<</Root 1 0 R>>\n%%EOF\n"
    boundary = "=_big"

    def mail(data: bytes, n: int) -> bytes:
        return (f"From: a@client.test\r\nTo: big@phaserlink.test\r\nSubject: big\r\nMessage-ID: <big{n}@client.test>\r\n"
                f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
                f"--{boundary}\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment; filename=\"big.pdf\"\r\n\r\n").encode() \
            + base64.encodebytes(data).replace(b"\n", b"\r\n") + f"--{boundary}--\r\n".encode()

    def printed_files() -> list[Path]:
        return sorted(p for p in printed.iterdir() if not p.name.startswith("."))

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(printed_files()) < count and time.monotonic() < deadline:
            time.sleep(0.1)

    big = mail(bytes(pdf), 2)
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port) as smtp:
        smtp.sendmail("a@client.test", ["big@phaserlink.test"], mail(bytes(pdf[:4096]) + b"%%EOF\n", 1))
        wait_for(1)  # the verifier worker is running now (it starts with the first mail)
        processes = [pid, *_verifier_workers(pid)]
        assert len(processes) == 1 + verify_processes
        for p in processes:
            Path(f"/proc/{p}/clear_refs").write_text("5")  # a new high-water mark from here
        base = {p: _vm_hwm_mb(p) for p in processes}
        smtp.sendmail("a@client.test", ["big@phaserlink.test"], big)
        grown = {p: _vm_hwm_mb(p) - base[p] for p in processes}
    wait_for(2)
    job = printed_files()[-1]
    assert hashlib.sha256(job.read_bytes()).digest() == hashlib.sha256(pdf).digest()
    for p, mb in grown.items():
        who = "twistd" if p == pid else "the verifier worker"
        assert mb < MAX_GROWTH_MB, f"{who}'s peak RSS grew by {mb:.0f} MB for a {len(big) >> 20} MB mail"

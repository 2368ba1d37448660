"""IPP throughput: a large PDF streamed to a real ippeveprinter by IPPOutput.

    python3 bench/ipp_throughput.py              # 100 MB, three runs
    python3 bench/ipp_throughput.py --mb 500 --runs 1

Starts ippeveprinter (cups-ipp-utils, with a private dbus-daemon, as the
tests do), sends a PDF of --mb megabytes (a one-page PDF padded with a
comment) with Create-Job + Send-Document, and waits for the printer to
report the job completed.  Prints MB/s from the first request to
`completed`, and this process's peak RSS (the output streams from disk, so
it should not grow with --mb).  Loopback only; not a test.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def make_pdf(path: Path, size: int) -> None:
    head = (b"%PDF-1.4\n1 0 obj<</Type /Catalog /Pages 2 0 R>>endobj\n"
            b"2 0 obj<</Type /Pages /Kids [3 0 R] /Count 1>>endobj\n"
            b"3 0 obj<</Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]>>endobj\n")
    tail = b"\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    line = b"%" + b"x" * 1022 + b"\n"
    with open(path, "wb") as f:
        f.write(head)
        left = size - len(head) - len(tail)
        while left > 0:
            f.write(line[:left] if left < len(line) else line)
            left -= len(line)
        f.write(tail)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from twisted.internet import defer, task

    from phaserlink.printer.output import OutputJob, make_output
    from support.ippeveprinter import IppEvePrinter

    work = Path(tempfile.mkdtemp(prefix="ipp-bench-"))
    doc = work / "big.pdf"
    make_pdf(doc, args.mb * 1024 * 1024)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    printer = IppEvePrinter(work / "printer").start()

    async def run(reactor):
        out = make_output(printer.uri, reactor=reactor)
        out.poll_interval = 0.05
        for n in range(args.runs):
            job = OutputJob(path=doc, job_id=f"bench-{n}", title="bench", user="bench", host="bench",
                            format="application/pdf")
            start = time.monotonic()
            result = await out.send(job)
            took = time.monotonic() - start
            print(f"run {n + 1}: {args.mb} MB in {took:.2f} s = {args.mb / took:.1f} MB/s ({result.acknowledged})")

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit:
        pass
    finally:
        printer.close()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"peak RSS of this process: {rss / 1024:.1f} MB (before the printer started: {rss_before / 1024:.1f} MB)")
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

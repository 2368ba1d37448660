"""Printer outputs against real printers on loopback: LPRng lpd and p910nd
(see tests/support/lpd.py, p910nd.py), a tiny PJL printer, and Ghostscript
rendering what the printer received."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import protocol, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from phaserlink.printer.output import (
    OutputJob,
    PrinterRejected,
    PrinterUnavailable,
    make_output,
)
from phaserlink.printer.output.interfaces import REASON_NOT_FOUND, REASON_TIMED_OUT
from support.lpd import LPRngServer
from support.p910nd import P910ndPrinter
from support.peers import require_program

pytestmark = pytest.mark.peer

MB = 1024 * 1024
SHORT_TIMEOUT = 1.0  # for hung-printer tests: the real defaults are minutes
MARKER = "PHASERLINK-MARKER-7731"
POSTSCRIPT = f"""%!PS-Adobe-3.0
/Helvetica findfont 24 scalefont setfont
72 720 moveto ({MARKER}) show
showpage
""".encode()


def reactor():
    from twisted.internet import reactor as r
    return r


async def wait_for_jobs(printer, count: int, timeout: float = 15.0) -> list[Path]:
    """printer.wait_for_jobs without blocking the reactor."""
    deadline = time.monotonic() + timeout
    while len(printer.jobs()) < count and time.monotonic() < deadline:
        await task.deferLater(reactor(), 0.02, lambda: None)
    return printer.jobs()


def write_binary(path: Path, size: int) -> Path:
    """Every byte value, in a pattern that shifts (no 256-byte period),
    written in 1 MB pieces."""
    block = bytes(range(256)) * 4096 + bytes(range(255, -1, -1)) * 4 + b"\x00\r\n.\r\n"
    with open(path, "wb") as f:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            left -= len(piece)
    return path


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MB):
            h.update(chunk)
    return h.hexdigest()


def job(path: Path, **kw) -> OutputJob:
    fields = dict(path=path, job_id="t-1", title="Monthly figures", user="alice",
                  host="client.example", copies=1, format="application/postscript")
    fields.update(kw)
    return OutputJob(**fields)


@pytest.fixture(scope="module")
def lpd():
    server = LPRngServer(queues=("raw",)).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def p910nd():
    printer = P910ndPrinter().start()
    yield printer
    printer.cleanup()


@pytest.fixture
def files(tmp_path):
    return {
        "small": write_binary(tmp_path / "small.bin", 5 * 1024),
        "big": write_binary(tmp_path / "big.bin", 20 * MB),
    }


# --- LPRng lpd --------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "big"])
@pytest_twisted.ensureDeferred
async def test_lpd_receives_byte_identical_job(lpd, files, size):
    lpd.clear_jobs()
    result = await make_output(lpd.uri(), reactor=reactor()).send(job(files[size]))
    assert re.fullmatch(r"spooled at lpd queue raw on 127\.0\.0\.1:\d+ as job \d{3}",
                        result.acknowledged)
    # As root, 'auto' binds a privileged source port (or falls back when all
    # eleven are in TIME_WAIT from earlier jobs).
    assert re.search(r"from local port \d+", result.detail)
    [captured] = await wait_for_jobs(lpd, 1)
    assert captured.stat().st_size == files[size].stat().st_size
    assert sha256(captured) == sha256(files[size])
    args = lpd.job_args(captured)
    assert (args["-n"], args["-H"], args["-J"]) == ("alice", "client.example", "Monthly figures")
    assert args["-j"] == result.acknowledged[-3:]


@pytest_twisted.ensureDeferred
async def test_lpd_copies_run_the_filter_once_per_copy(lpd, files):
    """LPRng prints each 'l' line separately: two copies = the filter runs
    twice, each time with the whole, unchanged data."""
    lpd.clear_jobs()
    await make_output(lpd.uri(), reactor=reactor()).send(job(files["small"], copies=2))
    captured = await wait_for_jobs(lpd, 2)
    assert len(captured) == 2
    assert [p.read_bytes() for p in captured] == [files["small"].read_bytes()] * 2


@pytest_twisted.ensureDeferred
async def test_lpd_unknown_queue_is_rejected_with_lprngs_text(lpd, files):
    with pytest.raises(PrinterRejected) as caught:
        await make_output(lpd.uri("nosuch"), reactor=reactor()).send(job(files["small"]))
    assert "spool queue for 'nosuch' does not exist" in caught.value.reason
    assert caught.value.ipp_reason == REASON_NOT_FOUND


@pytest_twisted.ensureDeferred
async def test_lpd_offline_and_hung():
    server = LPRngServer()
    try:
        server.start()
        server.stop()  # offline: refused
        data = write_binary(server.base / "job.bin", 1000)
        out = make_output(server.uri(), reactor=reactor(), timeout=SHORT_TIMEOUT)
        started = time.monotonic()
        with pytest.raises(PrinterUnavailable, match="connection refused"):
            await out.send(job(data))
        assert time.monotonic() - started < SHORT_TIMEOUT
        server.start()
        server.pause()  # hung: the connect completes, no ack ever comes
        with pytest.raises(PrinterUnavailable) as caught:
            await out.send(job(data))
        assert caught.value.ipp_reason == REASON_TIMED_OUT
        assert "the queue to accept a job" in caught.value.reason
        server.resume()
        server.clear_jobs()
        await out.send(job(data))  # and it works again once resumed
        assert len(await wait_for_jobs(server, 1)) == 1
    finally:
        server.cleanup()


# --- p910nd -------------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "big"])
@pytest_twisted.ensureDeferred
async def test_p910nd_receives_byte_identical_job(p910nd, files, size):
    p910nd.clear_jobs()
    result = await make_output(p910nd.uri(), reactor=reactor()).send(job(files[size]))
    assert result.acknowledged == "all bytes written, connection closed"
    # The wrapper renames the job file before the connection closes.
    [captured] = p910nd.jobs()
    assert sha256(captured) == sha256(files[size])


@pytest_twisted.ensureDeferred
async def test_p910nd_offline_is_unavailable_quickly(files):
    printer = P910ndPrinter()
    try:
        printer.start()
        printer.stop()
        started = time.monotonic()
        with pytest.raises(PrinterUnavailable, match="connection refused"):
            await make_output(printer.uri(), reactor=reactor()).send(job(files["small"]))
        assert time.monotonic() - started < 1.0
    finally:
        printer.cleanup()


@pytest.mark.parametrize("size", ["small", "big"])
@pytest_twisted.ensureDeferred
async def test_p910nd_hung_times_out(files, size):
    """kill -STOP: a small job fits in the socket buffers (we then wait for
    a close that never comes), a big one stops being read."""
    printer = P910ndPrinter()
    try:
        printer.start()
        printer.pause()
        out = make_output(printer.uri(), reactor=reactor(), timeout=SHORT_TIMEOUT)
        started = time.monotonic()
        with pytest.raises(PrinterUnavailable) as caught:
            await out.send(job(files[size]))
        assert caught.value.ipp_reason == REASON_TIMED_OUT
        # The reactor's timers have millisecond granularity (epoll), so a
        # timer may fire a hair before its time.
        assert SHORT_TIMEOUT - 0.01 <= time.monotonic() - started < SHORT_TIMEOUT + 5
        # What the kernel had buffered may still reach the paper once the
        # printer wakes up: raw 9100 cannot tell (see raw_socket.py).
    finally:
        printer.cleanup()


@pytest_twisted.ensureDeferred
async def test_p910nd_throughput_100mb(p910nd, tmp_path):
    """The printer side must carry >= 20 MB/s end to end; the output alone
    must be far faster.  Prints the figure."""
    data = write_binary(tmp_path / "100mb.bin", 100 * MB)
    p910nd.clear_jobs()
    rss_before = current_rss_mb()
    samples = [rss_before]
    sampler = task.LoopingCall(lambda: samples.append(current_rss_mb()))
    sampler.clock = reactor()
    sampler.start(0.01)
    started = time.monotonic()
    try:
        await make_output(p910nd.uri(), reactor=reactor()).send(job(data))
    finally:
        sampler.stop()
    elapsed = time.monotonic() - started
    rss_growth_mb = max(samples) - rss_before
    rate = 100 / elapsed
    print(f"\n100 MB to p910nd: {elapsed:.2f} s, {rate:.0f} MB/s, peak RSS growth {rss_growth_mb:.1f} MB")
    [captured] = p910nd.jobs()
    assert captured.stat().st_size == 100 * MB
    assert sha256(captured) == sha256(data)
    assert rate >= 20
    assert rss_growth_mb < 20  # streamed, never held whole


# --- PJL, against a tiny PJL printer ------------------------------------------


@implementer(IHalfCloseableProtocol)
class FakePJLPrinter(protocol.Protocol):
    """Reports START at the job header and END with PAGES=2 at the EOJ, as
    an HP printer does with USTATUS JOB=ON; closes after our half-close."""

    def connectionMade(self):
        self.received = bytearray()
        self.factory.printers.append(self)

    name = None

    def dataReceived(self, data):
        self.received += data
        if self.name is None:
            found = re.search(rb'@PJL JOB NAME="([^"]*)"', self.received[:200])
            if found:
                self.name = found[1]
                self.transport.write(b'@PJL USTATUS JOB\r\nSTART\r\nNAME="%s"\r\n\x0c' % self.name)
        if re.search(rb'@PJL EOJ NAME="[^"]*"\r\n\x1b%-12345X$', bytes(self.received[-200:])):
            self.transport.write(b'@PJL USTATUS JOB\r\nEND\r\nNAME="%s"\r\nPAGES=2\r\n\x0c'
                                 % self.name)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


@pytest_twisted.ensureDeferred
async def test_pjl_job_end_and_page_count(files):
    factory = protocol.Factory.forProtocol(FakePJLPrinter)
    factory.printers = []
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    try:
        out = make_output(f"socket://127.0.0.1:{port.getHost().port}", reactor=reactor(), pjl=True)
        result = await out.send(job(files["big"], job_id="42"))
    finally:
        await port.stopListening()
    assert result.pages == 2
    assert result.acknowledged == ("all bytes written, connection closed; "
                                   "the printer reported the job printed")
    [printer] = factory.printers
    assert bytes(printer.received) == (
        b'\x1b%-12345X@PJL JOB NAME="phaserlink-42"\r\n@PJL USTATUS JOB=ON\r\n'
        + files["big"].read_bytes()
        + b'\x1b%-12345X@PJL EOJ NAME="phaserlink-42"\r\n\x1b%-12345X')


@pytest_twisted.ensureDeferred
async def test_pjl_to_p910nd_completes_without_status(files):
    """p910nd never answers: the job still completes when it closes (after
    the PJL end wait), and is not reported as printed."""
    printer = P910ndPrinter()
    try:
        printer.start()
        out = make_output(printer.uri(), reactor=reactor(), pjl=True, timeout=SHORT_TIMEOUT)
        result = await out.send(job(files["small"]))
        assert result.pages is None
        assert result.acknowledged == "all bytes written, connection closed"
        assert "no PJL job end report" in result.detail
        [captured] = printer.jobs()
        assert files["small"].read_bytes() in captured.read_bytes()
    finally:
        printer.cleanup()


# --- Ghostscript renders what reached the printer -----------------------------


@pytest.mark.parametrize("peer", ["lpd", "p910nd"])
@pytest_twisted.ensureDeferred
async def test_printed_postscript_renders(peer, lpd, p910nd, tmp_path):
    gs = require_program("gs", "ghostscript")
    printer = {"lpd": lpd, "p910nd": p910nd}[peer]
    source = tmp_path / "job.ps"
    source.write_bytes(POSTSCRIPT)
    printer.clear_jobs()
    await make_output(printer.uri(), reactor=reactor()).send(job(source))
    [captured] = await wait_for_jobs(printer, 1)
    text = subprocess.run(
        [gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=txtwrite",
         "-sOutputFile=-", str(captured)],
        capture_output=True, check=True, timeout=60).stdout.decode(errors="replace")
    assert MARKER in text
    assert os.path.getsize(captured) == len(POSTSCRIPT)

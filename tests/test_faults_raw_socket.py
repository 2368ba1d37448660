"""Issue 7 item 6: raw 9100 printers that misbehave, on real loopback sockets.

A raw job counts as delivered when the printer closed or reset the
connection after every byte was acknowledged by its TCP stack, and is sent
again only when bytes were still unacknowledged (docs/outputs.md).  The
fake printers here are real listening sockets in a thread:

* ``reset-after-all``: reads the whole job (up to our FIN), then closes with
  SO_LINGER 0, i.e. a RST: printed once, never retried (it was printed
  three times before);
* ``reset-at-end``: reads exactly the job's bytes and resets without waiting
  for our FIN (a printer that knows where the job ends);
* ``reset-half``: resets half-way, data unread: retried;
* ``hang``: accepts and stops reading: times out, held, retried, not lost;
* nothing listening for a while: held, then printed once.

The first part drives :class:`SocketOutput` alone; the second a whole
printer service (its clock drives the back-off, the sockets are real).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import task

from phaserlink.pop3_store.maildir import MaildirStore
from phaserlink.printer.output import OutputJob, PrinterUnavailable
from phaserlink.printer.output.interfaces import REASON_TIMED_OUT
from phaserlink.printer.output.raw_socket import SocketOutput, unacknowledged_bytes
from phaserlink.printer.service import PrinterService
from support.peers import free_port
from support.printer_fakes import Rig, fake_toolkit, make_site, message

SHORT_TIMEOUT = 1.0
# After the last byte, a printer takes a moment before it hangs up; its
# kernel's delayed ACK (40 ms on Linux) has gone out by then.  TCP_QUICKACK
# after each read makes that independent of timing.
SETTLE = 0.05
SMALL = 100_000
BIG = 8 * 1024 * 1024  # well above the loopback socket buffers of the tests
PRINTER_RCVBUF = 64 * 1024


def reactor():
    from twisted.internet import reactor as r

    return r


def job_bytes(size: int) -> bytes:
    return b"%!PS\n" + os.urandom(size - 5)


class FakeRawPrinter:
    """A raw 9100 printer: one behaviour per connection, in order (the last
    repeats).  ``jobs`` holds what each connection delivered."""

    __test__ = False

    def __init__(self, *behaviours: str, port: int = 0, job_size: int | None = None):
        self.behaviours = list(behaviours)
        self.job_size = job_size
        self.jobs: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by accepted sockets: what the printer can buffer unread.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PRINTER_RCVBUF)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in self._held:
            s.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
            behaviour = self.behaviours[min(index, len(self.behaviours) - 1)]
            threading.Thread(target=self._session, args=(conn, behaviour), daemon=True).start()

    def _read(self, conn: socket.socket, limit: int | None) -> bytes:
        data = bytearray()
        while limit is None or len(data) < limit:
            chunk = conn.recv(min(65536, limit - len(data)) if limit is not None else 65536)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def _session(self, conn: socket.socket, behaviour: str) -> None:
        try:
            if behaviour == "hang":
                self._held.append(conn)  # never read, never close
                return
            if behaviour == "ok":
                data = self._read(conn, None)
                conn.close()
            elif behaviour == "reset-after-all":
                data = self._read(conn, None)
                time.sleep(SETTLE)
                reset(conn)
            elif behaviour == "reset-at-end":
                data = self._read(conn, self.job_size)
                time.sleep(SETTLE)
                reset(conn)
            elif behaviour == "reset-half":
                data = self._read(conn, (self.job_size or BIG) // 2)
                reset(conn)  # with data unread
            else:
                raise ValueError(behaviour)
            with self._lock:
                self.jobs.append(data)
        except OSError:
            pass


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@pytest.fixture
def printers():
    made: list[FakeRawPrinter] = []

    def make(*behaviours, **kw) -> FakeRawPrinter:
        p = FakeRawPrinter(*behaviours, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def output_job(tmp_path, data: bytes, job_id: str = "j-1") -> OutputJob:
    path = tmp_path / f"{job_id}.ps"
    path.write_bytes(data)
    return OutputJob(path, job_id, "title", "alice", "client.example", 1, "application/postscript")


async def until(predicate, timeout: float = 10.0, what: str = "condition", settle=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if settle is not None:
            settle()
        if predicate():
            return
        await task.deferLater(reactor(), 0.02, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


# --- the output alone --------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["reset-after-all", "reset-at-end"])
@pytest.mark.parametrize("size", [SMALL, BIG])
@pytest_twisted.ensureDeferred
async def test_reset_after_every_byte_was_acknowledged_is_delivered(printers, tmp_path, behaviour, size):
    data = job_bytes(size)
    printer = printers(behaviour, job_size=size)
    out = SocketOutput(printer.uri, "127.0.0.1", printer.port, reactor=reactor(), timeout=5)
    result = await out.send(output_job(tmp_path, data))
    assert result.acknowledged == "all bytes acknowledged by the printer, which then reset the connection"
    await until(lambda: printer.jobs, what="the printer's copy")
    assert printer.jobs == [data] and printer.connections == 1


@pytest_twisted.ensureDeferred
async def test_reset_half_way_is_unavailable(printers, tmp_path):
    printer = printers("reset-half", job_size=BIG)
    out = SocketOutput(printer.uri, "127.0.0.1", printer.port, reactor=reactor(), timeout=5)
    with pytest.raises(PrinterUnavailable) as caught:
        await out.send(output_job(tmp_path, job_bytes(BIG)))
    # A reset with data unread reaches the sender as ECONNRESET or, when the
    # kernel has already seen the peer's end, as a close: both mid-job.
    assert ("connection to the printer lost" in caught.value.reason
            or "the printer closed the connection after" in caught.value.reason), caught.value.reason
    await until(lambda: printer.jobs, what="the printer's half")
    assert len(printer.jobs[0]) < BIG


@pytest_twisted.ensureDeferred
async def test_printer_that_accepts_and_stops_reading_times_out(printers, tmp_path):
    printer = printers("hang")
    out = SocketOutput(printer.uri, "127.0.0.1", printer.port, reactor=reactor(), timeout=SHORT_TIMEOUT)
    started = time.monotonic()
    with pytest.raises(PrinterUnavailable) as caught:
        await out.send(output_job(tmp_path, job_bytes(BIG)))
    assert caught.value.ipp_reason == REASON_TIMED_OUT
    assert time.monotonic() - started < SHORT_TIMEOUT + 5


def test_unacknowledged_bytes_counts_data_not_our_fin():
    """Bytes queued to a peer that never reads stay unacknowledged beyond its
    receive window; everything a reading peer took is acknowledged, FIN or
    no FIN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        client.sendall(b"x" * 1000)
        assert server.recv(2000) == b"x" * 1000
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        deadline = time.monotonic() + 5
        while unacknowledged_bytes(client, 1000) != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert unacknowledged_bytes(client, 1000) == 0
        assert unacknowledged_bytes(client, 1500) == 500  # 500 still in our own buffer
        client.shutdown(socket.SHUT_WR)  # the FIN: not data
        time.sleep(0.05)
        assert unacknowledged_bytes(client, 1000) == 0
    finally:
        for s in (client, server, listener):
            s.close()


# --- through the printer service: held, retried, printed once ---------------------------------


def service_for(tmp_path, printer_port: int, timeout: float = 5.0) -> Rig:
    rig = Rig(tmp_path, make_site(tmp_path))
    rig.store = MaildirStore(rig.site.appliance.spool / "mail", list(rig.site.printers))
    rig.outputs = {"lp": SocketOutput(f"socket://127.0.0.1:{printer_port}", "127.0.0.1", printer_port,
                                      reactor=reactor(), timeout=timeout, connect_timeout=timeout)}
    rig.service = PrinterService(rig.site, rig.store, rig.queue, reactor=rig.clock, tools=fake_toolkit(),
                                 outputs=rig.outputs)
    rig.service.startService()
    rig.settle()
    return rig


def held(rig: Rig) -> bool:
    return any("printer-stopped" in (d / "state.json").read_text()
               for d in rig.job_dirs() if (d / "state.json").exists())


async def run_until(rig: Rig, predicate, what: str, timeout: float = 15.0) -> None:
    await until(predicate, timeout=timeout, what=what, settle=rig.settle)


@pytest_twisted.ensureDeferred
async def test_service_prints_a_reset_after_the_last_byte_once(printers, tmp_path):
    body = job_bytes(BIG)
    printer = printers("reset-after-all", job_size=len(body))
    rig = service_for(tmp_path, printer.port)
    try:
        rig.deliver(message(body=body))
        await run_until(rig, lambda: rig.job_dirs() == [] and printer.jobs, "the job to complete")
        rig.run_for(120)  # any retry would have come by now (5 s, 10 s, ...)
        await task.deferLater(reactor(), 0.3, lambda: None)
        rig.settle()
        assert printer.connections == 1 and printer.jobs == [body]
        assert rig.job_dirs() == [] and rig.mailbox() == []
    finally:
        await rig.service.stopService()


@pytest.mark.parametrize("first", ["reset-half", "hang"])
@pytest_twisted.ensureDeferred
async def test_service_holds_and_retries_after_a_reset_half_way_or_a_hang(printers, tmp_path, first):
    body = job_bytes(BIG)
    printer = printers(first, "ok", job_size=len(body))
    rig = service_for(tmp_path, printer.port, timeout=SHORT_TIMEOUT)
    try:
        rig.deliver(message(body=body))
        await run_until(rig, lambda: held(rig), "the job held after the first attempt")
        assert printer.connections == 1 and rig.job_dirs()  # not lost: still spooled
        rig.clock.advance(5)  # the first back-off
        await run_until(rig, lambda: rig.job_dirs() == [], "the retry to complete the job")
        assert printer.connections == 2
        await until(lambda: len(printer.jobs) == 2 or (first == "hang" and printer.jobs), what="the copy")
        assert printer.jobs[-1] == body  # the whole job, once, on the retry
    finally:
        await rig.service.stopService()


@pytest_twisted.ensureDeferred
async def test_service_holds_while_refused_then_prints_once(printers, tmp_path):
    port = free_port()  # nothing listens yet: connection refused
    body = job_bytes(SMALL)
    rig = service_for(tmp_path, port)
    try:
        rig.deliver(message(body=body))
        await run_until(rig, lambda: held(rig), "the job held for the refusing printer")
        printer = printers("ok", port=port)
        rig.clock.advance(5)
        await run_until(rig, lambda: rig.job_dirs() == [] and printer.jobs, "the job printed")
        rig.run_for(120)
        await task.deferLater(reactor(), 0.3, lambda: None)
        assert printer.jobs == [body] and printer.connections == 1
    finally:
        await rig.service.stopService()

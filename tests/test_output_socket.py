"""Raw 9100 output and PJL on fake transports."""

from __future__ import annotations

import io

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from phaserlink.printer.output import OutputJob, PrinterUnavailable
from phaserlink.printer.output import pjl
from phaserlink.printer.output.interfaces import REASON_TIMED_OUT
from phaserlink.printer.output.raw_socket import (
    PJL_END_TIMEOUT,
    SOCKET_TIMEOUT,
    RawJobProtocol,
    SocketOutput,
)
from phaserlink.printer.output.transfer import repeat_reader

DATA = b"%!PS\n" + bytes(range(256)) * 2100  # ~538 KB: three chunks


class HalfCloseTransport(StringTransport):
    """StringTransport that records a half-close the way TCP performs it."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def start(data=DATA, pjl_name=None, copies=1, clock=None):
    clock = clock or Clock()
    proto = RawJobProtocol(clock, SOCKET_TIMEOUT, data_file=io.BytesIO(data),
                           data_size=len(data), pjl_name=pjl_name, pjl_copies=copies)
    transport = HalfCloseTransport()
    proto.makeConnection(transport)
    results = []
    proto.finished.addBoth(results.append)
    return proto, transport, clock, results


def pump(transport):
    while transport.producer is not None:
        transport.producer.resumeProducing()


def test_done_only_after_half_close_and_the_printers_close():
    proto, t, clock, results = start()
    pump(t)
    assert t.value() == DATA
    assert t.write_closed  # shutdown(SHUT_WR) after the last byte
    proto.writeConnectionLost()  # our FIN is out
    assert results == []  # but the printer has not closed yet
    proto.readConnectionLost()
    assert results == [proto]
    assert t.disconnecting
    assert not clock.getDelayedCalls()


def test_printer_closing_first_then_our_fin_also_completes():
    proto, t, clock, results = start()
    pump(t)
    proto.readConnectionLost()
    assert results == []
    proto.writeConnectionLost()
    assert results == [proto]


def test_reset_after_all_bytes_is_unavailable_when_the_kernel_cannot_say():
    # A StringTransport has no socket to ask: not known to be acknowledged.
    proto, t, clock, results = start()
    pump(t)
    proto.writeConnectionLost()
    proto.connectionLost(Failure(error.ConnectionLost("Connection reset by peer")))
    [failure] = results
    assert failure.check(PrinterUnavailable)
    assert "reset by peer" in failure.value.reason


class _Probe:
    closed = False

    def close(self):
        self.closed = True


def _reset_after_all_bytes(monkeypatch, unacknowledged):
    from phaserlink.printer.output import raw_socket

    probe = _Probe()
    monkeypatch.setattr(raw_socket, "_probe_socket", lambda transport: probe)
    seen = []
    monkeypatch.setattr(raw_socket, "unacknowledged_bytes",
                        lambda sock, handed: seen.append(handed) or unacknowledged)
    proto, t, clock, results = start()
    pump(t)
    proto.writeConnectionLost()
    proto.connectionLost(Failure(error.ConnectionLost("Connection reset by peer")))
    assert probe.closed and seen == [len(DATA)]
    return proto, results


def test_reset_once_every_byte_is_acknowledged_is_delivered(monkeypatch):
    """Issue 7 item 6: the printer that resets after taking the job has it."""
    proto, results = _reset_after_all_bytes(monkeypatch, 0)
    assert results == [proto] and proto.reset_after_all


def test_reset_with_bytes_unacknowledged_is_unavailable_and_says_how_many(monkeypatch):
    proto, results = _reset_after_all_bytes(monkeypatch, 4096)
    [failure] = results
    assert failure.check(PrinterUnavailable)
    assert f"4096 of {len(DATA)} bytes unacknowledged" in failure.value.reason


def test_printer_hanging_up_mid_job_is_unavailable():
    proto, t, clock, results = start()
    t.producer.resumeProducing()  # one chunk out of three
    proto.readConnectionLost()
    [failure] = results
    assert failure.check(PrinterUnavailable)
    assert f"262144 of {len(DATA)} bytes" in failure.value.reason
    assert t.disconnecting


def test_printer_that_never_closes_times_out():
    proto, t, clock, results = start()
    pump(t)
    proto.writeConnectionLost()
    clock.advance(SOCKET_TIMEOUT)
    [failure] = results
    assert failure.check(PrinterUnavailable)
    assert failure.value.ipp_reason == REASON_TIMED_OUT
    assert "close the connection" in failure.value.reason


def test_printer_that_stops_reading_times_out():
    proto, t, clock, results = start()
    t.producer.resumeProducing()
    clock.advance(SOCKET_TIMEOUT - 1)
    t.producer.resumeProducing()  # progress restarts the watchdog
    clock.advance(SOCKET_TIMEOUT - 1)
    assert results == []
    clock.advance(1)
    assert results[0].check(PrinterUnavailable)
    assert "stopped reading" in results[0].value.reason


# --- PJL -------------------------------------------------------------------

END = b'@PJL USTATUS JOB\r\nEND\r\nNAME="phaserlink-j-1"\r\nPAGES=3\r\n\x0c'
START = b'@PJL USTATUS JOB\r\nSTART\r\nNAME="phaserlink-j-1"\r\n\x0c'


def test_pjl_wrapping_is_exact():
    proto, t, clock, results = start(pjl_name="phaserlink-j-1")
    pump(t)
    assert t.value() == (
        b'\x1b%-12345X@PJL JOB NAME="phaserlink-j-1"\r\n@PJL USTATUS JOB=ON\r\n'
        + DATA + b'\x1b%-12345X@PJL EOJ NAME="phaserlink-j-1"\r\n\x1b%-12345X')


def test_pjl_waits_for_job_end_then_reports_pages():
    proto, t, clock, results = start(pjl_name="phaserlink-j-1")
    pump(t)
    assert not t.write_closed  # waiting for USTATUS JOB END first
    stream = START + b'@PJL USTATUS JOB\r\nEND\r\nNAME="someone-else"\r\nPAGES=9\r\n\x0c' + END
    for i in range(0, len(stream), 7):  # any chunking
        proto.dataReceived(stream[i:i + 7])
    assert t.write_closed
    proto.writeConnectionLost()
    proto.readConnectionLost()
    assert results == [proto]
    assert proto.pages == 3 and proto.end_reported


def test_pjl_copies_are_a_qty_command():
    assert pjl.header("n", 3) == (b'\x1b%-12345X@PJL JOB NAME="n"\r\n@PJL USTATUS JOB=ON\r\n'
                                  b"@PJL SET QTY=3\r\n")


def test_pjl_printer_without_status_still_completes_after_the_end_timeout():
    proto, t, clock, results = start(pjl_name="phaserlink-j-1")
    pump(t)
    clock.advance(PJL_END_TIMEOUT - 1)
    assert not t.write_closed
    clock.advance(1)
    assert t.write_closed
    proto.writeConnectionLost()
    proto.readConnectionLost()
    assert results == [proto] and proto.pages is None and not proto.end_reported


def test_status_parser():
    parser = pjl.StatusParser()
    assert parser.feed(END[:10]) == []
    [message] = parser.feed(END[10:] + b"@PJL USTATUS DEVICE\r\nCODE=10001\r\n")
    assert (message.category, message.event, message.name, message.pages) == \
        ("JOB", "END", "phaserlink-j-1", 3)
    [device] = parser.feed(b'DISPLAY="00 READY"\r\nONLINE=TRUE\r\n\x0c@PJL INFO ID\r\n\x0c')
    assert device.category == "DEVICE" and device.fields["CODE"] == "10001"
    assert device.fields["ONLINE"] == "TRUE"


def test_status_parser_memory_is_bounded():
    parser = pjl.StatusParser()
    for _ in range(100):
        parser.feed(b"x" * 1024)
    assert len(parser._buffer) <= pjl.MAX_MESSAGE
    [message] = parser.feed(END)  # and it finds its feet again
    assert message.pages == 3


def test_job_name_is_safe():
    assert pjl.job_name('a"b\r\nc') == "phaserlink-abc"
    assert len(pjl.job_name("x" * 500)) == pjl.NAME_MAX


# --- copies and SocketOutput.send -----------------------------------------


def test_repeat_reader_yields_the_file_n_times(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(DATA)
    f, size = repeat_reader(path, 3)
    assert size == 3 * len(DATA)
    out = b""
    while chunk := f.read(100_000):
        out += chunk
    f.close()
    assert out == DATA * 3


def _complete(reactor):
    factory = reactor.tcpClients[-1][2]
    proto = factory.buildProtocol(None)
    transport = HalfCloseTransport()
    proto.makeConnection(transport)
    pump(transport)
    proto.writeConnectionLost()
    proto.readConnectionLost()
    return transport


def test_copies_without_pjl_repeat_the_data_but_not_for_pdf(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(DATA)
    reactor = MemoryReactorClock()
    out = SocketOutput("socket://127.0.0.1", "127.0.0.1", 9100, reactor=reactor)
    results = []
    out.send(OutputJob(path, "j-1", "t", "u", "h", 2, "application/postscript")).addBoth(results.append)
    assert _complete(reactor).value() == DATA * 2
    out.send(OutputJob(path, "j-2", "t", "u", "h", 2, "application/pdf")).addBoth(results.append)
    assert _complete(reactor).value() == DATA
    assert results[0].acknowledged == "all bytes written, connection closed"
    assert "2 copies sent one after another" in results[0].detail
    assert "not applied" in results[1].detail


def test_send_with_pjl_reports_pages(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(DATA)
    reactor = MemoryReactorClock()
    out = SocketOutput("socket://127.0.0.1", "127.0.0.1", 9100, reactor=reactor, pjl=True)
    results = []
    out.send(OutputJob(path, "j-1", "t", "u", "h", 1, "application/postscript")).addBoth(results.append)
    proto = reactor.tcpClients[-1][2].buildProtocol(None)
    transport = HalfCloseTransport()
    proto.makeConnection(transport)
    pump(transport)
    proto.dataReceived(END)
    proto.writeConnectionLost()
    proto.readConnectionLost()
    [result] = results
    assert result.pages == 3
    assert result.acknowledged.endswith("the printer reported the job printed")

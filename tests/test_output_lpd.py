"""LPD output, byte by byte, on fake transports (no real lpd here)."""

from __future__ import annotations

import io

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from phaserlink.printer.output import OutputJob, PrinterRejected, PrinterUnavailable
from phaserlink.printer.output.interfaces import (
    REASON_NOT_FOUND,
    REASON_OTHER,
    REASON_SPOOL_FULL,
    REASON_STOPPED,
    REASON_TIMED_OUT,
)
from phaserlink.printer.output.lpd import (
    LPD_TIMEOUT,
    REFUSAL_TEXT_WAIT,
    LPDJobProtocol,
    LPDOutput,
    build_control_file,
    classify_refusal,
)
from phaserlink.printer.output.transfer import JobFileChanged

DATA = bytes(range(256)) * 3 + b"\x00\n.\r\n"


def job(**kw) -> OutputJob:
    fields = dict(path="/nonexistent", job_id="j-1", title="Quarterly report",
                  user="alice", host="client.example", copies=1, format="application/postscript")
    fields.update(kw)
    return OutputJob(**fields)


def start(data: bytes = DATA, size: int | None = None, copies: int = 1, clock=None):
    clock = clock or Clock()
    control, data_name, control_name = build_control_file(job(copies=copies), 42)
    proto = LPDJobProtocol(clock, LPD_TIMEOUT, queue=b"raw", data_file=io.BytesIO(data),
                           data_size=len(data) if size is None else size, data_name=data_name,
                           control=control, control_name=control_name,
                           where="127.0.0.1:515", number=42)
    transport = StringTransport()
    proto.makeConnection(transport)
    results = []
    proto.finished.addBoth(results.append)
    return proto, transport, clock, results


def take(transport: StringTransport) -> bytes:
    value = transport.value()
    transport.clear()
    return value


def pump(transport: StringTransport) -> None:
    """Be the TCP transport: pull from the producer until it unregisters."""
    while transport.producer is not None:
        transport.producer.resumeProducing()


def test_control_file_content_exact():
    control, data_name, control_name = build_control_file(job(copies=2), 42)
    assert data_name == b"dfA042client.example"
    assert control_name == b"cfA042client.example"
    assert control == (b"Hclient.example\nPalice\nJQuarterly report\nNQuarterly report\n"
                       b"ldfA042client.example\nldfA042client.example\n"
                       b"UdfA042client.example\n")


def test_control_file_cannot_be_injected_and_respects_rfc_limits():
    control, _, _ = build_control_file(
        job(title="Report\nPmallory\nldfA000evil", user="\u00e9ve" + "x" * 50,
            host="a host/with spaces"), 7)
    lines = control.split(b"\n")
    assert [line[:1] for line in lines if line] == [b"H", b"P", b"J", b"N", b"l", b"U"]
    assert lines[1] == b"P?ve" + b"x" * 28  # 31 bytes, non-ASCII replaced
    assert lines[2] == b"JReport Pmallory ldfA000evil"
    assert b"dfA007ahostwithspaces" in control  # file names keep only [A-Za-z0-9.-]


def test_exact_byte_exchange_data_file_first():
    proto, t, clock, results = start(copies=2)
    assert take(t) == b"\x02raw\n"
    proto.dataReceived(b"\x00")
    assert take(t) == b"\x03%d dfA042client.example\n" % len(DATA)
    proto.dataReceived(b"\x00")
    pump(t)
    assert take(t) == DATA + b"\x00"
    assert results == []  # data sent, not yet acknowledged
    proto.dataReceived(b"\x00")
    control, _, _ = build_control_file(job(copies=2), 42)
    assert take(t) == b"\x02%d cfA042client.example\n" % len(control)
    proto.dataReceived(b"\x00")
    assert take(t) == control + b"\x00"
    assert results == []
    proto.dataReceived(b"\x00")
    assert t.disconnecting  # LPRng starts the job when we hang up
    assert results == []
    proto.connectionLost(Failure(error.ConnectionDone()))
    assert results == [42]
    assert not clock.getDelayedCalls()  # no watchdog left behind


def test_refusal_of_queue_carries_the_servers_text():
    proto, t, clock, results = start()
    proto.dataReceived(b"\x03spool queue for 'nosuch' does not exist on server localhost\n")
    assert results == []  # still reading the text
    proto.dataReceived(b"check for correct printer name\n")
    proto.connectionLost(Failure(error.ConnectionDone()))
    [failure] = results
    assert failure.check(PrinterRejected)
    assert "spool queue for 'nosuch' does not exist on server localhost " \
           "check for correct printer name" in failure.value.reason
    assert "ack byte 0x03" in failure.value.reason
    assert failure.value.ipp_reason == REASON_NOT_FOUND


def test_refusal_text_is_awaited_only_briefly():
    proto, t, clock, results = start()
    proto.dataReceived(b"\x01")
    clock.advance(REFUSAL_TEXT_WAIT - 0.1)
    assert results == []
    clock.advance(0.2)
    [failure] = results
    # 1 is LPRng's "no spooling to this queue now", BSD's any error: temporary.
    assert failure.check(PrinterUnavailable)
    assert "no reason given" in failure.value.reason
    assert t.disconnecting


def test_refusal_of_the_data_file_after_transfer():
    proto, t, clock, results = start()
    proto.dataReceived(b"\x00")
    proto.dataReceived(b"\x00")
    pump(t)
    proto.dataReceived(b"\x02no space")
    proto.connectionLost(Failure(error.ConnectionDone()))
    [failure] = results
    # 2 is "no space / retry later" in LPRng and BSD lpd: the job is held, not lost.
    assert failure.check(PrinterUnavailable)
    assert "refused the data file" in failure.value.reason and "no space" in failure.value.reason
    assert failure.value.ipp_reason == REASON_SPOOL_FULL


def test_no_ack_times_out_as_unavailable():
    proto, t, clock, results = start()
    proto.dataReceived(b"\x00")
    clock.advance(LPD_TIMEOUT - 1)
    assert results == []
    clock.advance(1)
    [failure] = results
    assert failure.check(PrinterUnavailable)
    assert failure.value.ipp_reason == REASON_TIMED_OUT
    assert "data file announcement" in failure.value.reason
    assert t.disconnecting


def test_stalled_data_transfer_times_out_but_progress_keeps_it_alive():
    big = bytes(600 * 1024)
    proto, t, clock, results = start(big)
    proto.dataReceived(b"\x00")
    proto.dataReceived(b"\x00")
    for _ in range(2):  # each accepted chunk restarts the watchdog
        clock.advance(LPD_TIMEOUT - 1)
        t.producer.resumeProducing()
    assert results == []
    clock.advance(LPD_TIMEOUT)  # the printer stopped taking data
    [failure] = results
    assert failure.check(PrinterUnavailable) and "sending the data file" in failure.value.reason


def test_connection_lost_mid_job_is_unavailable():
    proto, t, clock, results = start()
    proto.dataReceived(b"\x00")
    proto.connectionLost(Failure(error.ConnectionLost("reset")))
    [failure] = results
    assert failure.check(PrinterUnavailable)


def test_job_file_shorter_than_announced_aborts_without_completing():
    proto, t, clock, results = start(DATA, size=len(DATA) + 10)
    proto.dataReceived(b"\x00")
    proto.dataReceived(b"\x00")
    pump(t)
    [failure] = results
    assert failure.check(JobFileChanged)
    assert not t.value().endswith(b"\x00")  # never confirmed the data file
    assert t.disconnecting


# --- LPDOutput.send on a memory reactor: connecting and source ports -------


@pytest.fixture
def job_file(tmp_path):
    path = tmp_path / "job.ps"
    path.write_bytes(DATA)
    return path


def run_exchange(reactor, connect_index=-1):
    """Complete a connection the output asked for and ack everything."""
    host, port, factory, timeout, bind = reactor.tcpClients[connect_index]
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    for _ in range(5):
        proto.dataReceived(b"\x00")
        pump(transport)
    proto.connectionLost(Failure(error.ConnectionDone()))
    return transport


def test_send_uses_privileged_port_and_skips_busy_ones(job_file):
    reactor = MemoryReactorClock()
    out = LPDOutput("lpd://127.0.0.1/raw", "127.0.0.1", 515, "raw", reactor=reactor,
                    source_port="privileged")
    out._next_number = 999
    results = []
    out.send(job(path=job_file)).addBoth(results.append)
    assert reactor.tcpClients[-1][4] == ("", 721)
    # 721 is taken: the connector reports a bind error, the next port is tried.
    host, port, factory, timeout, bind = reactor.tcpClients[-1]
    factory.clientConnectionFailed(reactor.connectors[-1],
                                   Failure(error.ConnectBindError(98, "in use")))
    reactor.advance(0)
    assert reactor.tcpClients[-1][4] == ("", 722)
    run_exchange(reactor)
    [result] = results
    assert result.acknowledged == "spooled at lpd queue raw on 127.0.0.1:515 as job 999"
    assert "from local port 722" in result.detail
    assert out._next_number == 0  # job numbers wrap 999 -> 000


def _fail_all_binds(reactor, count):
    for _ in range(count):
        factory = reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(reactor.connectors[-1],
                                       Failure(error.ConnectBindError(98, "in use")))
        reactor.advance(0)


def test_all_privileged_ports_busy_auto_falls_back(job_file, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    reactor = MemoryReactorClock()
    out = LPDOutput("lpd://h/raw", "127.0.0.1", 515, "raw", reactor=reactor, source_port="auto")
    results = []
    out.send(job(path=job_file)).addBoth(results.append)
    _fail_all_binds(reactor, 11)
    assert [c[4] for c in reactor.tcpClients] == [("", p) for p in range(721, 732)] + [None]
    run_exchange(reactor)
    assert "from local port 40000" in results[0].detail


def test_all_privileged_ports_busy_privileged_waits(job_file):
    reactor = MemoryReactorClock()
    out = LPDOutput("lpd://h/raw", "127.0.0.1", 515, "raw", reactor=reactor,
                    source_port="privileged")
    results = []
    out.send(job(path=job_file)).addBoth(results.append)
    _fail_all_binds(reactor, 11)
    [failure] = results
    assert failure.check(PrinterUnavailable) and "721-731 are busy" in failure.value.reason


def test_any_port_and_not_root_auto_do_not_bind(job_file, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    reactor = MemoryReactorClock()
    for mode in ("any", "auto"):
        LPDOutput("lpd://h/raw", "127.0.0.1", 515, "raw", reactor=reactor,
                  source_port=mode).send(job(path=job_file))
    assert [c[4] for c in reactor.tcpClients] == [None, None]


def test_refused_connection_is_unavailable(job_file):
    reactor = MemoryReactorClock()
    out = LPDOutput("lpd://h/raw", "127.0.0.1", 515, "raw", reactor=reactor, source_port="any")
    results = []
    out.send(job(path=job_file)).addBoth(results.append)
    reactor.tcpClients[-1][2].clientConnectionFailed(
        reactor.connectors[-1], Failure(error.ConnectionRefusedError()))
    reactor.advance(0)
    [failure] = results
    assert failure.check(PrinterUnavailable) and "connection refused" in failure.value.reason


def test_cancel_aborts_the_connection(job_file):
    reactor = MemoryReactorClock()
    out = LPDOutput("lpd://h/raw", "127.0.0.1", 515, "raw", reactor=reactor, source_port="any")
    results = []
    d = out.send(job(path=job_file))
    d.addBoth(results.append)
    host, port, factory, timeout, bind = reactor.tcpClients[-1]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    d.cancel()
    assert transport.disconnecting
    assert results[0].check(Exception)
    assert not reactor.getDelayedCalls()


@pytest.mark.parametrize("code, text, kind, ipp", [
    # LPRng's own answers (lpd_rcvjob.c, getqueue.c)
    (3, "spool queue for 'nosuch' does not exist on server lpd.example", PrinterRejected, REASON_NOT_FOUND),
    (2, "raw: insufficient file space", PrinterUnavailable, REASON_SPOOL_FULL),
    (2, "raw: spooling disabled", PrinterUnavailable, REASON_STOPPED),
    (2, "size 2048.000K exceeds 1024K", PrinterUnavailable, REASON_SPOOL_FULL),
    (2, "raw: transfer of 'dfA042h' from 'h' failed", PrinterUnavailable, REASON_SPOOL_FULL),
    (1, "raw: Receive_job - bad control line", PrinterUnavailable, REASON_STOPPED),
    (3, "raw: no permission to print", PrinterRejected, REASON_OTHER),
    (3, "spool file system full, try later", PrinterUnavailable, REASON_SPOOL_FULL),
    # BSD lpd: 1 for any error ("unknown printer" is still permanent), 2 for no space
    (1, "unknown printer nosuch", PrinterRejected, REASON_NOT_FOUND),
    (1, "lost connection", PrinterUnavailable, REASON_STOPPED),
    (2, "no reason given", PrinterUnavailable, REASON_SPOOL_FULL),
    # anything else: not a promise of failure for good
    (7, "no reason given", PrinterUnavailable, REASON_OTHER),
    (None, "HTTP/1.1 400 Bad Request", PrinterUnavailable, REASON_OTHER),
    (3, "job completed successfully elsewhere", PrinterRejected, REASON_OTHER),
])
def test_refusals_are_told_apart(code, text, kind, ipp):
    fault = classify_refusal(code, text, "lpd on h:515 refused the data file")
    assert type(fault) is kind and fault.ipp_reason == ipp
    assert text in fault.reason

"""An LPD printer that refuses temporarily, then accepts: the job is held,
sent again with back-off, and printed exactly once; one that refuses for
good (no such queue) aborts the job with a status mail (docs/faults.md).

A scripted LPD server on a real loopback socket plays the printer for the
dispatcher; real LPRng with its spool on a full tmpfs checks that the
refusal a real server sends ("insufficient file space", ack 2) is taken as
temporary.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pytest_twisted
from support.live_printer import LivePrinter, reactor
from support.message_samples import mail_with
from twisted.internet import defer, protocol, task

from phaserlink.printer import jobs as J
from phaserlink.printer.output import OutputJob, PrinterUnavailable
from phaserlink.printer.output.interfaces import REASON_SPOOL_FULL
from phaserlink.printer.output.lpd import LPDOutput

PS = b"%!PS-Adobe-3.0\n/Helvetica findfont 12 scalefont setfont 72 700 moveto (lpd fault test) show showpage\n%%EOF\n"


class ScriptedLPD(protocol.Protocol):
    """The server side of RFC 1179 "receive job", answering as scripted:
    ``factory.refusals`` holds, per connection, None (accept) or
    (step, bytes to send instead of the ack) with step one of 'queue',
    'data-command', 'data', 'control-command', 'control'."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.state = "queue"
        self.files: dict[str, bytes] = {}
        self.want = 0
        self.kind = ""
        self.name = ""
        script = self.factory.refusals.pop(0) if self.factory.refusals else None
        self.refuse_at, self.refusal = script if script else (None, b"")
        self.factory.connections += 1

    def _ack(self, step: str) -> bool:
        if step == self.refuse_at:
            self.transport.write(self.refusal)
            self.transport.loseConnection()
            return False
        self.transport.write(b"\x00")
        return True

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.state in ("queue", "command"):
                line, sep, rest = self.buffer.partition(b"\n")
                if not sep:
                    return
                self.buffer = rest
                if self.state == "queue":
                    assert line[:1] == b"\x02"
                    if not self._ack("queue"):
                        return
                    self.state = "command"
                    continue
                size, _, name = line[1:].partition(b" ")
                self.kind = "data" if line[:1] == b"\x03" else "control"
                self.want, self.name = int(size), name.decode()
                if not self._ack(f"{self.kind}-command"):
                    return
                self.state = "file"
            elif self.state == "file":
                if len(self.buffer) < self.want + 1:
                    return
                content, self.buffer = self.buffer[:self.want], self.buffer[self.want + 1:]
                if not self._ack(self.kind):
                    return
                self.files[self.name] = content
                self.state = "command"

    def connectionLost(self, reason=None) -> None:
        if any(n.startswith("cf") for n in self.files) and any(n.startswith("df") for n in self.files):
            self.factory.jobs.append(self.files)


class ScriptedLPDFactory(protocol.Factory):
    protocol = ScriptedLPD

    def __init__(self, refusals):
        self.refusals = list(refusals)
        self.jobs: list[dict[str, bytes]] = []
        self.connections = 0


def ps_mail(msgid="<lpd@example.com>") -> bytes:
    return mail_with((PS, "application", "postscript", "r.ps"), subject="LPD report", message_id=msgid).as_bytes()


class LPDRig(LivePrinter):
    """The live printer service, printing to an LPD server at *uri*."""

    def __init__(self, tmp: Path, uri: str) -> None:
        super().__init__(tmp)
        self.uri = uri

    def make_output(self):
        host_port, _, q = self.uri[len("lpd://"):].partition("/")
        host, _, port = host_port.partition(":")
        return LPDOutput(self.uri, host, int(port), q, reactor=reactor(), source_port="any")


@pytest.fixture
def scripted_lpd():
    servers = []

    def make(refusals):
        factory = ScriptedLPDFactory(refusals)
        port = reactor().listenTCP(0, factory, interface="127.0.0.1")
        servers.append(port)
        return factory, f"lpd://127.0.0.1:{port.getHost().port}/raw"

    yield make
    for port in servers:
        port.stopListening()


@pytest_twisted.ensureDeferred
async def test_lpd_that_refuses_temporarily_then_accepts_prints_exactly_once(tmp_path, scripted_lpd):
    factory, uri = scripted_lpd([("data-command", b"\x02raw: insufficient file space\n")])
    rig = LPDRig(tmp_path, uri).start()
    try:
        rig.deliver(ps_mail())
        await rig.until(lambda: factory.connections >= 1 and rig.states()
                        and rig.states()[0]["state"] == J.PENDING_HELD, "the job to be held")
        [state] = rig.states()
        assert state["reasons"] == [J.PRINTER_STOPPED] and "insufficient file space" in state["detail"]
        assert factory.jobs == [] and rig.queue.events() == ["received"]
        # The back-off (5 s) sends it again by itself.
        await rig.until(lambda: not rig.states() and factory.jobs, "the job to print", timeout=20)
        await task.deferLater(reactor(), 0.5, lambda: None)  # a second copy would show by now
        [printed] = factory.jobs
        [data] = [v for k, v in printed.items() if k.startswith("df")]
        assert data == PS
        assert factory.connections == 2 and rig.queue.events() == ["received", "printed"]
    finally:
        await defer.maybeDeferred(rig.service.stopService)


@pytest_twisted.ensureDeferred
async def test_lpd_without_the_queue_aborts_the_job_with_its_words(tmp_path, scripted_lpd):
    factory, uri = scripted_lpd([("queue", b"\x03spool queue for 'raw' does not exist on server lpd.example\n")])
    rig = LPDRig(tmp_path, uri).start()
    try:
        rig.deliver(ps_mail())
        await rig.until(lambda: "failed" in rig.queue.events(), "the failed mail")
        mail = rig.queue.messages[-1]
        assert "spool queue for 'raw' does not exist" in mail.text
        assert mail.field("reasons") == "['aborted-by-system', 'destination-uri-failed']"
        # The status mail is queued before the job's folder is removed (in the durable pool).
        await rig.until(lambda: rig.states() == [], "the job to leave the spool")
        assert factory.jobs == []
    finally:
        await defer.maybeDeferred(rig.service.stopService)


@pytest_twisted.ensureDeferred
async def test_real_lprng_with_its_spool_full_refuses_temporarily_and_takes_the_job_later(tmp_path):
    import tempfile

    from support.lpd import LPRngServer
    from support.tmpfs import SmallDisk

    # Not under tmp_path (0700): lpd runs as daemon and must reach its spool.
    where = Path(tempfile.mkdtemp(prefix="phaserlink-lpd-full-"))
    where.chmod(0o755)
    small_disk = SmallDisk(where / "disk").mount()
    base = small_disk.path / "lpd"
    base.mkdir()
    server = LPRngServer(base=base, queues=("raw",)).start()
    try:
        job_file = tmp_path / "job.ps"
        job_file.write_bytes(PS + b"%" + b"x" * (1024 * 1024) + b"\n")
        small_disk.fill(leave=256 * 1024)
        out = LPDOutput(server.uri(), server.host, server.port, "raw", reactor=reactor(), source_port="any")
        job = OutputJob(path=job_file, job_id="full-1", title="t", user="alice", host="client.example",
                        format="application/postscript")
        with pytest.raises(PrinterUnavailable) as e:
            await out.send(job)
        assert e.value.ipp_reason == REASON_SPOOL_FULL, e.value.reason
        assert "insufficient file space" in e.value.reason
        small_disk.release()
        await out.send(job)
        deadline = time.monotonic() + 10
        while not list(server.out.glob("job-*.data")) and time.monotonic() < deadline:
            await task.deferLater(reactor(), 0.1, lambda: None)
        await task.deferLater(reactor(), 1.0, lambda: None)  # a second copy would show by now
        [captured] = list(server.out.glob("job-*.data"))
        assert captured.read_bytes() == job_file.read_bytes()
    finally:
        server.stop()
        small_disk.unmount()
        import shutil

        shutil.rmtree(where, ignore_errors=True)

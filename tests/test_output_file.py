"""file: output (tmp, fsync, rename) and the output URI factory."""

from __future__ import annotations

import os

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from phaserlink.printer.output import (
    IPrinterOutput,
    OutputJob,
    PrinterUnavailable,
    make_output,
)
from phaserlink.printer.output.file_output import COPY_CHUNK, FileOutput
from phaserlink.printer.output.lpd import LPDOutput
from phaserlink.printer.output.raw_socket import SocketOutput

DATA = bytes(range(256)) * (COPY_CHUNK // 256) * 2 + b"tail"  # three chunks


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "spool-data"
    path.write_bytes(DATA)
    return OutputJob(path, "20261126-0001", "Title", "alice", "client.example", 1,
                     "application/postscript")


def test_job_is_written_under_a_temporary_name_then_renamed(tmp_path, job, monkeypatch):
    out_dir = tmp_path / "printer"
    out_dir.mkdir()
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(
        f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))),
                                                     real_replace(a, b))[1])
    clock = Clock()
    results = []
    FileOutput(f"file:{out_dir}", out_dir, reactor=clock).send(job).addBoth(results.append)
    final = out_dir / "20261126-0001.ps"
    # Mid-copy: only a hidden temporary file, never a partial final one.
    [partial] = os.listdir(out_dir)
    assert partial.startswith(".20261126-0001.ps.tmp-")
    assert not final.exists() and results == []
    while not results:
        clock.advance(0)
    [result] = results
    assert final.read_bytes() == DATA
    assert os.listdir(out_dir) == ["20261126-0001.ps"]
    tmp = str(out_dir / partial)
    assert events == [("fsync", tmp), ("replace", tmp, str(final)), ("fsync", str(out_dir))]
    assert result.acknowledged == f"written to {final}"


def test_sending_again_replaces_the_file(tmp_path, job):
    clock = Clock()
    out = FileOutput("file:x", tmp_path / "o", reactor=clock)
    (tmp_path / "o").mkdir()
    for _ in range(2):
        results = []
        out.send(job).addBoth(results.append)
        while not results:
            clock.advance(0)
    assert os.listdir(tmp_path / "o") == ["20261126-0001.ps"]


def test_cancel_mid_copy_leaves_nothing(tmp_path, job):
    (tmp_path / "o").mkdir()
    clock = Clock()
    results = []
    d = FileOutput("file:x", tmp_path / "o", reactor=clock).send(job)
    d.addBoth(results.append)
    d.cancel()
    assert results[0].check(CancelledError)
    assert os.listdir(tmp_path / "o") == []


def test_missing_directory_is_unavailable(tmp_path, job):
    results = []
    FileOutput("file:x", tmp_path / "absent", reactor=Clock()).send(job).addBoth(results.append)
    assert results[0].check(PrinterUnavailable)
    assert "does not exist" in results[0].value.reason


def test_unsafe_job_id_and_unknown_format(tmp_path):
    (tmp_path / "o").mkdir()
    path = tmp_path / "d"
    path.write_bytes(b"x")
    clock = Clock()
    results = []
    FileOutput("file:x", tmp_path / "o", reactor=clock).send(
        OutputJob(path, "../../etc/passwd", "t", "u", "h", 1, "application/x-foo")
    ).addBoth(results.append)
    while not results:
        clock.advance(0)
    assert os.listdir(tmp_path / "o") == ["_.._etc_passwd.prn"]


# --- make_output -----------------------------------------------------------


def test_make_output_parses_uris(tmp_path):
    clock = Clock()
    f = make_output(f"file:{tmp_path}", reactor=clock)
    assert isinstance(f, FileOutput) and f.directory == tmp_path
    assert make_output(f"file://{tmp_path}", reactor=clock).directory == tmp_path
    lpd = make_output("lpd://printer.lan/raw", reactor=clock)
    assert isinstance(lpd, LPDOutput) and (lpd.host, lpd.port, lpd.queue) == ("printer.lan", 515, "raw")
    lpd = make_output("lpd://127.0.0.1:5515/lp%5Fone", reactor=clock, timeout=2,
                      source_port="any")
    assert (lpd.port, lpd.queue, lpd.timeout, lpd.source_port) == (5515, "lp_one", 2, "any")
    sock = make_output("socket://[::1]", reactor=clock, pjl=True)
    assert isinstance(sock, SocketOutput) and (sock.host, sock.port, sock.pjl) == ("::1", 9100, True)
    assert make_output("socket://h:9101/", reactor=clock).port == 9101
    for out in (f, lpd, sock):
        assert IPrinterOutput.providedBy(out)


@pytest.mark.parametrize("uri", [
    "printer", "gopher://h/q", "ipp://", "ipps://h:x/q", "lpd://h", "lpd://h/", "lpd:///q", "lpd://h:x/q",
    "socket://h/path", "socket://", "file:", "lpd://h/a%20b",
])
def test_make_output_rejects_bad_uris(uri):
    with pytest.raises(ValueError, match="printer output|bad"):
        make_output(uri, reactor=Clock())


def test_make_output_rejects_bad_options():
    with pytest.raises(ValueError):
        make_output("lpd://h/q", reactor=Clock(), source_port="low")
    with pytest.raises(ValueError):
        make_output("lpd://h/q", reactor=Clock(), timeout=0)

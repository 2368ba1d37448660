"""write_atomic: the old content or the new, and no stray temporary files."""

import os

import pytest

from phaserlink import durable


def test_write_atomic_replaces_and_sets_mode(tmp_path):
    path = tmp_path / "state.json"
    durable.write_atomic(path, b"old")
    durable.write_atomic(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_failed_write_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    durable.write_atomic(path, b"old")

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.os, "fsync", broken)
    with pytest.raises(OSError):
        durable.write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]

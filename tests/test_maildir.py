"""The durable Maildir: what is committed is in every mailbox, what is not is nowhere."""

from __future__ import annotations


import pytest
import pytest_twisted

from phaserlink.pop3_store import maildir
from phaserlink.pop3_store.maildir import MaildirStore


@pytest.fixture
def store(tmp_path):
    return MaildirStore(tmp_path / "mail", ["a", "b"])


def test_commit_links_into_every_mailbox_and_notifies(store):
    seen = []
    store.subscribe("a", seen.append)
    store.subscribe("b", seen.append)
    d = store.deliver(["a", "b", "a"])
    d.write(b"Subject: x\n\nline\n.\n")
    paths = d.commit()
    assert len(paths) == 2
    for box in ("a", "b"):
        [msg] = store.mailbox(box).messages()
        assert msg.path.read_bytes() == b"Subject: x\n\nline\n.\n"
        assert msg.size == 19 and msg.wire_size == 19 + 4
    assert not list(store.mailbox("a").tmp.iterdir())
    assert seen == ["a", "b"]


def test_keys_are_stable_and_unique(store):
    for i in range(50):
        d = store.deliver(["a"])
        d.write(b"x\n")
        d.commit()
    listed = [m.key for m in store.mailbox("a").messages()]
    assert len(set(listed)) == 50
    assert listed == [m.key for m in store.mailbox("a").messages()]


def test_abort_leaves_nothing(store):
    d = store.deliver(["a"])
    d.write(b"partial")
    d.abort()
    assert store.mailbox("a").messages() == []
    assert not list(store.tmp_pool.directory.iterdir())


def test_fsync_failure_delivers_nothing(store, monkeypatch):
    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(maildir.os, "fsync", broken)
    d = store.deliver(["a", "b"])
    d.write(b"x\n")
    with pytest.raises(OSError):
        d.commit()
    assert store.mailbox("a").messages() == [] and store.mailbox("b").messages() == []


def test_clean_tmp_removes_crashed_deliveries(store):
    d = store.deliver(["a"])
    d.write(b"half a message")
    d.file.flush()  # the process "dies" here: the file stays in .tmp/
    (store.mailbox("a").tmp / "123.crashed").write_bytes(b"from another MDA")
    assert list(store.tmp_pool.directory.iterdir())
    store.clean()
    assert not list(store.mailbox("a").tmp.iterdir())
    assert not list(store.tmp_pool.directory.iterdir())


def test_delete_is_durable(store):
    d = store.deliver(["a"])
    d.write(b"x\n")
    d.commit()
    box = store.mailbox("a")
    box.delete(box.messages())
    assert box.messages() == []


def test_foreign_file_is_measured(store):
    box = store.mailbox("a")
    (box.new / "123.foreign").write_bytes(b"a\nb\n")
    [msg] = box.messages()
    assert (msg.key, msg.size, msg.wire_size) == ("123.foreign", 4, 6)


@pytest_twisted.inlineCallbacks
def test_commit_async_group_commits(store, monkeypatch):
    synced = []
    real = maildir.fsync_dir

    def counting(path):
        synced.append(path)
        real(path)

    monkeypatch.setattr(maildir, "fsync_dir", counting)
    deliveries = []
    for i in range(20):
        d = store.deliver(["a", "b"])
        d.write(b"message %d\n" % i)
        deliveries.append(d.commit_async())
    for d in deliveries:
        paths = yield d
        assert len(paths) == 2
    assert len(store.mailbox("a").messages()) == 20
    # 20 messages x 2 mailboxes = 40 directory syncs without group commit.
    assert len(synced) < 40


@pytest_twisted.inlineCallbacks
def test_commit_async_failure(store, monkeypatch):
    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(maildir.os, "fsync", broken)
    d = store.deliver(["a"])
    d.write(b"x\n")
    with pytest.raises(OSError):
        yield d.commit_async()
    assert store.mailbox("a").messages() == []
    assert not list(store.tmp_pool.directory.iterdir())


@pytest_twisted.inlineCallbacks
def test_spare_files_are_made_ahead_and_removed_at_stop(store):
    from twisted.internet import reactor, task

    store.start(reactor)
    for _ in range(100):
        if len(store.tmp_pool.ready) >= store.tmp_pool.TARGET:
            break
        yield task.deferLater(reactor, 0.01, lambda: None)
    assert len(store.tmp_pool.ready) == store.tmp_pool.TARGET
    spare = store.tmp_pool.ready[-1].path
    d = store.deliver(["a"])
    assert d.tmp_path == spare  # taken from the pool, not created now
    d.write(b"x\n")
    yield d.commit_async(reactor)
    for _ in range(100):  # the spare link is removed in the background
        if not spare.exists():
            break
        yield task.deferLater(reactor, 0.01, lambda: None)
    assert not spare.exists()
    store.stop()
    assert not list(store.tmp_pool.directory.iterdir())
    assert len(store.mailbox("a").messages()) == 1

"""No fsync in the reactor thread on the printer side's path (issue 7, item
8): the fsync of the retrieved incoming file (since issue 11 the first step
of the spool's create, one durable task with the rename), the spool's state
writes, the seen index's commits and the local mailbox's deletes all run in the
durable pool, on a real reactor with real threads."""

from __future__ import annotations

import os
import sys
import threading

import pytest_twisted
from support.printer_fakes import FakeOutput, FakeQueue, fake_toolkit, make_site, message
from twisted.internet import reactor, task

from phaserlink.pop3_store.maildir import MaildirStore
from phaserlink.printer import journal
from phaserlink.printer.service import PrinterService

OURS = ("printer/spool.py", "printer/journal.py", "printer/retriever.py", "printer/local_source.py",
        "printer/intake.py")


@pytest_twisted.inlineCallbacks
def test_every_fsync_of_the_spool_path_runs_off_the_reactor_thread(tmp_path, monkeypatch):
    calls: list[tuple[str, bool]] = []  # (our caller, in the reactor thread)
    synced: list[str] = []  # the paths fsync'd
    real_fsync = os.fsync

    def fsync(fd):
        try:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename.replace(os.sep, "/")
            hit = next((o for o in OURS if name.endswith(o)), None)
            if hit:
                calls.append((hit, threading.current_thread() is threading.main_thread()))
                break
            frame = frame.f_back
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    real_write = journal.SeenIndex.write

    def write(self, records, now, sync=False):
        records = list(records)
        if records:
            calls.append(("seen index commit", threading.current_thread() is threading.main_thread()))
        return real_write(self, records, now, sync)

    monkeypatch.setattr(journal.SeenIndex, "write", write)

    site = make_site(tmp_path)
    store = MaildirStore(site.appliance.spool / "mail", list(site.printers))
    out = FakeOutput("ok")
    printers = PrinterService(site, store, FakeQueue(), reactor=reactor, tools=fake_toolkit(),
                              outputs={"lp": out})
    printers.startService()
    try:
        d = store.deliver(["lp"])
        d.write(message())
        d.commit()
        for _ in range(500):
            if out.sent and not [p for p in (site.appliance.spool / "jobs/lp").iterdir()
                                 if p.is_dir() and p.name != "incoming"]:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        assert len(out.sent) == 1
    finally:
        yield printers.stopService()
    where = {c for c, _ in calls}
    assert {"printer/spool.py", "seen index commit"} <= where, calls
    assert any("/jobs/lp/incoming/" in path for path in synced), synced  # the message, before it moved in
    assert [c for c in calls if c[1]] == []  # none in the reactor thread

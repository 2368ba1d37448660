"""Shutdown order (issue 7, item 9): the spool lock is released only after the
printers and the outbound queue stopped writing, and a running send gets a
bounded time to finish."""

from __future__ import annotations

import json

import pytest
from support.printer_fakes import FakeOutput, fake_toolkit, make_site, message
from twisted.application import service
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from phaserlink.durable import SpoolLock, SpoolLocked
from phaserlink.printer import jobs as J
from phaserlink.printer.dispatch import STOP_GRACE


def lock_is_held(spool) -> bool:
    probe = SpoolLock(spool)
    try:
        probe.acquire()
    except SpoolLocked:
        return True
    probe.release()
    return False


@pytest.fixture
def appliance_on_a_clock(tmp_path, monkeypatch):
    """The real makeService on a MemoryReactorClock, with a printer whose
    send hangs (the job is being sent when shutdown comes)."""
    from phaserlink import service as top_service
    from phaserlink.pop3_store import maildir
    from phaserlink.printer import output, service as printer_service

    # No thread pool on this reactor: deliveries make their file inline.
    monkeypatch.setattr(maildir.TmpFilePool, "_refill", lambda self: None)

    out = FakeOutput("hang")
    monkeypatch.setattr(output, "make_output", lambda *a, **k: out)
    monkeypatch.setattr(printer_service, "default_toolkit", fake_toolkit)
    site = make_site(tmp_path, notify="errors")
    clock = MemoryReactorClock()
    lock = SpoolLock(site.appliance.spool)
    site.appliance.spool.mkdir(parents=True, exist_ok=True)
    top = top_service.makeService(site, reactor=clock, spool_lock=lock)
    top.privilegedStartService()
    top.startService()
    clock.advance(0)
    return top, clock, out, site


def children(top, kind):
    return next(c for c in top if type(c).__name__ == kind)


def test_the_lock_is_held_until_the_running_send_and_the_queue_have_stopped(appliance_on_a_clock):
    top, clock, out, site = appliance_on_a_clock
    store = children(top, "StoreService").store
    queue = children(top, "OutboundQueue")
    order = []
    real_queue_stop = queue.stopService
    queue_stopped = defer.Deferred()

    def queue_stop():
        order.append("queue")
        real_queue_stop()
        return queue_stopped  # an attempt in flight

    queue.stopService = queue_stop
    real_store_stop = store.stop
    store.stop = lambda: (order.append("store"), real_store_stop())[1]

    delivery = store.deliver(["lp"])
    delivery.write(message())
    delivery.commit()
    for _ in range(5):
        clock.advance(0)
    assert out.pending is not None  # the job is at the printer
    done = top.stopService()
    clock.advance(0)
    assert lock_is_held(site.appliance.spool) and order == []  # the printer is still sending
    clock.advance(STOP_GRACE - 1)
    assert lock_is_held(site.appliance.spool) and order == []
    clock.advance(1)  # the grace is over: the send is cut, the job resumes at restart
    assert order == ["queue"] and lock_is_held(site.appliance.spool)
    queue_stopped.callback(None)
    assert order == ["queue", "store"]
    assert done.called and not lock_is_held(site.appliance.spool)
    [state] = [json.loads(p.read_text()) for p in (site.appliance.spool / "jobs/lp").glob("*/state.json")]
    assert state["state"] == J.PROCESSING  # not lost, not marked printed


def test_a_send_that_ends_within_the_grace_is_finished_before_the_lock_goes(appliance_on_a_clock):
    top, clock, out, site = appliance_on_a_clock
    store = children(top, "StoreService").store
    delivery = store.deliver(["lp"])
    delivery.write(message())
    delivery.commit()
    for _ in range(5):
        clock.advance(0)
    done = top.stopService()
    clock.advance(1)
    assert not done.called and lock_is_held(site.appliance.spool)
    out.finish()  # the printer acknowledges during shutdown
    clock.advance(0)
    assert done.called and not lock_is_held(site.appliance.spool)
    assert [d for _j, d in out.sent] == [b"%!PS\nshowpage\n"]
    assert list((site.appliance.spool / "jobs/lp").glob("*/state.json")) == []  # finished, not resent


class Stuck(service.Service):
    def __init__(self, name, log, d=None):
        self.name, self.log, self.d = name, log, d

    def stopService(self):
        super().stopService()
        self.log.append(self.name)
        return self.d


def test_parts_stop_one_after_another_and_a_stuck_one_is_waited_for_a_bounded_time(tmp_path):
    from phaserlink.service import STOP_TIMEOUT, ApplianceService

    clock = MemoryReactorClock()
    lock = SpoolLock(tmp_path)
    top = ApplianceService(clock, lock)
    log = []
    never = defer.Deferred()
    Stuck("store", log).setServiceParent(top)
    Stuck("printers", log, never).setServiceParent(top)
    Stuck("listener", log).setServiceParent(top)
    top.privilegedStartService()
    top.startService()
    done = top.stopService()
    assert log == ["listener", "printers"] and lock_is_held(tmp_path)
    clock.advance(STOP_TIMEOUT - 0.1)
    assert log == ["listener", "printers"] and lock_is_held(tmp_path)
    clock.advance(0.2)
    assert log == ["listener", "printers", "store"] and done.called and not lock_is_held(tmp_path)

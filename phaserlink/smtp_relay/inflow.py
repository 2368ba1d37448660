"""Inflow control: a new message waits at MAIL FROM while the disk is behind.

SMTP can take mail faster than the printer side can spool and print it
(bench/scale.py: 20 sessions sending flat out on two cores).  Without a
brake, every message it takes adds durable work (fsyncs, renames, state
writes: ``phaserlink.threads``) that the other jobs then wait behind, and
a job to an idle printer waits its turn at each of its durable steps
(docs/scale.md).  Postfix's answer is ``in_flow_delay``: when mail arrives
faster than it is delivered, pause up to that long before taking the next
message.  Here the measure is the ``durable`` pool's backlog, the work
waiting for a thread: jobs for a printer that is down or busy wait in their
printer's queue, not there, so they do not count; only work that is
competing for the disk now does.

A session at MAIL FROM asks :meth:`InflowGate.admit`: at or under the bound
and nobody waiting, it goes on at once (no timer, no cost).  Otherwise it
waits in line (first come, first served); every ``INFLOW_TICK`` one
waiting session is let go if the backlog is under the bound, and any that
waited ``in_flow_delay`` goes on regardless, so a session is never held
longer than that and mail is never refused for it.  ``in_flow_delay = 0``
turns it off.  The waiting is before the 250 of MAIL FROM: clients see it
as a slower server, as with Postfix.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet import defer

from phaserlink.limits import INFLOW_DURABLE_BACKLOG, INFLOW_TICK


class InflowGate:
    """Hold new messages while *backlog()* is over *bound*, each at most
    *max_delay* seconds (0: never)."""

    def __init__(self, reactor, backlog: Callable[[], int], max_delay: float,
                 bound: int = INFLOW_DURABLE_BACKLOG, tick: float = INFLOW_TICK):
        self.reactor = reactor
        self.backlog = backlog
        self.max_delay = max_delay
        self.bound = bound
        self.tick = tick
        self._waiting: deque[tuple[float, float, defer.Deferred]] = deque()  # (deadline, since, d)
        self._call = None
        #: Messages that waited, and their seconds in all (for logs and tests).
        self.delayed = 0
        self.delay_total = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self) -> defer.Deferred | None:
        """None: go on now.  Else a Deferred that fires with the seconds
        waited, once it is this session's turn (never errbacks)."""
        if self.max_delay <= 0 or (not self._waiting and self.backlog() <= self.bound):
            return None
        now = self.reactor.seconds()
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((now + self.max_delay, now, d))
        if self._call is None:
            self._call = self.reactor.callLater(self.tick, self._look)
        return d

    def _release(self, now: float) -> None:
        _deadline, since, d = self._waiting.popleft()
        self.delayed += 1
        self.delay_total += now - since
        d.callback(now - since)

    def _look(self) -> None:
        self._call = None
        now = self.reactor.seconds()
        waiting = self._waiting
        # Same max_delay for all: deadlines are in arrival order.
        while waiting and waiting[0][0] <= now:
            self._release(now)
        if waiting and self.backlog() <= self.bound:
            # One a look, not as many as there is room for: a released
            # session adds its work only once its DATA is in, so the
            # backlog does not show it yet; letting the room go at once
            # overshot (bench/scale.py: durable queue wait 28 ms, not 7).
            self._release(now)
        if waiting:
            self._call = self.reactor.callLater(self.tick, self._look)

    def stop(self) -> None:
        """Let every waiting session go (the server is stopping)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        now = self.reactor.seconds()
        while self._waiting:
            self._release(now)

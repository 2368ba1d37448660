"""Print quotas: jobs per sender per printer, jobs per hour per site (docs/trust.md).

``[printer:NAME] max_jobs_per_sender = 20/1h`` and ``[appliance]
max_jobs_per_hour = 200`` are sliding windows: a job counts from the moment
its message got its 250 until the window has passed.  Over a quota, RCPT
gets ``452 4.7.0``: temporary, so a legitimate sender's MTA retries later
and the job prints then; a flood only fills its own queue.

The counters survive a restart, also kill -9: a message to a printer or
site with a quota is counted, and the window written to
``<spool>/trust/quotas.json`` (atomically, in the ``durable`` pool, one
write in flight at a time; changes made meanwhile go in the next one),
before its 250 is sent (:meth:`Quotas.count` returns when it is on disk).
A failed write is logged and the message still gets its 250: it is
durable, and a quota never keeps a job from ever printing.  Memory is bounded: per key at most the quota's number
of times, at most :data:`MAX_TRACKED_SENDERS` keys (least recently used
dropped first).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger

from phaserlink.durable import write_atomic

log = Logger()

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    QUOTA_MAX_TRACKED_SENDERS as MAX_TRACKED_SENDERS,
    SITE_WINDOW,
)

STATE_VERSION = 1


class Quotas:
    """The counters of one site.  Used in the reactor thread only."""

    def __init__(self, path: Path | None, clock, durable=None):
        self.path = path
        self.clock = clock
        self.durable = durable  # pools_for(reactor).durable, or None to write inline
        self.site: list[float] = []
        self.senders: "OrderedDict[str, list[float]]" = OrderedDict()
        self._writing = False
        self._dirty = False
        self._waiting: list[defer.Deferred] = []  # callers of the write after the one in flight
        if path is not None:
            self._load()

    @staticmethod
    def key(printer: str, sender: str) -> str:
        return f"{printer}\0{sender.lower()}"

    def _load(self) -> None:
        assert self.path is not None
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warn("quotas: cannot read {path} ({e}); counting from zero", path=self.path, e=e)
            return
        if state.get("version") != STATE_VERSION:
            return
        self.site = [float(t) for t in state.get("site", [])]
        for key, times in state.get("senders", {}).items():
            self.senders[key] = [float(t) for t in times]

    # -- asking and counting ---------------------------------------------------------

    def _recent(self, times: list[float], window: float) -> list[float]:
        since = self.clock.seconds() - window
        return [t for t in times if t > since]

    def over_site(self, limit: int | None) -> float | None:
        """Seconds until the site may take a job again, None if it may now."""
        if limit is None:
            return None
        self.site = self._recent(self.site, SITE_WINDOW)
        if len(self.site) < limit:
            return None
        return self.site[-limit] + SITE_WINDOW - self.clock.seconds()

    def over_sender(self, printer: str, sender: str, rate: tuple[int, float] | None) -> float | None:
        """Seconds until *sender* may print on *printer* again, None if now."""
        if rate is None:
            return None
        limit, window = rate
        key = self.key(printer, sender)
        times = self._recent(self.senders.get(key, []), window)
        if times:
            self.senders[key] = times
        else:
            self.senders.pop(key, None)
        if len(times) < limit:
            return None
        return times[-limit] + window - self.clock.seconds()

    def count(self, printer: str, sender: str, rate: tuple[int, float] | None,
              site_limit: int | None) -> defer.Deferred:
        """Count a job; the Deferred fires once the counts are on disk
        (at once when neither quota applies: nothing to remember)."""
        if site_limit is None and rate is None:
            return defer.succeed(None)
        now = self.clock.seconds()
        if site_limit is not None:
            self.site.append(now)
            del self.site[:-site_limit]
        if rate is not None:
            key = self.key(printer, sender)
            times = self.senders.pop(key, [])
            times.append(now)
            self.senders[key] = times[-rate[0]:]
            while len(self.senders) > MAX_TRACKED_SENDERS:
                self.senders.popitem(last=False)
        return self._save()

    # -- persistence -------------------------------------------------------------------

    def _state(self) -> bytes:
        return json.dumps({"version": STATE_VERSION, "site": self.site,
                           "senders": dict(self.senders)}).encode()

    def _save(self) -> defer.Deferred:
        """Write the counts; fires when what they are now is on disk."""
        if self.path is None:
            return defer.succeed(None)
        if self._writing:
            self._dirty = True
            waiter: defer.Deferred = defer.Deferred()
            self._waiting.append(waiter)
            return waiter
        data, path = self._state(), self.path
        if self.durable is None:
            _write(path, data)
            return defer.succeed(None)
        self._writing = True

        def done(result):
            self._writing = False
            if self._dirty:
                self._dirty = False
                waiters, self._waiting = self._waiting, []

                def wake(_):
                    for w in waiters:
                        w.callback(None)

                self._save().addBoth(wake)
            return None

        d = self.durable(_write, path, data)
        d.addErrback(lambda f: log.failure("quotas: cannot save {path}", f, path=path))
        d.addBoth(done)
        return d


def _write(path: Path, data: bytes) -> None:
    os.makedirs(path.parent, exist_ok=True)
    write_atomic(path, data)

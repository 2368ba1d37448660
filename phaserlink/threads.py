"""The appliance's worker threads: three bounded pools, one per kind of work.

The reactor thread must never wait on a disk, a CPU-heavy computation or a
blocking lookup, and one kind of work must never queue behind another: an
attacker's flood of wrong AUTH passwords (PBKDF2: CPU) must not delay the
fsync that stands between an unrelated sender's end of DATA and its 250
(durability).  So there are three pools, each bounded, each with its own
queue (docs/threads.md):

- ``durable``: fsync, fdatasync, link, rename, unlink, small state writes:
  what stands between a message and its 250, a job and its next state;
- ``cpu``: PBKDF2 password checks, copying, extraction and reassembly of
  messages (work that grows with the input);
- ``lookup``: blocking lookups a library cannot do asynchronously (DNS in
  the sender-verification libraries, ``getaddrinfo``).

Use :func:`pools_for` with the reactor a part was given.  A reactor that has
no threads (``task.Clock``, ``MemoryReactor`` in unit tests) gets inline
pools, so the same code runs synchronously there.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, TypeVar
from weakref import WeakKeyDictionary

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

log = Logger()

T = TypeVar("T")

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    DURABLE_THREADS,
    CPU_THREADS,
    LOOKUP_THREADS,
)

POOL_NAMES = ("durable", "cpu", "lookup")


def run_inline(f: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
    """Run *f* now, in the caller's thread (reactors without threads)."""
    return defer.maybeDeferred(f, *args, **kwargs)


class WorkPools:
    """The three pools of one reactor.  Started on first use, stopped when
    the reactor shuts down (after the services have stopped: their last
    writes still get a thread)."""

    def __init__(self, reactor, sizes: dict[str, int] | None = None):
        self.reactor = reactor
        want = {"durable": DURABLE_THREADS, "cpu": CPU_THREADS, "lookup": LOOKUP_THREADS}
        want.update(sizes or {})
        self._threaded = hasattr(reactor, "callFromThread") and hasattr(reactor, "addSystemEventTrigger") \
            and hasattr(reactor, "getThreadPool")
        self._pools: dict[str, ThreadPool] = {}
        self._sizes = want
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def threaded(self) -> bool:
        return self._threaded

    def _pool(self, name: str) -> ThreadPool:
        pool = self._pools.get(name)
        if pool is None:
            with self._lock:
                pool = self._pools.get(name)
                if pool is None:
                    pool = ThreadPool(minthreads=0, maxthreads=self._sizes[name], name=f"phaserlink-{name}")
                    pool.start()
                    if not self._pools:
                        # 'after' shutdown: services' stopService Deferreds
                        # (which may still need a thread) have fired by then.
                        self.reactor.addSystemEventTrigger("after", "shutdown", self.stop)
                    self._pools[name] = pool
        return pool

    def run(self, name: str, f: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        if name not in self._sizes:
            raise KeyError(f"no thread pool named {name!r}")
        if not self._threaded or self._stopping:
            return run_inline(f, *args, **kwargs)
        return threads.deferToThreadPool(self.reactor, self._pool(name), f, *args, **kwargs)

    def durable(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        """fsync, link, rename, small state writes."""
        return self.run("durable", f, *args, **kwargs)

    def cpu(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        """PBKDF2, copying, extraction, reassembly."""
        return self.run("cpu", f, *args, **kwargs)

    def lookup(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        """Blocking lookups (DNS in libraries that only block)."""
        return self.run("lookup", f, *args, **kwargs)

    def runner(self, name: str) -> Callable[..., "defer.Deferred[Any]"]:
        """A ``blocking(f, *args)`` callable for parts that take one."""
        return lambda f, *args, **kwargs: self.run(name, f, *args, **kwargs)

    def backlog(self, name: str) -> int:
        """Tasks waiting for a thread of pool *name* (0 before its first
        use and on reactors without threads): cheap, for every MAIL FROM
        (phaserlink/smtp_relay/inflow.py)."""
        pool = self._pools.get(name)
        return 0 if pool is None else pool._team.statistics().backloggedWorkCount

    def stats(self) -> dict[str, dict[str, int]]:
        """Queue depth and busy threads per pool (for logs and metrics)."""
        out = {}
        for name in POOL_NAMES:
            pool = self._pools.get(name)
            if pool is None:
                out[name] = {"threads": 0, "busy": 0, "queued": 0}
            else:
                out[name] = {"threads": len(pool.threads), "busy": len(pool.working),
                             "queued": self.backlog(name)}
        return out

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.stop()


class PerReactor(Generic[T]):
    """One object per reactor, made on first use: the worker pools, the
    login rules' table.  Weak keys, so a test's reactor and what hangs on it
    go away together; reactors that cannot be weakly referenced are kept by
    id."""

    def __init__(self, make: Callable[[Any], T]):
        self.make = make
        self._weak: "WeakKeyDictionary[Any, T]" = WeakKeyDictionary()
        self._by_id: dict[int, T] = {}

    def __call__(self, reactor) -> T:
        try:
            found = self._weak.get(reactor)
        except TypeError:  # not weak-referenceable
            found = self._by_id.get(id(reactor))
        if found is None:
            found = self.make(reactor)
            try:
                self._weak[reactor] = found
            except TypeError:
                self._by_id[id(reactor)] = found
        return found


#: The :class:`WorkPools` of a reactor (one set per reactor).
pools_for: PerReactor[WorkPools] = PerReactor(WorkPools)

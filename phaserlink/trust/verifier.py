"""Where the verification work runs: worker processes or the lookup pool (docs/trust.md).

:class:`phaserlink.trust.gate.SenderGate` asks an :class:`IVerifier` for the
facts (SPF at RCPT; DKIM, DMARC, ARC and the header stamp at the end of
DATA) and decides with them itself.  Two implementations of the one seam:

- :class:`ProcessVerifier` (``[appliance] verify_processes = N``, default 1):
  N worker processes (:mod:`phaserlink.trust.worker`) started with
  ``reactor.spawnProcess`` and spoken to over their pipes, so the reactor
  only writes a request and reads an answer; the Python work of dkimpy and
  pyspf runs on another core instead of holding the reactor's GIL.  Each
  worker has its own resolver on the same ``dns_servers`` and its own TTL
  cache.  A worker that dies fails its pending requests (the SMTP session
  answers ``451 4.7.0``, the client retries) and is started again for the
  next request; one that does not answer within :data:`VERIFY_TIMEOUT` fails
  that request the same way.
- :class:`ThreadVerifier` (``verify_processes = 0``, and reactors without
  processes or threads: ``MemoryReactorClock`` in unit tests): the same
  functions in the ``lookup`` pool of :mod:`phaserlink.threads`, inline on
  a reactor without threads.

Either way the functions are those of :mod:`phaserlink.trust.stamp`, given
the stored message's path.  This module does not import them: with worker
processes the SMTP process never loads pyspf, dkimpy, authheaders and
dnspython (about 3.5 MB resident); the lookup pool imports them with its
first request.  Whether they are installed is checked at start all the
same (:func:`check_libraries`), so a missing one still stops twistd.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from phaserlink.limits import QUERY_TIMEOUT, VERIFY_RESTART_DELAY, VERIFY_STOP_TIMEOUT, VERIFY_TIMEOUT
from phaserlink.threads import pools_for
from phaserlink.trust import facts as V
from phaserlink.trust.worker import HEADER, frame, settings_arg

if TYPE_CHECKING:
    from phaserlink.trust.dns import Resolver

log = Logger()


class VerifierError(Exception):
    """The verification could not be done now (worker died, timed out or
    failed): the session answers 451 and the client retries."""


class IVerifier(Interface):
    """Runs the blocking verification steps off the reactor thread."""

    def spf(client_ip: str, mail_from: str, helo: str) -> "defer.Deferred[V.SPFResult]":
        """RFC 7208 check for the client, MAIL FROM (or HELO for <>)."""

    def examine(path: Path, skip: int, spf: "V.SPFResult | None", checks: V.Checks,
                trusted: frozenset, our_id: str,
                spf_query: "tuple[str, str, str] | None" = None) -> "defer.Deferred[V.Stamped]":
        """Verify the stored message at *path* (and SPF for *spf_query*
        ``(client_ip, mail_from, helo)`` if given) and stamp our
        Authentication-Results."""

    def insert(path: Path, offset: int, field: bytes) -> "defer.Deferred[tuple[int, int]]":
        """Insert a header field at *offset*; (new size, line ends added)."""


class _Calls:
    """The three calls in terms of one ``_call(operation, *args)``."""

    def _call(self, operation: str, *args) -> defer.Deferred:
        raise NotImplementedError

    def spf(self, client_ip, mail_from, helo):
        return self._call("spf", client_ip, mail_from, helo)

    def examine(self, path, skip, spf, checks, trusted, our_id, spf_query=None):
        return self._call("examine", str(path), skip, spf, checks, trusted, our_id, spf_query)

    def insert(self, path, offset, field):
        return self._call("insert", str(path), offset, field)


@implementer(IVerifier)
class ThreadVerifier(_Calls):
    """In this process, in the ``lookup`` pool (inline without threads).

    Without a *resolver*, one on *dns_servers* is made by the first
    request, in the pool's thread, which is also where the verification
    libraries are imported: not at start, and not in the reactor thread."""

    def __init__(self, reactor, resolver: "Resolver | None" = None, dns_servers=(),
                 timeout: float = QUERY_TIMEOUT):
        self.pools = pools_for(reactor)
        self._resolver = resolver
        self._servers = tuple(dns_servers)
        self._timeout = timeout
        self._lock = threading.Lock()

    @property
    def resolver(self) -> "Resolver":
        if self._resolver is None:
            with self._lock:  # the pool's threads may ask first at once: one resolver, one cache
                if self._resolver is None:
                    from phaserlink.trust.dns import Resolver

                    self._resolver = Resolver(self._servers, self._timeout)
        return self._resolver

    def _run(self, operation: str, *args):
        from phaserlink.trust import stamp

        return stamp.OPERATIONS[operation](self.resolver, *args)

    def _call(self, operation, *args):
        return self.pools.lookup(self._run, operation, *args)


class _Worker(protocol.ProcessProtocol):
    """One worker process and the requests it has not answered yet."""

    def __init__(self, number: int, clock):
        self.number = number
        self.clock = clock
        self.pending: dict[int, defer.Deferred] = {}
        self.buffer = bytearray()
        self.alive = True
        self.started = clock.seconds()
        self.lived = 0.0  # seconds it ran, once it ended
        self.failed_at_start = False
        self.ended: defer.Deferred = defer.Deferred()

    def send(self, request_id: int, operation: str, args: tuple, d: defer.Deferred) -> None:
        self.pending[request_id] = d
        self.transport.write(frame((request_id, operation, args)))

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            (n,) = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER.size + n:
                return
            body = bytes(self.buffer[HEADER.size:HEADER.size + n])
            del self.buffer[:HEADER.size + n]
            request_id, ok, result = _loads(body)
            d = self.pending.pop(request_id, None)
            if d is None:  # timed out already
                continue
            if ok:
                d.callback(result)
            else:
                d.errback(VerifierError(f"verifier worker {self.number}: {result}"))

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                log.warn("verifier worker {n}: {line}", n=self.number, line=line)

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        self.lived = self.clock.seconds() - self.started
        # Exited by itself right after its start (an import error, a broken
        # install), not killed by a signal (the OOM killer, an admin).
        self.failed_at_start = self.lived < VERIFY_RESTART_DELAY and getattr(reason.value, "signal", None) is None
        pending, self.pending = self.pending, {}
        if pending:
            log.error("verifier worker {n} ended with {k} request(s) unanswered: {why}",
                      n=self.number, k=len(pending), why=reason.getErrorMessage())
        elif not reason.check(error.ProcessDone):
            log.warn("verifier worker {n} ended: {why}", n=self.number, why=reason.getErrorMessage())
        for d in pending.values():
            d.errback(VerifierError(f"verifier worker {self.number} ended: {reason.getErrorMessage()}"))
        self.ended.callback(None)


def _loads(body: bytes):
    return pickle.loads(body)  # our own worker's answer (phaserlink.trust.worker)


@implementer(IVerifier)
class ProcessVerifier(_Calls):
    """*processes* worker processes; each request goes to the least busy one."""

    def __init__(self, reactor, dns_servers=(), processes: int = 1, timeout: float = QUERY_TIMEOUT):
        self.reactor = reactor
        self.settings = settings_arg(dns_servers, timeout)
        self.workers: list[_Worker | None] = [None] * processes
        self.ids = itertools.count(1)
        self.stopping = False
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        for i in range(len(self.workers)):
            try:
                self._worker(i)
            except (OSError, VerifierError) as e:
                log.error("verifier worker {n} not started: {e}", n=i + 1, e=e)

    def command(self) -> list[str]:
        """The worker's command line (this interpreter, this package)."""
        return [sys.executable, "-m", "phaserlink.trust.worker", self.settings]

    def _worker(self, i: int) -> _Worker:
        worker = self.workers[i]
        if worker is None or not worker.alive:
            if worker is not None and worker.failed_at_start \
                    and self.reactor.seconds() < worker.started + worker.lived + VERIFY_RESTART_DELAY:
                # It died at once (a broken install?): not a new process per
                # message; these fail (451) until the delay is over.
                raise VerifierError(f"verifier worker {i + 1} ended {worker.lived:.1f} s after it started; "
                                    f"not started again for {VERIFY_RESTART_DELAY:g} s (see the log)")
            worker = _Worker(i + 1, self.reactor)
            env = dict(os.environ)
            root = str(Path(__file__).resolve().parent.parent.parent)  # where phaserlink is imported from
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            argv = self.command()
            transport = self.reactor.spawnProcess(worker, argv[0], argv, env=env,
                                                  childFDs={0: "w", 1: "r", 2: "r"})
            log.info("verifier worker {n} started (pid {pid})", n=worker.number, pid=transport.pid)
            self.workers[i] = worker
        return worker

    def _call(self, operation, *args):
        if self.stopping:
            return defer.fail(VerifierError("the appliance is stopping"))
        i = min(range(len(self.workers)),
                key=lambda k: len(self.workers[k].pending) if self.workers[k] is not None else 0)
        try:
            worker = self._worker(i)
        except VerifierError as e:
            return defer.fail(e)
        except OSError as e:
            return defer.fail(VerifierError(f"cannot start a verifier worker: {e}"))
        request_id = next(self.ids)
        d: defer.Deferred = defer.Deferred()

        def timed_out() -> None:
            late = worker.pending.pop(request_id, None)
            if late is not None:
                log.error("verifier worker {n}: no answer to {op} within {t:g} s", n=worker.number,
                          op=operation, t=VERIFY_TIMEOUT)
                late.errback(VerifierError(f"no answer from the verifier within {VERIFY_TIMEOUT:g} s"))

        timer = self.reactor.callLater(VERIFY_TIMEOUT, timed_out)

        def settled(result):
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(settled)
        worker.send(request_id, operation, args, d)
        return d

    def stop(self) -> defer.Deferred:
        """Close the workers' input (they finish what they have and exit);
        kill those still running after :data:`VERIFY_STOP_TIMEOUT`."""
        self.stopping = True
        running = [w for w in self.workers if w is not None and w.alive]
        for w in running:
            w.transport.closeStdin()

        def kill() -> None:
            for w in running:
                if w.alive:
                    try:
                        w.transport.signalProcess("KILL")
                    except error.ProcessExitedAlready:
                        pass

        timer = self.reactor.callLater(VERIFY_STOP_TIMEOUT, kill)
        done = defer.DeferredList([w.ended for w in running])
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return done


#: What :mod:`phaserlink.trust.verify` and :mod:`phaserlink.trust.dns`
#: import (dkimpy, pyspf, authheaders and authres, dnspython).
LIBRARIES = ("dkim", "spf", "authheaders", "authres", "dns")


def check_libraries() -> None:
    """Raise the ModuleNotFoundError an import would for a verification
    library that is not installed, without importing any (they are only
    imported where the verification runs, maybe never in this process)."""
    for name in LIBRARIES:
        if sys.modules.get(name) is not None:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules)
            found = False
        if not found:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def verifier_for(site, reactor, resolver: "Resolver | None" = None) -> IVerifier:
    """Worker processes if the site wants them and the reactor can spawn
    them, else the lookup pool.  *resolver* is the pool's (made on first
    use when None); worker processes make their own with its time-out."""
    check_libraries()
    processes = site.appliance.verify_processes
    if processes > 0 and IReactorProcess.providedBy(reactor) and pools_for(reactor).threaded:
        timeout = resolver.timeout if resolver is not None else QUERY_TIMEOUT
        return ProcessVerifier(reactor, site.appliance.dns_servers, processes, timeout)
    return ThreadVerifier(reactor, resolver, site.appliance.dns_servers)


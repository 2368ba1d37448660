"""Pieces every network output shares: streaming a job file into a
transport, one-shot job protocols with a watchdog, connecting, and turning
connection errors into PrinterUnavailable.

Why a watchdog and not a fixed deadline: a 500 MB job to a slow printer
may rightly take an hour, but a printer that takes no byte and says nothing
for ``timeout`` seconds is hung.  Every sign of life (a chunk accepted by
the kernel, an ack, a status line) restarts the watchdog.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Callable

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IConsumer, IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .interfaces import (
    REASON_CONNECTING,
    REASON_TIMED_OUT,
    PrinterOutputError,
    PrinterUnavailable,
)

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    TRANSFER_CHUNK_SIZE as CHUNK_SIZE,
    CONNECT_TIMEOUT,
)

log = Logger()


class JobFileChanged(Exception):
    """The job file ended before the size announced for it (someone
    truncated the spool file): not a printer problem, a bug upstream."""


@implementer(IPullProducer)
class FileProducer:
    """Pull exactly *size* bytes of *file* into *consumer*, one chunk per
    ``resumeProducing``, so memory stays at one chunk whatever the job.

    ``done`` fires with the byte count when the last chunk was handed to
    the consumer (not yet necessarily sent), or fails if the file ends
    early.  *progress* is called after each chunk (the watchdog).
    """

    def __init__(self, file: BinaryIO, size: int, consumer: IConsumer,
                 progress: Callable[[], None] = lambda: None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.file, self.size, self.consumer = file, size, consumer
        self.progress, self.chunk_size = progress, chunk_size
        self.sent = 0
        self.done: Deferred[int] = Deferred()
        self._finished = False

    def start(self) -> Deferred[int]:
        if self.size == 0:
            self._finish(None)
        else:
            self.consumer.registerProducer(self, False)
        return self.done

    def resumeProducing(self) -> None:
        if self._finished:
            return
        data = self.file.read(min(self.chunk_size, self.size - self.sent))
        if not data:
            self._finish(Failure(JobFileChanged(
                f"job file ended after {self.sent} of {self.size} bytes")))
            return
        self.sent += len(data)
        self.consumer.write(data)
        self.progress()
        if self.sent >= self.size:
            self._finish(None)

    def stopProducing(self) -> None:
        """The transport went away mid-file: the protocol reports why."""
        if not self._finished:
            self._finished = True
            self.done.errback(Failure(error.ConnectionLost("transport stopped the file transfer")))

    def _finish(self, failure: Failure | None) -> None:
        self._finished = True
        if self.size:
            self.consumer.unregisterProducer()
        if failure is None:
            self.done.callback(self.sent)
        else:
            self.done.errback(failure)


def repeat_reader(path: os.PathLike, times: int) -> tuple[BinaryIO, int]:
    """Open *path* for reading; return (file, bytes to send) where the file
    reads the content *times* times in a row (copies on a raw printer)."""
    f = open(path, "rb")
    size = os.fstat(f.fileno()).st_size
    if times <= 1:
        return f, size
    return _Repeated(f, size, times), size * times


class _Repeated:
    """A read-only file that yields its content n times, seeking back."""

    def __init__(self, f: BinaryIO, size: int, times: int) -> None:
        self._f, self._size, self._left = f, size, times - 1

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if not data and self._left > 0 and self._size:
            self._left -= 1
            self._f.seek(0)
            data = self._f.read(n)
        return data

    def close(self) -> None:
        self._f.close()


class JobProtocol(Protocol):
    """A connection that carries exactly one job; ``finished`` fires with
    the OutputResult or fails with a PrinterOutputError.

    Subclasses call ``watch(seconds, what)`` whenever they start waiting on
    the printer, ``succeed``/``fail`` once, and implement ``lost(reason)``
    for a connection that ends before they decided.
    """

    def __init__(self, clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.finished: Deferred = Deferred(self._cancel)
        self.decided = False
        self._watchdog = None
        self._period = timeout
        self._waiting_for = ""

    # --- watchdog --------------------------------------------------------

    def watch(self, what: str, seconds: float | None = None) -> None:
        """(Re)start the watchdog: fail unless the printer shows life
        within *seconds* (default: the output's timeout)."""
        self.unwatch()
        self._waiting_for = what
        self._period = self.timeout if seconds is None else seconds
        self._watchdog = self.clock.callLater(self._period, self._timed_out)

    def alive(self) -> None:
        """The printer did something: restart the current wait."""
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(self._period)

    def unwatch(self) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None

    def _timed_out(self) -> None:
        self._watchdog = None
        self.timed_out(self._waiting_for)

    def timed_out(self, what: str) -> None:
        self.fail(PrinterUnavailable(
            f"printer did not respond for {self._period:g}s while {what}", REASON_TIMED_OUT))

    # --- outcome ---------------------------------------------------------

    def succeed(self, result) -> None:
        if self.decided:
            return
        self.decided = True
        self.unwatch()
        self.finished.callback(result)

    def fail(self, exc: Exception) -> None:
        """Decide for failure and drop the connection at once (RST): a job
        we gave up on must not be completed by the printer later."""
        if self.decided:
            return
        self.decided = True
        self.unwatch()
        if self.transport is not None:
            self.transport.abortConnection()
        self.finished.errback(Failure(exc))

    def _cancel(self, d: Deferred) -> None:
        # Deferred.cancel() errbacks with CancelledError after this returns.
        self.decided = True
        self.unwatch()
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self.unwatch()
        if not self.decided:
            self.lost(reason)

    def lost(self, reason: Failure) -> None:
        self.fail(PrinterUnavailable(
            f"connection to the printer lost: {reason.getErrorMessage()}", REASON_CONNECTING))


def describe_connect_error(failure: Failure, where: str) -> PrinterOutputError:
    """A failed connect -> PrinterUnavailable with a reason a human gets."""
    if failure.check(error.ConnectionRefusedError):
        why, ipp = "connection refused", REASON_CONNECTING
    elif failure.check(error.TimeoutError, error.UserError):
        why, ipp = "no answer to connect", REASON_TIMED_OUT
    elif failure.check(error.DNSLookupError):
        why, ipp = "host name not found", REASON_CONNECTING
    else:
        why, ipp = failure.getErrorMessage(), REASON_CONNECTING
    return PrinterUnavailable(f"cannot connect to {where}: {why}", ipp)


class _OneConnection(Factory):
    """Builds the one job protocol, silently: Twisted's ``connectProtocol``
    factory logs "Starting factory" and "Stopping factory" for every job,
    two of the nine log lines a printed job cost (bench/scale.py)."""

    noisy = False

    def __init__(self, protocol: Protocol):
        self.protocol_instance = protocol

    def buildProtocol(self, addr) -> Protocol:
        return self.protocol_instance


async def connect(reactor, host: str, port: int, protocol: JobProtocol, *,
                  timeout: float, bind_port: int | None = None) -> JobProtocol:
    """Connect *protocol* to host:port within *timeout*; bind the local
    side to *bind_port* when given.  Raises error.ConnectBindError if that
    port is taken, PrinterUnavailable for every other failure."""
    bind = ("", bind_port) if bind_port is not None else None
    if isIPAddress(host):  # no name to resolve: fail as soon as the connect fails
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout, bindAddress=bind)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout, bindAddress=bind)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout, bindAddress=bind)
    try:
        await endpoint.connect(_OneConnection(protocol))
    except (error.ConnectBindError, CancelledError):
        raise
    except PrinterOutputError:
        raise
    except Exception:
        raise describe_connect_error(Failure(), f"{host}:{port}") from None
    return protocol

"""RETR and TOP from disk to the wire in constant memory.

A message is read in :data:`CHUNK_SIZE` pieces, optionally cut by
:class:`TopFilter` (TOP), turned into wire form by the shared
:class:`~phaserlink.message.wire.DotStuffer` (so a "." line at any offset,
16384 included, is stuffed) and written to the transport by a streaming
producer that stops when the transport says its buffer is full
(``pauseProducing``) and goes on when it has drained.
"""

from __future__ import annotations

from typing import BinaryIO, Callable

from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from phaserlink.message.wire import DotStuffer

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    POP3_STREAM_CHUNK_SIZE as CHUNK_SIZE,
)

class TopFilter:
    """Pass the header, the blank line, and then *body_lines* body lines.

    Fed the stored message in arbitrary chunks; returns what to send of each.
    Keeps only two flags about the current line, never the line itself, so a
    header "line" of megabytes costs no memory.  Lines end in LF or CRLF.
    """

    def __init__(self, body_lines: int):
        self.in_headers = True
        self.remaining = body_lines
        self.done = False
        self._blank = True  # the current line so far is empty ...
        self._cr = False  # ... or is exactly one CR

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        pos = 0
        while self.in_headers:
            nl = data.find(b"\n", pos)
            segment = data[pos:] if nl < 0 else data[pos:nl]
            if segment:
                so_far = (b"\r" if self._cr else b"") + segment
                self._blank = self._blank and so_far in (b"", b"\r")
                self._cr = self._blank and so_far == b"\r"
            if nl < 0:
                return data
            pos = nl + 1
            if self._blank:
                self.in_headers = False
            self._blank, self._cr = True, False
        if self.remaining <= 0:
            self.done = True
            return data[:pos]
        count = data.count(b"\n", pos)
        if count < self.remaining:
            self.remaining -= count
            return data
        for _ in range(self.remaining):
            pos = data.index(b"\n", pos) + 1
        self.remaining = 0
        self.done = True
        return data[:pos]


@implementer(IPushProducer)
class MessageProducer:
    """Stream one stored message (RETR, or TOP with a filter) to a transport.

    ``start()`` registers with the transport and begins; *on_done* is called
    with True after the terminating ``.`` line was written, or with False if
    the connection went away first (``stopProducing``).  Each step writes one
    chunk and schedules the next with ``callLater(0)``, so one big RETR never
    starves the other sessions of the reactor.
    """

    def __init__(
        self,
        source: BinaryIO,
        transport,
        clock: IReactorTime,
        on_done: Callable[[bool], None],
        on_chunk: Callable[[], None] = lambda: None,
        top: TopFilter | None = None,
        chunk_size: int = CHUNK_SIZE,
    ):
        self.source = source
        self.transport = transport
        self.clock = clock
        self.on_done = on_done
        self.on_chunk = on_chunk
        self.top = top
        self.chunk_size = chunk_size
        self.stuffer = DotStuffer()
        self.paused = False
        self.finished = False
        self._call = None

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.paused and not self.finished:
            self._call = self.clock.callLater(0, self._step)

    def _step(self) -> None:
        self._call = None
        if self.finished or self.paused:
            return
        try:
            data = self.source.read(self.chunk_size)
        except OSError:
            # The file went bad under us: the client cannot be told in-band
            # once "+OK" went out, so drop the connection rather than send a
            # truncated message that looks complete.
            self._finish(False)
            self.transport.loseConnection()
            return
        if data and self.top is not None:
            data = self.top.feed(data)
            if self.top.done:
                self.transport.write(self.stuffer.feed(data))
                data = b""
        if data:
            self.transport.write(self.stuffer.feed(data))
            self.on_chunk()
            self._schedule()
            return
        self.transport.write(self.stuffer.finish())
        self._finish(True)

    def _finish(self, complete: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self.source.close()
        self.transport.unregisterProducer()
        self.on_done(complete)

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._finish(False)

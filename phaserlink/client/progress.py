"""Progress while a job is sent: a bar on a terminal, nothing in a pipe or a
cron job, ``INFO:`` lines for CUPS.

The sender only calls :meth:`Progress.start`, :meth:`Progress.advance` and
:meth:`Progress.finish`; which of these reporters listens is the caller's
choice, so the same send code serves the CLI and the CUPS backend.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

# Limits live in phaserlink/client/limits.py (one place per side); the names stay importable here.
from phaserlink.client.limits import (  # noqa: E402
    BAR_DELAY,
)

"""Seconds before a bar appears: a job sent faster than this shows nothing."""
BAR_REFRESH = 0.1
"""At most this often is the bar redrawn (seconds)."""
BAR_WIDTH = 30
CUPS_STEP = 10
"""The CUPS backend reports every this many percent."""


class Progress:
    """Silent progress: the interface, and what is used off a terminal."""

    def start(self, label: str, total: int) -> None:
        """A new unit of work (one message or fragment) of *total* bytes."""

    def advance(self, count: int) -> None:
        """*count* more bytes went out."""

    def finish(self) -> None:
        """The unit is done (or failed): clean up the display."""


class TerminalBar(Progress):
    """``label [#####-----]  45%  12.3/30.0 MB`` on one redrawn line."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.clock = clock
        self.label = ""
        self.total = 0
        self.done = 0
        self.began = 0.0
        self.drawn_at = 0.0
        self.visible = False

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, max(total, 1), 0
        self.began = self.clock()
        self.drawn_at = 0.0
        self.visible = False

    def advance(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if now - self.began < BAR_DELAY or now - self.drawn_at < BAR_REFRESH:
            return
        self.drawn_at = now
        self.draw()

    def draw(self) -> None:
        fraction = min(self.done / self.total, 1.0)
        filled = int(fraction * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        line = (f"\r{self.label} [{bar}] {fraction * 100:3.0f}%  "
                f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB")
        self.stream.write(line)
        self.stream.flush()
        self.visible = True

    def finish(self) -> None:
        if self.visible:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
        self.visible = False


class CupsProgress(Progress):
    """``INFO:`` lines on stderr, which CUPS shows as the printer's state."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.label = ""
        self.total = 1
        self.done = 0
        self.reported = -1

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.reported = label, max(total, 1), 0, -1
        self.say(0)

    def advance(self, count: int) -> None:
        self.done += count
        percent = min(100, self.done * 100 // self.total)
        if percent // CUPS_STEP > self.reported // CUPS_STEP:
            self.say(percent)

    def say(self, percent: int) -> None:
        self.reported = percent
        self.stream.write(f"INFO: Sending {self.label}: {percent}%\n")
        self.stream.flush()


def for_stream(stream: TextIO | None = None) -> Progress:
    """A bar if *stream* (default stderr) is a terminal, else silence."""
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return TerminalBar(stream) if tty else Progress()

"""The DATA phase of SMTP, scanned a whole chunk at a time.

Twisted's ESMTP hands every line of a message to Python on its own, which
caps it near 20 MB/s.  This reader never loops over lines: each chunk the
transport delivers is searched with ``bytes.find``/``count``/``replace``
(C speed), and only the part up to the last complete line is processed; the
partial last line is held for the next chunk.  So the outcome does not depend
on how the client's bytes were cut into packets.

What it decides (RFC 5321 4.5.2, 2.3.8, 4.5.3.1):

* The message ends at the first ``CRLF . CRLF`` (or a ``. CRLF`` first line).
  Nothing else ends it: not ``LF . LF``, ``LF . CRLF``, ``CRLF . LF`` nor
  bare CRs.  Whatever happens inside the message (too big, a line too long,
  a bad line end, a disk error) the reader only *records* a refusal and keeps
  draining to that end, so message text is never read as commands
  (the SMTP smuggling and the Twisted "500 then commands" classes).
* A bare LF or bare CR (one not part of a CRLF pair) anywhere in the message
  refuses it (554 5.6.0).  The store keeps LF line ends, so a bare LF could
  not be told from a line end on disk, and a downstream MTA may read it as
  one: refusing is the only answer that cannot be smuggled through.
* NUL bytes are kept as they are: the store is binary-safe and it is not a
  line-structure question.
* A line longer than ``max_line`` bytes including its CRLF refuses the
  message (552 5.5.2 — the message cannot be passed on as it is), after the
  drain.  An endless line is not buffered: beyond ``max_line`` the partial
  line is thrown away and only a trailing CR is kept to find its end.
* Size is counted after dot-unstuffing with CRLF line ends (RFC 1870's
  measure), whatever the client declared in ``MAIL FROM SIZE=``; over
  ``max_size`` refuses with 552 5.3.4.
* More than ``MAX_RECEIVED`` ``Received:`` header fields is a mail loop
  (RFC 5321 6.3): 554 5.4.6.
* A message with several of these faults gets one reply whatever the
  packet cuts: a long line before a bare line end before too big
  (``_PRECEDENCE``); the reader goes on checking after the first fault.

The data handed to ``write`` is dot-unstuffed with LF line ends, the form
the Maildir store keeps.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_RECEIVED,
)

END_OF_DATA = b"\r\n.\r\n"


@dataclass(frozen=True)
class Refusal:
    """A reply that ends a message transaction without accepting it."""

    code: int
    status: str
    text: str

    def line(self) -> bytes:
        return f"{self.code} {self.status} {self.text}\r\n".encode()


TOO_BIG = Refusal(552, "5.3.4", "Error: message too big for system")
LINE_TOO_LONG = Refusal(552, "5.5.2", "Error: message has a line longer than {max_line} bytes (RFC 5321 4.5.3.1.6)")
BARE_LINE_END = Refusal(554, "5.6.0", "Error: bare CR or LF in message; lines must end with CRLF (RFC 5321 2.3.8)")
MAIL_LOOP = Refusal(554, "5.4.6", "Error: too many hops (more than {hops} Received: headers), mail loop?")
STORE_FAILED = Refusal(451, "4.3.0", "Error: cannot store the message now, try again later")
#: RFC 3463 4.3.1 "mail system full": the disk (or a quota) ran out while
#: storing.  Temporary: the client keeps the message and tries again.
DISK_FULL = Refusal(451, "4.3.1", "Error: insufficient system storage, try again later")
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def store_failed(error: OSError | None) -> Refusal:
    """The reply for a message the store could not take: always a 451,
    never 250 and never 5xx (docs/smtp.md); 4.3.1 when the disk is full."""
    if error is not None and error.errno in DISK_FULL_ERRNOS:
        return DISK_FULL
    return STORE_FAILED

_PRECEDENCE = (LINE_TOO_LONG.status, BARE_LINE_END.status, TOO_BIG.status)
"""Which refusal is given when a message has several faults (first wins)."""


def _rank(refusal: Refusal) -> int:
    return _PRECEDENCE.index(refusal.status) if refusal.status in _PRECEDENCE else len(_PRECEDENCE)


class DataReader:
    """Scan the DATA phase of one message; feed chunks as they arrive.

    :param write: receives the message (unstuffed, LF line ends) in pieces.
        If it raises ``OSError`` the message is refused with 451 (4.3.1 for
        a full disk) and ``write`` is not called again.
    """

    def __init__(self, write: Callable[[bytes], None], max_size: int, max_line: int):
        self._write: Callable[[bytes], None] | None = write
        self.max_size = max_size
        self.max_line = max_line
        self.size = 0
        self.received_headers = 0
        self.in_headers = True
        self.refusal: Refusal | None = None
        self.error: OSError | None = None
        self._pending = b""
        self._line_start = True

    def refuse(self, refusal: Refusal) -> None:
        """Record a reason to refuse; stop writing from now on.

        Of several reasons the one ranked first in ``_PRECEDENCE`` wins,
        whatever order they were met in, so the reply does not depend on
        where the client's packets were cut (found by tests/test_fuzz_data.py).
        """
        if self.refusal is None or _rank(refusal) < _rank(self.refusal):
            self.refusal = refusal
        self._write = None

    def verdict(self) -> Refusal | None:
        """After the end: why the message must be refused, or None."""
        if self.refusal is None and self.received_headers > MAX_RECEIVED:
            self.refusal = Refusal(MAIL_LOOP.code, MAIL_LOOP.status, MAIL_LOOP.text.format(hops=MAX_RECEIVED))
        return self.refusal

    def feed(self, chunk: bytes) -> bytes | None:
        """Take more bytes.  None: the message goes on.  Otherwise the
        message has ended, and the bytes after its final ``.`` line are
        returned (commands pipelined after it), possibly ``b""``."""
        if self._pending:
            data = self._pending + chunk
            self._pending = b""
        else:
            data = chunk
        if self._line_start and data[:3] == b".\r\n":
            return data[3:]
        end = data.find(END_OF_DATA)
        if end >= 0:
            self._lines(data[: end + 2])
            return data[end + 5 :]
        cut = data.rfind(b"\r\n")
        if cut >= 0:
            self._lines(data[: cut + 2])
            self._line_start = True
            rest = data[cut + 2 :]
        else:
            rest = data
        if len(rest) > self.max_line:
            # A line already longer than allowed: do not keep it, only what
            # may begin the CRLF that ends it (rest holds no CRLF, so any
            # LF in it, or CR before its end, is bare).
            if b"\n" in rest or b"\r" in rest[:-1]:
                self.refuse(BARE_LINE_END)
            self._overlong()
            self._line_start = False
            self._pending = b"\r" if rest.endswith(b"\r") else b""
        else:
            self._pending = rest
        return None

    def _overlong(self) -> None:
        self.refuse(Refusal(LINE_TOO_LONG.code, LINE_TOO_LONG.status, LINE_TOO_LONG.text.format(max_line=self.max_line)))

    def _lines(self, body: bytes) -> None:
        """Whole lines: starts at a line start, ends with CRLF, no end mark."""
        if self.refusal is not None and _rank(self.refusal) == 0:
            return  # refused for the first-ranked reason: only the end matters now
        # Deleting every CR is the cheapest way to LF line ends (translate is
        # several times faster than replace), and it is exact only when every
        # CR and every LF belong to a CRLF pair: check that by counting.
        n = len(body)
        lf_body = body.translate(None, b"\r")
        crlf = body.count(b"\r\n")
        if n - len(lf_body) != crlf or lf_body.count(b"\n") != crlf:
            self.refuse(BARE_LINE_END)  # and go on: a long line outranks it
        limit = self.max_line
        if n > limit:
            # Every window of `limit` bytes that starts a line must hold a
            # CRLF (a bare LF ends no line).
            # Jumping to the last LF of each window checks all lines in about
            # n / limit C-level searches instead of one Python step per line.
            p = 0
            while n - p > limit:
                q = body.rfind(b"\r\n", p, p + limit)
                if q < 0:
                    self._overlong()
                    return
                p = q + 2
        if self._write is None:
            return  # refused: the checks above only decide which reply
        # Unstuff (RFC 5321 4.5.2) on the LF form: with no bare LF, "\n." is
        # exactly a line that starts with a dot.
        if lf_body[:1] == b".":
            lf_body = lf_body[1:]
        lf_body = lf_body.replace(b"\n.", b"\n")
        self.size += len(lf_body) + crlf  # RFC 1870 counts CRLF line ends
        if self.size > self.max_size:
            self.refuse(TOO_BIG)
            return
        if self.in_headers:
            self._headers(lf_body)
        try:
            self._write(lf_body)
        except OSError as e:
            self.error = e
            self.refuse(store_failed(e))

    def _headers(self, lf_body: bytes) -> None:
        """Count Received: fields up to the first empty line (LF form; the
        piece starts at a line start, so no field is cut in two)."""
        if lf_body[:1] == b"\n":
            self.in_headers = False
            return
        end = lf_body.find(b"\n\n")
        if end >= 0:
            self.in_headers = False
            lf_body = lf_body[: end + 1]
        self.received_headers += (b"\n" + lf_body.lower()).count(b"\nreceived:")

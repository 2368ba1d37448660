"""Stored message -> wire form: CRLF line ends and dot-stuffing, streaming.

SMTP DATA (RFC 5321 4.5.2) and POP3 RETR (RFC 1939 3) both send a message as
lines ending in CRLF, with a "." doubled at the start of any line, ended by
``.<CRLF>``.  Twisted stuffs each chunk on its own, so a "." line that falls
on a chunk boundary is not stuffed and ends the message early; this stuffer
carries its state across chunks, so the result does not depend on how the
input was cut.

Input may have LF or CRLF line ends (a CR-LF pair split across two chunks is
handled); output always has CRLF.  Bare CRs inside a line pass through.
"""

from __future__ import annotations


class DotStuffer:
    """Feed message data in any chunks; get wire bytes back."""

    def __init__(self) -> None:
        self._line_start = True
        self._held_cr = False

    def feed(self, data: bytes) -> bytes:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held_cr = True
        if not data:
            return b""
        data = data.replace(b"\r\n", b"\n")
        if self._line_start and data[:1] == b".":
            data = b"." + data
        data = data.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
        self._line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        """The tail: a held CR, a final CRLF if missing, and the ``.`` line."""
        tail = b""
        if self._held_cr:
            # A lone CR at the very end: keep it as part of the last line.
            tail = b"\r"
            self._held_cr = False
            self._line_start = False
        if not self._line_start:
            tail += b"\r\n"
        self._line_start = True
        return tail + b".\r\n"


def stuff(data: bytes) -> bytes:
    """Whole-buffer convenience for tests and small messages."""
    s = DotStuffer()
    return s.feed(data) + s.finish()

"""Waiting for smtp-sink to *finish* saving messages.

smtp-sink creates a message's file when the transaction starts and fills it
as DATA arrives, so a file that exists may still be half written (a test
that read it then saw a truncated message now and then).  A finished dump
ends with smtp-sink's own empty line and stops growing.
"""

from __future__ import annotations

import time

from support.smtp_sink import SinkMessage, SmtpSink

SETTLE = 0.15  # seconds a file must keep its size to count as finished


def saved(sink: SmtpSink, count: int, timeout: float = 15.0) -> list[SinkMessage]:
    """The first *count* (or more) messages, each completely written."""
    deadline = time.monotonic() + timeout
    sizes: dict[str, int] = {}
    while time.monotonic() < deadline:
        paths = [p for p in sink.dump_dir.iterdir() if p.is_file()]
        now = {str(p): p.stat().st_size for p in paths}
        done = [p for p in paths if now[str(p)] and now[str(p)] == sizes.get(str(p))
                and p.read_bytes().endswith(b"\n\n")]
        if len(done) >= count and len(done) == len(paths):
            return sink.messages()
        sizes = now
        time.sleep(SETTLE)
    raise TimeoutError(f"smtp-sink finished {len(sink.messages())} of {count} messages")

"""The verification work on a stored message's file, by path (docs/trust.md).

These are the blocking steps of sender verification, written so that they
need nothing but picklable arguments and a :class:`Resolver`: the file's
path, not its bytes, and not the SMTP session.  So the same functions run in
a verifier worker process (:mod:`phaserlink.trust.worker`, the default: the
RSA and canonicalization work of dkimpy then does not share the SMTP
reactor's GIL) or in the ``lookup`` thread pool (``verify_processes = 0``,
and reactors without processes in unit tests).

- :func:`check_spf` at RCPT;
- :func:`examine_file` at the end of DATA: read the message's header block
  back (the body only when a signature needs it), verify it
  (:func:`phaserlink.trust.verify.examine`) and rewrite its header block in
  place: our Authentication-Results first, forged ones of our authserv-id
  and any ``X-PhaserLink-Hold`` removed.  None of this depends on the
  decision, so one trip to the worker does it all;
- :func:`insert_field`: the hold field, written after ours when the
  decision (made in the SMTP process, :mod:`phaserlink.trust.gate`) holds
  the message: rare, so a second trip.

Who may print is not decided here: this module only finds facts and writes
the header that records them.
"""

from __future__ import annotations

import os
from pathlib import Path

from phaserlink.trust import headers as H
from phaserlink.trust import verify as V
from phaserlink.trust.dns import Resolver
from phaserlink.trust.facts import Stamped  # the answer's class, readable without the libraries
from phaserlink.trust.hold import HOLD_FIELD


def check_spf(resolver: Resolver, client_ip: str, mail_from: str, helo: str) -> V.SPFResult:
    return V.check_spf(resolver, client_ip, mail_from, helo)


#: What one piece of a body being moved may hold in memory.
MOVE_CHUNK = 1 << 20
#: How much of a message is read at a time while looking for the end of its header block.
HEAD_STEP = 64 * 1024


def read_head(path: str | Path, limit: int, step: int = HEAD_STEP) -> bytes:
    """The file's beginning up to its first empty line (the end of the
    header block) or *limit* bytes, whichever comes first, read *step*
    bytes at a time: a mail's usual few KB of header cost a few KB."""
    data = bytearray()
    with open(path, "rb") as f:
        while len(data) < limit:
            chunk = f.read(min(step, limit - len(data)))
            if not chunk:
                break
            data += chunk
            end = data.find(b"\n\n", max(len(data) - len(chunk) - 1, 0))
            if end >= 0:
                del data[end + 2:]
                break
    return bytes(data)


def _write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _rewrite(path: Path, old_len: int, new_head: bytes) -> int:
    """Write *new_head* in place of the first *old_len* bytes of the file
    and return its new size.  The rest of the file moves by the difference
    in pieces of MOVE_CHUNK (from the end when the head grows, from the
    start when it shrinks), so the body is never in memory whole.  In
    place: the SMTP session's open descriptor is the one it fsyncs and
    links.  Not yet committed (a Maildir tmp file), so a crash leaves only
    a tmp file."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        delta = len(new_head) - old_len
        if delta > 0:
            pos = size
            while pos > old_len:
                start = max(old_len, pos - MOVE_CHUNK)
                _write_at(fd, os.pread(fd, pos - start, start), start + delta)
                pos = start
        elif delta < 0:
            pos = old_len
            while pos < size:
                chunk = os.pread(fd, min(MOVE_CHUNK, size - pos), pos)
                if not chunk:
                    break
                _write_at(fd, chunk, pos + delta)
                pos += len(chunk)
            os.ftruncate(fd, size + delta)
        _write_at(fd, new_head, 0)
    finally:
        os.close(fd)
    return size + delta


def examine_file(resolver: Resolver, path: str, skip: int, spf: V.SPFResult | None, checks: V.Checks,
                 trusted: frozenset[str], our_id: str,
                 spf_query: tuple[str, str, str] | None = None) -> Stamped:
    """Verify the stored message at *path* (LF line ends; its first *skip*
    bytes are our Return-Path and Received lines, which the sender never
    signed) and stamp our Authentication-Results into it.

    Only the header block is read, unless a DKIM signature or an ARC set
    needs the whole message (:func:`phaserlink.trust.verify.examine`).

    *spf_query* ``(client_ip, mail_from, helo)``: SPF was not needed at RCPT
    (no ``sender_auth = spf``-only printer), so it is checked here, in the
    same trip, before DKIM."""
    if spf is None and spf_query is not None:
        spf = V.check_spf(resolver, *spf_query)
    head = read_head(path, skip + H.MAX_HEADER_BLOCK + 1)
    examined = V.examine(resolver, head, skip, spf, checks, trusted, our_id, whole=Path(path).read_bytes)
    ours = examined.ours
    field = V.results_field(our_id, examined.evidence)
    fields = [f for i, f in enumerate(examined.fields) if i < ours or f.name != HOLD_FIELD]
    new_head = H.rewrite_head(fields, our_id, field, keep_first=ours)
    size = _rewrite(Path(path), examined.head_len, new_head)
    delta = new_head.count(b"\n") - head.count(b"\n", 0, examined.head_len)
    subject = next((f.value for f in examined.fields[ours:] if f.name == "subject"), "")
    return Stamped(examined.evidence, size, delta, new_head.find(field) + len(field), subject)


def insert_field(path: str, offset: int, field: bytes) -> tuple[int, int]:
    """Insert the header *field* at *offset* of the file; (new size, line ends added)."""
    with open(path, "rb") as f:
        head = f.read(offset)
    size = _rewrite(Path(path), offset, head + field)
    return size, field.count(b"\n")


#: What a verifier runs, by name: the worker process's whole repertoire.
OPERATIONS = {
    "spf": check_spf,
    "examine": examine_file,
    "insert": lambda _resolver, *args: insert_field(*args),
}

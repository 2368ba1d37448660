"""Issue 8 acceptance: the Authentication-Results rule holds for every
printer, also one that verifies nothing (``sender_auth = none``): our
field first, a forged one carrying our authserv-id removed, and the
console's job ``auth`` is ours, never the forger's."""

from __future__ import annotations

from pathlib import Path

from phaserlink.printer.toolkit import inspect_message
from support.smtp import Session, make_site, mailbox_files
from test_trust_smtp import PRINTERS, send


def test_a_forged_pass_with_our_id_is_removed_on_a_none_printer_too(tmp_path):
    site = make_site(tmp_path / "site", "", PRINTERS)
    forged = "Authentication-Results: phaserlink.test; dmarc=pass header.from=good.test\r\n"
    msg = (f"From: <x@anywhere.test>\r\nTo: open@phaserlink.test\r\nSubject: forged\r\n{forged}\r\nbody\r\n").encode()
    reply = send(site, "x@anywhere.test", "open@phaserlink.test", msg, session=Session(site))
    assert reply.startswith(b"250 "), reply
    (copy,) = mailbox_files(site, "open")
    head = copy.split(b"\n\n")[0]
    assert b"dmarc=pass header.from=good.test" not in head, head
    assert head.count(b"Authentication-Results: phaserlink.test") <= 1
    path = tmp_path / "copy.eml"
    path.write_bytes(copy)
    auth = inspect_message(Path(path), authserv_id="phaserlink.test").auth
    assert auth is None or "dmarc=pass" not in auth, auth

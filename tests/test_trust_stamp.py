"""The stamp's file work (phaserlink/trust/stamp.py): the header block is
read without the body, and a new head goes in front of a body that is moved
in pieces, in place (the SMTP session's descriptor stays the file's)."""

from __future__ import annotations

import os

import pytest

from phaserlink.trust import stamp

BODY = bytes(range(256)) * 4096 + b"\nend\n"  # 1 MiB and a bit: more than one piece below


def test_the_head_is_read_up_to_its_end_only(tmp_path):
    path = tmp_path / "msg"
    path.write_bytes(b"Subject: hi\nTo: a@b\n\n" + BODY)
    assert stamp.read_head(path, 1 << 20, step=5) == b"Subject: hi\nTo: a@b\n\n"
    assert stamp.read_head(path, 8) == b"Subject:"
    path.write_bytes(b"Subject: no body and no empty line\n")
    assert stamp.read_head(path, 1 << 20) == b"Subject: no body and no empty line\n"


@pytest.mark.parametrize("new_head", [
    b"Authentication-Results: x; none\nSubject: hi\nTo: a@b\n",  # longer: the body moves back
    b"Subject: hi\nTo: c@d\n",  # the same length: written in place
    b"S: h\n",  # shorter: the body moves forward, the file is cut
])
def test_a_new_head_goes_in_front_of_the_body_in_place(tmp_path, monkeypatch, new_head):
    monkeypatch.setattr(stamp, "MOVE_CHUNK", 4096 + 17)
    path = tmp_path / "msg"
    old_head = b"Subject: hi\nTo: a@b\n"
    path.write_bytes(old_head + b"\n" + BODY)
    inode = os.stat(path).st_ino
    size = stamp._rewrite(path, len(old_head), new_head)
    assert path.read_bytes() == new_head + b"\n" + BODY
    assert size == os.stat(path).st_size and os.stat(path).st_ino == inode


def test_the_hold_field_is_inserted_after_ours(tmp_path):
    path = tmp_path / "msg"
    path.write_bytes(b"A: 1\nB: 2\n\n" + BODY)
    size, lines = stamp.insert_field(str(path), len(b"A: 1\n"), b"X-Hold: yes\n")
    assert path.read_bytes() == b"A: 1\nX-Hold: yes\nB: 2\n\n" + BODY
    assert (size, lines) == (os.stat(path).st_size, 1)

"""No silent drops at intake (issue 7, item 5): an unreadable header and a
message/partial set that can never complete each get a job aborted at once
and a status mail that says exactly what was wrong."""

from __future__ import annotations

import pytest
from support import printer_fakes
from support.printer_fakes import Rig, make_site, message
from twisted.logger import globalLogPublisher

from phaserlink.printer.intake import MAX_PARTS
from phaserlink.printer.toolkit import inspect_message, sender_from_prefix


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path, make_site(tmp_path))


@pytest.fixture
def real_header_limits(monkeypatch):
    """The fake toolkit's inspect, behind the real header reader's limits."""
    fake = printer_fakes.fake_inspect

    def inspect(path):
        inspect_message(path)  # raises MimeError past MAX_HEADER_BYTES
        return fake(path)

    monkeypatch.setattr(printer_fakes, "fake_inspect", inspect)


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def huge_header(sender_first=True, sender="alice@example.com", size=300 * 1024) -> bytes:
    pad = b"".join(b"X-Padding-%d: %s\n" % (i, b"x" * 70) for i in range(size // 85))
    top = f"From: {sender}\nSubject: Report\nMessage-ID: <big@example.com>\n".encode()
    head = top + pad if sender_first else pad + top
    return head + b"\n%!PS\nshowpage\n"


def text_of(events) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)


def test_a_300k_header_is_aborted_and_the_sender_told_why(rig, real_header_limits):
    rig.start()
    rig.deliver(huge_header())
    assert rig.outputs["lp"].sent == [] and rig.job_dirs() == [] and rig.mailbox() == []
    [mail] = rig.queue.messages
    assert mail.recipients == ["alice@example.com"]
    assert mail.field("event") == "failed" and mail.field("state") == "aborted"
    assert mail.field("reasons") == "['document-format-error']"
    assert "Reason: the message's header could not be read: header section is longer than 262144 bytes" \
        in mail.text


def test_a_huge_header_with_no_findable_sender_is_logged_clearly(rig, real_header_limits, logged):
    rig.start()
    rig.deliver(huge_header(sender_first=False))
    assert rig.outputs["lp"].sent == [] and rig.queue.messages == [] and rig.mailbox() == []
    assert "its header could not be read (header section is longer than 262144 bytes) and no From: or " \
           "Return-Path: was found in its first bytes, so nobody can be told" in text_of(logged)


def test_a_huge_header_from_a_stranger_gets_no_mail(rig, real_header_limits):
    rig.start()
    rig.deliver(huge_header(sender="mallory@evil.example"))
    assert rig.queue.messages == [] and rig.outputs["lp"].sent == [] and rig.mailbox() == []


def test_the_sender_is_found_in_a_bounded_prefix(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"Return-Path: <bob@example.com>\nReceived: by x\n" + huge_header(sender_first=False))
    assert sender_from_prefix(path) == "bob@example.com"  # From: is past the prefix
    path.write_bytes(huge_header())
    assert sender_from_prefix(path) == "alice@example.com"
    path.write_bytes(huge_header(sender_first=False))
    assert sender_from_prefix(path) is None


def fragment(pid, n, total, body=b"x\n", **kw):
    return message(msgid=f"<frag{n}.{pid}@example.com>", X_Fake_Partial=f"{pid} {n} {total}", body=body, **kw)


def failed_mail(rig):
    [mail] = [m for m in rig.queue.messages if m.field("event") == "failed"]
    assert mail.field("state") == "aborted"
    assert mail.field("reasons") == "['document-format-error', 'job-data-insufficient']"
    return mail.text


@pytest.mark.parametrize("n, total, why", [
    (1, 0, "fragment 1 says the job has 0 parts"),
    (1, MAX_PARTS + 1, f"fragment 1 says the job has {MAX_PARTS + 1} parts; at most {MAX_PARTS} are accepted"),
    (5, 3, "fragment 5 says the job has only 3 parts"),
    (MAX_PARTS + 1, "?", f"a fragment says it is part {MAX_PARTS + 1}; part numbers run from 1 to at most"),
])
def test_an_impossible_fragment_fails_its_set_at_once_and_says_why(rig, n, total, why):
    rig.start()
    rig.deliver(fragment("bad", n, total))
    # At once: no partial_timeout (1 h) passed.
    assert rig.job_dirs() == [] and rig.mailbox() == [] and rig.outputs["lp"].sent == []
    assert f"Reason: the parts of this split job do not fit together: {why}" in failed_mail(rig)
    # The rest of the set is dropped, not printed and not answered again.
    mails = len(rig.queue.messages)
    rig.deliver(fragment("bad", 2, 2))
    rig.deliver(fragment("bad", 1, 2))
    assert rig.job_dirs() == [] and rig.mailbox() == [] and rig.outputs["lp"].sent == []
    assert len(rig.queue.messages) == mails


def test_fragments_disagreeing_on_the_total_fail_the_set_at_once(rig):
    rig.start()
    rig.deliver(fragment("dis", 1, 3))
    rig.deliver(fragment("dis", 2, 4))
    assert rig.job_dirs() == [] and rig.mailbox() == []
    assert "fragment 2 says the job has 4 parts, an earlier fragment said 3" in failed_mail(rig)
    rig.deliver(fragment("dis", 3, 3))
    assert rig.outputs["lp"].sent == [] and rig.job_dirs() == [] and rig.mailbox() == []
    assert len([m for m in rig.queue.messages if m.field("event") == "failed"]) == 1


def test_a_part_above_the_known_total_fails_the_set(rig):
    rig.start()
    rig.deliver(fragment("above", 2, 2))
    rig.deliver(fragment("above", 5, "?"))
    assert rig.job_dirs() == []
    assert "part 5 arrived, but the job has only 2 parts" in failed_mail(rig)


def test_a_total_smaller_than_a_part_already_held_fails_the_set(rig):
    rig.start()
    rig.deliver(fragment("small", 4, "?"))
    rig.deliver(fragment("small", 1, 2))
    assert rig.job_dirs() == []
    assert "fragment 1 says the job has 2 parts, but part 4 arrived before it" in failed_mail(rig)


def test_a_failed_set_stays_failed_after_a_restart(rig):
    rig.start()
    rig.deliver(fragment("r", 1, 0))
    rig.restart()
    rig.deliver(fragment("r", 1, 1, body=b"From: alice@example.com\n\n%!PS\n"))
    assert rig.outputs["lp"].sent == [] and rig.job_dirs() == [] and rig.queue.messages == []


def write(path, text: bytes):
    path.write_bytes(text)
    return path


@pytest.mark.parametrize("params, want", [
    ('id="a@b"; number=1; total=0', ("a@b", 1, 0)),
    ('id="a@b"; number=3; total=2', ("a@b", 3, 2)),
    ('id="a@b"; number=0', ("a@b", 0, None)),
    ('id="a@b"; number=2; total=x', ("a@b", 2, -1)),
    ('id="a@b"; number=2; total=3', ("a@b", 2, 3)),
])
def test_the_real_toolkit_reports_impossible_numbers_instead_of_hiding_them(tmp_path, params, want):
    path = write(tmp_path / "m", b"From: alice@example.com\nContent-Type: message/partial; "
                 + params.encode() + b"\n\nbody\n")
    assert inspect_message(path).partial == want


def test_a_read_error_is_not_blamed_on_the_document(rig, monkeypatch):
    """An OSError while reading the header is the disk's fault: the message
    stays at its source and prints on the next pass, no "failed" mail."""
    calls = []
    fake = printer_fakes.fake_inspect

    def flaky(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return fake(path)

    monkeypatch.setattr(printer_fakes, "fake_inspect", flaky)
    rig.start()
    rig.deliver(message())
    assert rig.outputs["lp"].sent == [] and len(rig.mailbox()) == 1 and rig.queue.messages == []
    rig.clock.advance(60)
    rig.settle()
    assert len(rig.outputs["lp"].sent) == 1 and rig.mailbox() == []

"""Issue 8 acceptance: ``max_jobs_per_sender`` on the running appliance
(twistd): over the rate, 452 4.7.0 at RCPT (temporary: smtplib sees a
refused recipient, a real MTA would retry), and the counters survive
kill -9 and a restart."""

from __future__ import annotations

import smtplib

import pytest

pytestmark = pytest.mark.timeout(120)

PRINTERS = """\
[printer:quota]
addresses = quota@phaserlink.test
output = file:{out}
sender_auth = none
allowed_senders = *
formats = postscript
notify = none
max_jobs_per_sender = 2/1h
"""


def job(n: int) -> bytes:
    return (f"From: <busy@example.com>\r\nTo: quota@phaserlink.test\r\nSubject: q{n}\r\n"
            f"Message-ID: <q{n}@example.com>\r\nContent-Type: application/postscript\r\n\r\n%!PS\r\nshowpage\r\n"
            ).encode()


def rcpt(app, sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", app.smtp_port, timeout=30) as client:
        client.ehlo("quota.test")
        client.mail(sender)
        return client.rcpt("quota@phaserlink.test")


def test_the_sender_quota_is_452_at_rcpt_and_survives_kill9(appliance, tmp_path):
    appliance.sections = PRINTERS.format(out=tmp_path / "printed")
    appliance.start()
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=30) as client:
        for n in range(2):
            assert client.sendmail("busy@example.com", ["quota@phaserlink.test"], job(n)) == {}
    appliance.kill9()  # right after the second 250
    appliance.start()
    code, text = rcpt(appliance, "busy@example.com")
    assert code == 452 and text.startswith(b"4.7.0 <quota@phaserlink.test>: <busy@example.com> has sent its 2 jobs"), \
        (code, text)
    assert rcpt(appliance, "someone-else@example.com")[0] == 250
    appliance.stop()


def test_a_count_made_while_a_write_is_in_flight_fires_only_once_it_is_on_disk(tmp_path):
    """The 250 waits for Quotas.count: a count coalesced into the next write
    must not fire with the first one (that write did not have it)."""
    import json

    from twisted.internet import defer, task

    from phaserlink.trust.quota import Quotas

    writes: list[tuple[defer.Deferred, object, tuple]] = []

    def durable(fn, *args):
        d = defer.Deferred()
        writes.append((d, fn, args))
        return d

    path = tmp_path / "quotas.json"
    quotas = Quotas(path, task.Clock(), durable)
    first = quotas.count("p", "a@example.com", (5, 3600.0), None)
    second = quotas.count("p", "b@example.com", (5, 3600.0), None)
    assert len(writes) == 1 and not first.called and not second.called
    d, fn, args = writes.pop()
    fn(*args)
    d.callback(None)
    assert first.called and not second.called  # the second count was not in that write
    assert len(writes) == 1
    d, fn, args = writes.pop()
    fn(*args)
    d.callback(None)
    assert second.called
    assert set(json.loads(path.read_text())["senders"]) == {"p\0a@example.com", "p\0b@example.com"}
    assert quotas.count("p", "c@example.com", None, None).called and writes == []  # no quota: no write

"""Issue 8 acceptance: a message to several printers at once (two RCPTs,
not a group) is delivered to those whose rules it passes, and is a 550
when it passes none (dnsmasq serving the records, as in test_trust_smtp)."""

from __future__ import annotations

from support.smtp import Session
from test_trust_smtp import dns, keys, message, signed, site, stored  # noqa: F401  (fixtures)


def data(site, mail_from: str, rcpts: list[str], msg: bytes) -> bytes:  # noqa: F811
    s = Session(site)
    s.ehlo()
    assert s.cmd(f"MAIL FROM:<{mail_from}>").startswith(b"250 ")
    for rcpt in rcpts:
        assert s.cmd(f"RCPT TO:<{rcpt}>").startswith(b"250 ")
    assert s.cmd("DATA").startswith(b"354")
    return s.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")


def test_two_printers_one_passes_then_none_passes_is_550(site, keys):  # noqa: F811
    # Signed by good.test: demo (dmarc) passes, dkimonly (dkim by the From: domain) too.
    reply = data(site, "x@elsewhere.test", ["demo@phaserlink.test", "dkimonly@phaserlink.test"],
                 signed(keys, "good.test", message("alice@good.test", subject="both")))
    assert reply.startswith(b"250 2.0.0 "), reply
    assert len(stored(site, "demo")) == 1 and len(stored(site, "dkimonly")) == 1
    # Signed by other.test, From: good.test: neither passes -> 550, nothing stored.
    reply = data(site, "x@elsewhere.test", ["demo@phaserlink.test", "dkimonly@phaserlink.test"],
                 signed(keys, "other.test", message("alice@good.test", subject="neither")))
    assert reply.startswith(b"550 5.7."), reply
    assert len(stored(site, "demo")) == 1 and len(stored(site, "dkimonly")) == 1
    # Unsigned from good.test to demo and open (none): only open prints, and the reply names demo.
    reply = data(site, "mallory@evil.test", ["demo@phaserlink.test", "open@phaserlink.test"],
                 message("alice@good.test", subject="one"))
    assert reply.startswith(b"250 2.0.0 ") and b"not on demo" in reply, reply
    assert len(stored(site, "demo")) == 1 and len(stored(site, "open")) == 1

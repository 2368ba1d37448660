"""SMTP smuggling: nothing inside a message may ever become a command.

In the spirit of aiosmtpd's test_smtpsmuggling: a message carries a fake
end-of-data followed by a second, smuggled transaction, then the real end.
A server that reads the fake end as the end would deliver two messages (the
second with a sender of the attacker's choice).  Ours must answer exactly
once, and the smuggled transaction must never be delivered on its own.
"""

from __future__ import annotations

import pytest

from support.smtp import Session, make_site, mailbox_files

SMUGGLED = (
    b"MAIL FROM:<ceo@good.example>\r\n"
    b"RCPT TO:<strict@phaserlink.test>\r\n"
    b"DATA\r\n"
    b"Subject: smuggled\r\n\r\nsmuggled body\r\n"
)

BARE_REFUSAL = b"554 5.6.0 Error: bare CR or LF in message; lines must end with CRLF (RFC 5321 2.3.8)\r\n"


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


def start(site) -> Session:
    s = Session(site)
    s.envelope("eve@bad.example", "demo@phaserlink.test")
    assert s.cmd("DATA").startswith(b"354 ")
    return s


def all_stored(site) -> list[bytes]:
    return [m for name in site.printers for m in mailbox_files(site, name)]


@pytest.mark.parametrize(
    "fake_end",
    [
        b"\n.\n",  # bare LF . bare LF
        b"\n.\r\n",  # bare LF before the dot
        b"\r\n.\n",  # bare LF after the dot
        b"\r.\r",  # bare CR . bare CR
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r.\n",
        b"\n.\r",
    ],
    ids=repr,
)
@pytest.mark.parametrize("split", [False, True])
def test_fake_end_of_data_is_refused_not_smuggled(site, fake_end, split):
    s = start(site)
    wire = b"Subject: outer\r\n\r\nouter body" + fake_end + SMUGGLED + b".\r\n"
    if split:  # a packet boundary in the middle of the fake end changes nothing
        cut = wire.index(fake_end) + 1
        assert s.send(wire[:cut]) == b""
        reply = s.send(wire[cut:])
    else:
        reply = s.send(wire)
    assert reply == BARE_REFUSAL
    assert s.cmd("NOOP") == b"250 2.0.0 Ok\r\n"
    assert all_stored(site) == []


def test_nul_before_dot_is_text_not_end(site):
    s = start(site)
    reply = s.send(b"Subject: outer\r\n\r\nouter\r\n\x00.\r\n" + SMUGGLED + b".\r\n")
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")  # one message, one reply
    (stored,) = all_stored(site)
    assert stored.endswith(b"outer\n\x00.\nMAIL FROM:<ceo@good.example>\nRCPT TO:<strict@phaserlink.test>\n"
                           b"DATA\nSubject: smuggled\n\nsmuggled body\n")
    assert mailbox_files(site, "strict") == []


def test_stuffed_end_line_is_text(site):
    s = start(site)
    reply = s.send(b"Subject: outer\r\n\r\nouter\r\n..\r\n" + SMUGGLED + b".\r\n")
    assert reply.startswith(b"250 2.0.0 ")
    (stored,) = all_stored(site)
    assert b"\n.\nMAIL FROM:<ceo@good.example>\n" in stored


@pytest.mark.parametrize("chunk", [None, 1, 7, 1000, 4096])
def test_overlong_line_then_commands_is_drained_not_parsed(site, chunk):
    s = start(site)
    wire = b"Subject: outer\r\n\r\n" + b"x" * 5000 + b"\r\n" + SMUGGLED + b".\r\nNOOP\r\n"
    if chunk is None:
        reply = s.send(wire)
    else:
        reply = b"".join(s.send(wire[i : i + chunk]) for i in range(0, len(wire), chunk))
    assert reply == (
        b"552 5.5.2 Error: message has a line longer than 1000 bytes (RFC 5321 4.5.3.1.6)\r\n"
        b"250 2.0.0 Ok\r\n"
    )
    assert all_stored(site) == []


def test_endless_line_with_commands_after_cr_only(site):
    s = start(site)
    assert s.send(b"y" * 3000 + b"\rMAIL FROM:<a@b.example>\r" + b"y" * 3000) == b""
    assert s.send(b"\r\n.\r\n") == (
        b"552 5.5.2 Error: message has a line longer than 1000 bytes (RFC 5321 4.5.3.1.6)\r\n")


def test_pipelined_plaintext_after_starttls_is_discarded(tmp_path):
    from support.ca import TestCA

    cert = TestCA(tmp_path / "ca").issue()
    site = make_site(tmp_path / "s", f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\n")
    s = Session(site)
    s.ehlo()
    s.cmd("MAIL FROM:<before@tls.example>")
    reply = s.send(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<demo@phaserlink.test>\r\nDATA\r\n")
    assert reply == b"220 2.0.0 Ready to start TLS\r\n"  # nothing answered for the injected commands
    assert s.transport.tls_options is not None
    # after the handshake nothing of the plaintext session is left: no HELO, no sender
    assert s.cmd("MAIL FROM:<a@x.example>") == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
    s.ehlo()
    assert s.cmd("RCPT TO:<demo@phaserlink.test>") == b"503 5.5.1 Error: need MAIL command\r\n"


def test_body_pipelined_after_refused_data_is_never_parsed(site):
    """DATA refused while the client already sent its message: hang up."""
    s = Session(site)
    s.ehlo()
    # a bounce to a printer is refused at RCPT (loop protection, docs/trust.md)
    reply = s.send(b"MAIL FROM:<>\r\nRCPT TO:<strict@phaserlink.test>\r\nDATA\r\n" + SMUGGLED
                   + b".\r\n")
    assert reply.split(b"\r\n")[:-1] == [
        b"250 2.1.0 Ok",
        b"550 5.7.1 <strict@phaserlink.test>: a bounce or notification (null reverse-path) is never printed "
        b"on strict",
        b"554 5.5.1 Error: no valid recipients",
        b"554 5.5.0 Error: SMTP protocol synchronization (message sent before 354)",
    ]
    assert s.closed
    assert all_stored(site) == []


def test_pipelined_transaction_in_one_packet(site):
    """A good pipelining client (all of it in one write) gets its replies in order."""
    s = Session(site)
    s.ehlo()
    reply = s.send(
        b"MAIL FROM:<a@good.example>\r\nRCPT TO:<demo@phaserlink.test>\r\nDATA\r\n"
        b"Subject: one\r\n\r\nQUIT\r\nRSET\r\n.\r\n"
        b"MAIL FROM:<a@good.example>\r\nRCPT TO:<open@phaserlink.test>\r\nDATA\r\n"
        b"Subject: two\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    lines = reply.split(b"\r\n")[:-1]
    assert [l[:3] for l in lines] == [b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250", b"221"]
    (one,) = mailbox_files(site, "demo")
    assert one.endswith(b"Subject: one\n\nQUIT\nRSET\n")
    (two,) = mailbox_files(site, "open")
    assert two.endswith(b"Subject: two\n\nbody\n")

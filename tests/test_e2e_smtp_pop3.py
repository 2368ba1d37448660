"""SMTP in, POP3 out: the appliance's store hands back the exact message.

Dot-stuffing happens twice on the way (the SMTP client stuffs, our server
unstuffs; our POP3 server stuffs again, the POP3 client unstuffs), and
Twisted's own stuffer breaks at its 16 KiB chunk boundary.  A body with "."
lines exactly at 16384 and at our own 64 KiB read size must come out of RETR
byte for byte as it went into DATA (after the Received line we add).
"""

from __future__ import annotations

import poplib
import smtplib

from support.appliance import pull_printer


def dotted_body() -> bytes:
    lines = []
    size = 0
    for target in (16384, 65536):
        while target - size > 77:
            line = b"x" * 75
            lines.append(line)
            size += len(line) + 2
        pad = b"y" * (target - size - 2)
        lines.append(pad)
        size += len(pad) + 2
        lines.append(b".")  # at exactly *target* bytes into the body
        size += 3
        lines.append(b"..not a terminator")
        size += 20
    lines.append(b"end")
    body = b"\r\n".join(lines) + b"\r\n"
    assert body[16384:16387] == b".\r\n" and body[65536:65539] == b".\r\n"
    return body


def test_dot_line_at_16384_survives_smtp_in_and_pop3_out(appliance):
    appliance.sections = pull_printer()
    appliance.start()
    header = (b"From: alice@example.com\r\nTo: pull@phaserlink.test\r\nSubject: dots\r\n"
              b"Message-ID: <dots@example.com>\r\n\r\n")
    message = header + dotted_body()
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=30) as smtp:
        smtp.sendmail("alice@example.com", ["pull@phaserlink.test"], message)

    pop = poplib.POP3("127.0.0.1", appliance.pop3_port, timeout=30)
    try:
        pop.user("pull")
        pop.pass_("pull")
        response, lines, octets = pop.retr(1)
    finally:
        pop.quit()
    got = b"\r\n".join(lines) + b"\r\n"
    assert got.startswith(b"Return-Path: <alice@example.com>\r\n"  # RFC 5321 4.4
                          b"Authentication-Results: phaserlink.test;\r\n\tnone\r\nReceived: ")  # docs/trust.md
    # Our trace header (possibly folded) comes first; the rest is the message.
    start = got.index(b"\r\nFrom: alice@example.com\r\n") + 2
    assert got[start:] == message
    assert octets == len(got)

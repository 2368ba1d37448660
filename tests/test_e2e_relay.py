"""Relaying: mail for another domain goes through the outbound queue to the
smarthost (a real smtp-sink), from a relay network only, byte for byte."""

from __future__ import annotations

import smtplib

import pytest

from support.sink_wait import saved
from support.smtp_sink import SmtpSink

BODY = (
    b"Subject: relayed\r\nMessage-ID: <relay-1@client.example>\r\n\r\n"
    + (b"x" * 74 + b"\r\n") * 220 + b".\r\n..\r\nlast\r\n"
)


def test_relay_network_client_reaches_the_smarthost(appliance, tmp_path):
    with SmtpSink(tmp_path / "sink") as sink:
        appliance.appliance_extra = (
            f"smarthost = 127.0.0.1:{sink.port}\nsmarthost_tls = none\nrelay_networks = 127.0.0.0/8\n"
        )
        appliance.sections = "[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\nallowed_senders = *\n"
        appliance.start()
        with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
            assert smtp.sendmail("alice@client.example", ["bob@elsewhere.example"], BODY) == {}
        [message] = saved(sink, 1)  # finished, not just created
        assert message.mail_from == "alice@client.example"
        assert message.recipients == ["bob@elsewhere.example"]
        # Our Received line first, then the message exactly as sent.
        assert message.raw.startswith(b"Received: ")
        assert message.raw.endswith(b"\n" + BODY.replace(b"\r\n", b"\n"))


def test_outside_the_relay_networks_is_refused(appliance, tmp_path):
    appliance.appliance_extra = "relay_networks = 192.0.2.0/24\n"
    appliance.sections = "[printer:demo]\nsender_auth = none\naddresses = demo@phaserlink.test\nallowed_senders = *\n"
    appliance.start()
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.sendmail("alice@client.example", ["bob@elsewhere.example"], BODY)
    code, text = info.value.recipients["bob@elsewhere.example"]
    assert code == 550 and text.startswith(b"5.7.1")
    assert not list((appliance.spool / "queue" / "env").glob("*.json"))

"""A signature that crossed a real MTA: OpenDKIM signs on a private
Postfix, which relays to the appliance; the appliance verifies it against
the key a real DNS server (dnsmasq) serves, and prints (docs/trust.md).

SPF for the domain fails on purpose (``-all``): only the DKIM signature,
aligned with From:, can make the sender authentic.  The same mail sent
unsigned (straight to the appliance) is refused.
"""

from __future__ import annotations

import smtplib
import time

import pytest

from support.appliance import Appliance
from support.dnsmasq import DnsServer, dkim_key
from support.opendkim import OpenDKIM
from support.peers import require_root
from support.postfix import Postfix

MESSAGE = (b"From: Alice <alice@good.test>\r\nTo: lp@phaserlink.test\r\nSubject: via postfix\r\n"
           b"Message-ID: <opendkim-1@good.test>\r\n\r\nsigned by OpenDKIM on the way\r\n")


@pytest.fixture
def chain(tmp_path):
    require_root("a private Postfix")
    key, txt = dkim_key(tmp_path, "od")
    dns = DnsServer(tmp_path)
    dns.add_txt("sel._domainkey.good.test", txt)
    dns.add_txt("good.test", "v=spf1 -all")
    dns.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
    dns.start()
    signer = OpenDKIM(tmp_path / "opendkim", "good.test", "sel", key).start()
    app = Appliance(tmp_path / "appliance")
    app.directory.mkdir()
    app.appliance_extra = f"dns_servers = {dns.address}\n"
    app.sections = """\
        [printer:lp]
        addresses = lp@phaserlink.test
        allowed_senders = *@good.test
        sender_auth = dkim, dmarc
        output = pull
        """
    app.start()
    relay = Postfix(tmp_path / "relay", myhostname="relay.good.test", relayhost=f"[127.0.0.1]:{app.smtp_port}",
                    main_extra={"smtpd_milters": signer.milter, "non_smtpd_milters": signer.milter,
                                "milter_default_action": "tempfail"}).start()
    yield app, relay
    relay.stop()
    app.stop()
    signer.stop()
    dns.stop()


def stored(app):
    new = app.spool / "mail" / "lp" / "new"
    return sorted(new.iterdir()) if new.exists() else []


def test_opendkim_signed_mail_through_postfix_prints(chain):
    app, relay = chain
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=20) as client:
        assert client.sendmail("alice@good.test", ["lp@phaserlink.test"], MESSAGE) == {}
    (path,) = app.wait_for(lambda: stored(app), timeout=25, what="the relayed message in the printer's mailbox")
    data = path.read_bytes()
    head = data.split(b"\n\n")[0].decode()
    assert "\nDKIM-Signature: " in head and "d=good.test" in head  # OpenDKIM's, not ours
    assert "dkim=pass header.d=good.test header.s=sel" in head, head
    assert "dmarc=pass header.from=good.test" in head
    assert "spf=fail" in head  # the last hop is the relay, and the domain allows nobody
    assert data.endswith(b"\nsigned by OpenDKIM on the way\n")
    # the same mail not crossing the signer is refused
    with smtplib.SMTP("127.0.0.1", app.smtp_port, timeout=20) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("alice@good.test", ["lp@phaserlink.test"], MESSAGE.replace(b"-1@", b"-2@"))
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.7.26 ")
    time.sleep(0.3)
    assert len(stored(app)) == 1

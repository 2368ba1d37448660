"""The real appliance (twistd) without a smarthost: a printed job's status
mail goes out by MX, past a refusing MX and a dead one, and arrives
DKIM-valid for the key published in DNS.

Peers: dnsmasq (MX, A, the DKIM TXT record), smtp-sink on 127.0.0.2 (450 to
RCPT) and 127.0.0.4 (takes mail), nothing on 127.0.0.3; the verifier is
dkimpy's, fetching the key from dnsmasq with dnspython.
"""

from __future__ import annotations

import dkim
import dns.resolver
import pytest

from support.dns_server import DnsServer
from support.peers import free_port
from support.sink_wait import saved
from test_dkim_sign import keygen
from test_mx_delivery import LoopbackSink
from test_printer_appliance import job_mail, printed_files, send

pytestmark = pytest.mark.peer


def test_status_mail_goes_by_mx_and_arrives_dkim_valid(appliance, tmp_path, capsys):
    key, txt = keygen(tmp_path, capsys)
    port = free_port()
    server = DnsServer(tmp_path / "dns")
    server.mx("big.test", "mx1.big.test", 10).mx("big.test", "mx2.big.test", 20).mx("big.test", "mx3.big.test", 30)
    server.host("mx1.big.test", "127.0.0.2").host("mx2.big.test", "127.0.0.3").host("mx3.big.test", "127.0.0.4")
    server.txt("pl1._domainkey.big.test", txt)
    refusing = LoopbackSink(tmp_path / "mx1", "127.0.0.2", port, soft_reject=["RCPT"])
    good = LoopbackSink(tmp_path / "mx3", "127.0.0.4", port)
    out = tmp_path / "printed"
    try:
        server.start()
        refusing.start()
        good.start()
        appliance.appliance_extra = (
            f"status_sender = printers@big.test\ndns_servers = 127.0.0.1:{server.port}\nmx_port = {port}\n"
            f"dkim_key = {key}\ndkim_selector = pl1\ndkim_domain = big.test\n")
        appliance.sections = ("[printer:demo]\naddresses = demo@phaserlink.test\n"
                              f"output = file:{out}\nallowed_senders = *@big.test\nsender_auth = none\nformats = postscript\n"
                              "notify = printed, errors\n")
        appliance.start()
        send(appliance, job_mail(sender="alice@big.test"))
        [status] = saved(good, 1, timeout=20)
        assert printed_files(out)
        assert status.mail_from == "" and status.recipients == ["alice@big.test"]
        assert status.message["From"].endswith("printers@big.test>") or "printers@big.test" in status.message["From"]
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], server.port

        def from_dnsmasq(name, timeout=5):
            return b"".join(b"".join(r.strings) for r in resolver.resolve(name.decode(), "TXT", lifetime=timeout))

        wire = status.raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert b"d=big.test" in wire and dkim.verify(wire, dnsfunc=from_dnsmasq)
        assert refusing.messages() == []
        assert "delivered by MX" in appliance.log() or "via mx3.big.test" in appliance.log()
    finally:
        good.stop()
        refusing.stop()
        server.stop()

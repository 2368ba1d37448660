"""MXResolver against a real DNS server (dnsmasq): the host order RFC 5321
5.1 asks for, and which DNS answers are final and which are retried."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from phaserlink.smtp_relay.mx import DNSFailure, Host, MXResolver
from support.dns_server import DnsServer
from support.peers import free_port

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    server.mx("order.test", "c.order.test", 30).mx("order.test", "a.order.test", 10).mx("order.test", "b.order.test", 20)
    server.host("a.order.test", "127.0.0.2").host("b.order.test", "127.0.0.3").host("c.order.test", "127.0.0.4")
    server.host("implicit.test", "127.0.0.5")
    server.mx("noaddr.test", "ghost.noaddr.test", 10)  # the exchange has no address
    server.mx("halfdead.test", "ghost.halfdead.test", 10).mx("halfdead.test", "ok.halfdead.test", 20)
    server.host("ok.halfdead.test", "127.0.0.6")
    server.mx("nullmx.test", ".", 0).host("nullmx.test", "127.0.0.7")  # RFC 7505: no mail, despite the A
    server.start()
    yield server
    server.stop()


def resolver(dns) -> MXResolver:
    return MXResolver(reactor, [dns.server], timeouts=(1,))


@pytest_twisted.ensureDeferred
async def test_mx_hosts_in_preference_order(dns):
    hosts = await resolver(dns).hosts("order.test")
    assert hosts == [Host("a.order.test", "127.0.0.2"), Host("b.order.test", "127.0.0.3"),
                     Host("c.order.test", "127.0.0.4")]


@pytest_twisted.ensureDeferred
async def test_no_mx_is_the_implicit_mx(dns):
    assert await resolver(dns).hosts("implicit.test") == [Host("implicit.test", "127.0.0.5")]


@pytest_twisted.ensureDeferred
async def test_an_exchange_without_address_is_skipped(dns):
    assert await resolver(dns).hosts("halfdead.test") == [Host("ok.halfdead.test", "127.0.0.6")]


@pytest_twisted.ensureDeferred
async def test_only_exchanges_without_address_is_temporary(dns):
    with pytest.raises(DNSFailure) as info:
        await resolver(dns).hosts("noaddr.test")
    assert not info.value.permanent and info.value.enhanced == "4.4.3"


@pytest_twisted.ensureDeferred
async def test_nxdomain_is_permanent(dns):
    with pytest.raises(DNSFailure) as info:
        await resolver(dns).hosts("nosuch.test")
    assert info.value.permanent and info.value.enhanced == "5.1.2"


@pytest_twisted.ensureDeferred
async def test_dns_down_is_temporary():
    with pytest.raises(DNSFailure) as info:
        await MXResolver(reactor, [("127.0.0.1", free_port())], timeouts=(0.3,)).hosts("order.test")
    assert not info.value.permanent


@pytest_twisted.ensureDeferred
async def test_address_literal_needs_no_dns():
    assert await MXResolver(reactor, [("127.0.0.1", free_port())]).hosts("[127.0.0.9]") == [Host("127.0.0.9", "127.0.0.9")]


@pytest_twisted.ensureDeferred
async def test_null_mx_is_permanent_even_with_an_address(dns):
    with pytest.raises(DNSFailure) as info:
        await resolver(dns).hosts("nullmx.test")
    assert info.value.permanent and info.value.enhanced == "5.1.10"

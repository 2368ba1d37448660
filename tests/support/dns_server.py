"""The DNS server of the MX delivery tests: the same dnsmasq fixture as the
sender-verification tests (support/dnsmasq.py), named here for the tests
that import it from this module."""

from support.dnsmasq import DnsServer  # noqa: F401

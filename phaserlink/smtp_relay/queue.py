"""PLACEHOLDER until the outbound queue lands: refuses to queue."""

from twisted.application import service
from zope.interface import implementer

from phaserlink.smtp_relay.interfaces import IOutboundQueue


@implementer(IOutboundQueue)
class OutboundQueue(service.Service):
    def __init__(self, site, reactor=None):
        self.site, self.reactor = site, reactor

    def submit(self, mail_from, recipients):
        raise OSError("outbound queue not implemented yet")

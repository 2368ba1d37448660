"""PLACEHOLDER until the printer-side issue lands: hosts no printers yet."""

from twisted.application import service


class PrinterService(service.MultiService):
    def __init__(self, site, store, queue, reactor=None):
        super().__init__()
        self.site, self.store, self.queue, self.reactor = site, store, queue, reactor

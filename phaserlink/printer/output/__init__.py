"""Printer outputs: hand a spooled job to LPD, a raw 9100 socket or a folder.

``make_output(uri, reactor=...)`` gives an :class:`IPrinterOutput` for a
printer's ``output =`` URI; see :mod:`.interfaces` for the contract.
"""

from __future__ import annotations

from .interfaces import (
    IPrinterOutput,
    OutputJob,
    OutputResult,
    PrinterOutputError,
    PrinterRejected,
    PrinterUnavailable,
)


def make_output(uri: str, *, reactor, pjl: bool = False, timeout: float | None = None,
                source_port: str = "auto", tls: str = "required", ca_file=None) -> IPrinterOutput:
    """Build the output for *uri* (``file:DIR``, ``lpd://host[:port]/queue``,
    ``socket://host[:port]``).  Raises ValueError for a URI it cannot use.

    *timeout* (seconds) bounds each wait on the printer (connect, each ack,
    a stalled write, the final close); None = the scheme's default.
    *source_port* is for LPD: 'privileged' (721-731, RFC 1179), 'any', or
    'auto' (privileged when root, falling back to any port when all are busy).
    *tls* and *ca_file* are for ``ipps://`` (``none``: do not verify).
    """
    from .factory import make_output as _make

    return _make(uri, reactor=reactor, pjl=pjl, timeout=timeout, source_port=source_port,
                 tls=tls, ca_file=ca_file)


__all__ = [
    "IPrinterOutput", "OutputJob", "OutputResult", "PrinterOutputError",
    "PrinterRejected", "PrinterUnavailable", "make_output",
]

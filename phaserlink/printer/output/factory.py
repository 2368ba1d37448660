"""``output =`` URI -> IPrinterOutput.

    file:DIR  file:///abs/dir      one file per job in DIR
    lpd://host[:port]/queue        RFC 1179, port 515 by default
    socket://host[:port]           raw TCP, port 9100 by default
    ipp://host[:port]/path         IPP (RFC 8011), port 631 by default
    ipps://host[:port]/path        IPP over TLS (verified unless tls = none)

IPv6 literals go in brackets (``socket://[::1]:9100``).  Anything else is
a ValueError that names the URI, so a bad site.ini fails at start-up.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from .file_output import FileOutput
from .interfaces import IPrinterOutput
from .lpd import LPD_PORT, LPD_TIMEOUT, SOURCE_PORT_MODES, LPDOutput
from .raw_socket import PJL_END_TIMEOUT, SOCKET_PORT, SOCKET_TIMEOUT, SocketOutput
from .transfer import CONNECT_TIMEOUT


def make_output(uri: str, *, reactor, pjl: bool = False, timeout: float | None = None,
                source_port: str = "auto", tls: str = "required", ca_file=None) -> IPrinterOutput:
    """See phaserlink.printer.output.make_output.  *timeout* replaces every
    default wait (connect, acks, stalled writes, the final close, the PJL
    job end) when given."""
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    if source_port not in SOURCE_PORT_MODES:
        raise ValueError(f"source_port must be one of {SOURCE_PORT_MODES}, not {source_port!r}")
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"printer output {uri!r}: expected file:DIR, lpd://host/queue or socket://host")

    def pick(default: float) -> float:
        return default if timeout is None else timeout

    if scheme == "file":
        path = urlsplit(uri).path if rest.startswith("//") else rest
        if not path:
            raise ValueError(f"printer output {uri!r}: no directory")
        return FileOutput(uri, Path(unquote(path)), reactor=reactor)

    if scheme in ("lpd", "socket"):
        parts = urlsplit(uri)
        try:
            port = parts.port
        except ValueError as e:
            raise ValueError(f"printer output {uri!r}: bad port") from e
        host = parts.hostname
        if not host:
            raise ValueError(f"printer output {uri!r}: no host")
        if scheme == "lpd":
            queue = unquote(parts.path.lstrip("/"))
            if not queue or "/" in queue:
                raise ValueError(f"printer output {uri!r}: expected lpd://host[:port]/queue")
            return LPDOutput(uri, host, port or LPD_PORT, queue, reactor=reactor,
                             timeout=pick(LPD_TIMEOUT), connect_timeout=pick(CONNECT_TIMEOUT),
                             source_port=source_port)
        if parts.path not in ("", "/"):
            raise ValueError(f"printer output {uri!r}: socket:// takes no path")
        return SocketOutput(uri, host, port or SOCKET_PORT, reactor=reactor, pjl=pjl,
                            timeout=pick(SOCKET_TIMEOUT), connect_timeout=pick(CONNECT_TIMEOUT),
                            pjl_end_timeout=pick(PJL_END_TIMEOUT))

    if scheme in ("ipp", "ipps"):
        from .ipp import IPPOutput

        from phaserlink.net.ipp_client import CONNECT_TIMEOUT as IPP_CONNECT, REQUEST_TIMEOUT

        try:
            return IPPOutput(uri, reactor=reactor, ca_file=str(ca_file) if ca_file else None,
                             verify=tls != "none", timeout=pick(REQUEST_TIMEOUT),
                             connect_timeout=pick(IPP_CONNECT))
        except ValueError as e:
            raise ValueError(f"printer output {e}") from None

    raise ValueError(f"printer output {uri!r}: unknown scheme {scheme!r} "
                     "(file:, lpd://, socket://, ipp:// or ipps://)")

"""A real authoritative DNS server for the sender-verification tests: dnsmasq.

dnsmasq (Debian dnsmasq-base) answers the TXT records given on its command
line (SPF, DKIM keys, DMARC) on a loopback port, and NXDOMAIN for any other
name under ``.test`` (``--local=/test/``).  It is not ours, so the tests see
what a site's DNS would give.  ``stop()`` / ``start()`` on the same port
simulate DNS going away and coming back (a resolver then times out or is
refused: RFC 7208 temperror).

Keys: :func:`dkim_key` makes an RSA key and the ``v=DKIM1`` TXT for it;
a TXT longer than 255 characters is given to dnsmasq as several strings
(a reader joins them).
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

from support.peers import free_port, require_program, stop_process


def dkim_key(directory: Path, name: str = "key", bits: int = 2048) -> tuple[Path, str]:
    """(PEM private key file, the DKIM TXT record text)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    path = Path(directory) / f"{name}.pem"
    path.write_bytes(pem)
    return path, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def _split(text: str) -> list[str]:
    return [text[i:i + 250] for i in range(0, len(text), 250)] or [""]


class DnsServer:
    """dnsmasq on 127.0.0.1:port serving *records* {name: [txt, ...]}."""

    def __init__(self, directory: Path):
        self.binary = require_program("dnsmasq", "dnsmasq-base")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.records: dict[str, list[str]] = {}  # TXT records by name
        self.extra_args: list[str] = []  # e.g. --local-ttl=300 (answers are TTL 0 otherwise)
        self.proc: subprocess.Popen | None = None

    def add_txt(self, name: str, text: str) -> "DnsServer":
        self.records.setdefault(name, []).append(text)
        return self

    txt = add_txt

    def mx(self, domain: str, host: str, preference: int) -> "DnsServer":
        self.extra_args.append(f"--mx-host={domain},{host},{preference}")
        return self

    def host(self, name: str, address: str) -> "DnsServer":
        self.extra_args.append(f"--host-record={name},{address}")
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def server(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> "DnsServer":
        args = [self.binary, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--local=/test/", "--user=root", "--pid-file=", "--log-facility=-", *self.extra_args]
        for name, texts in self.records.items():
            for text in texts:
                args.append(f"--txt-record={name}," + ",".join(f'"{t}"' if "," in t else t for t in _split(text)))
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=(self.directory / "dnsmasq.log").open("ab"))
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 5.0) -> None:
        import dns.message
        import dns.query

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: "
                                   f"{(self.directory / 'dnsmasq.log').read_text()[-500:]}")
            try:
                dns.query.udp(dns.message.make_query("ready.test.", "TXT"), "127.0.0.1", port=self.port, timeout=0.2)
                return
            except Exception:
                time.sleep(0.03)
        raise TimeoutError("dnsmasq does not answer")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

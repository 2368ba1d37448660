"""dnsmasq (Debian dnsmasq-base) as the DNS of the MX delivery tests.

A real DNS server that is not ours answers MX, A and TXT records given on
its command line, on 127.0.0.1 and a free port, and NXDOMAIN for any other
name under ``.test`` (``--local=/test/``).  peers.md has the flags.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from support.peers import free_port, require_program, stop_process

TXT_CHUNK = 250


class DnsServer:
    def __init__(self, directory: Path):
        self.binary = require_program("dnsmasq", "dnsmasq-base")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args: list[str] = []
        self.proc: subprocess.Popen | None = None

    def mx(self, domain: str, host: str, preference: int) -> "DnsServer":
        self.args.append(f"--mx-host={domain},{host},{preference}")
        return self

    def host(self, name: str, address: str) -> "DnsServer":
        self.args.append(f"--host-record={name},{address}")
        return self

    def txt(self, name: str, text: str) -> "DnsServer":
        chunks = [text[i:i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)] or [""]
        self.args.append(f"--txt-record={name}," + ",".join(chunks))
        return self

    @property
    def server(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> "DnsServer":
        args = [self.binary, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", f"--port={self.port}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/test/", "--user=root",
                "--pid-file=", "--log-facility=-", *self.args]
        log = (self.directory / "dnsmasq.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 5.0) -> None:
        from twisted.names import dns

        query = dns.Message(id=1, recDes=1)
        query.addQuery(b"ready.test", dns.A)
        packet = query.toStr()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: "
                                   f"{(self.directory / 'dnsmasq.log').read_text()[-500:]}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                try:
                    s.sendto(packet, self.server)
                    s.recvfrom(512)
                    return
                except OSError:
                    time.sleep(0.03)
        raise TimeoutError("dnsmasq does not answer")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

"""OpenDKIM (Debian opendkim) as a milter for a private Postfix: a signer,
or a verifier, that is not ours.

``OpenDKIM(directory, domain, selector, key)`` runs ``opendkim -f -x
od.conf`` listening as a milter on a loopback port; a Postfix with
``smtpd_milters = inet:127.0.0.1:PORT`` then signs mail from loopback
clients whose From: is in *domain* before relaying it (``Mode s``: no DNS
needed).  Keys under /tmp are "unsafe" to OpenDKIM (exit 78) unless
``RequireSafeKeys false``.

``OpenDKIMVerifier(directory, dns_port)`` is the receiving side (``Mode
v``): it looks the signer's key up through libunbound forwarding to a
private DNS server (dnsmasq on 127.0.0.1:*dns_port*) and adds an
``Authentication-Results: verifier.test; dkim=pass ...`` header.  No host
is "internal" to it (its default, 127.0.0.1, would be signed for, not
verified).

OpenDKIM takes a few seconds to exit after SIGTERM.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.peers import free_port, require_program, stop_process, wait_for_port


class OpenDKIM:
    def __init__(self, directory: Path, domain: str, selector: str, key: Path):
        self.binary = require_program("opendkim", "opendkim")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.domain, self.selector, self.key = domain, selector, Path(key)
        self.proc: subprocess.Popen | None = None

    @property
    def milter(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> "OpenDKIM":
        conf = self.directory / "od.conf"
        conf.write_text(
            "Syslog no\n"
            "Mode s\n"
            f"Socket inet:{self.port}@127.0.0.1\n"
            "UserID root\n"
            f"Domain {self.domain}\n"
            f"Selector {self.selector}\n"
            f"KeyFile {self.key}\n"
            "Canonicalization relaxed/relaxed\n"
            "RequireSafeKeys false\n"
            f"PidFile {self.directory / 'opendkim.pid'}\n"
        )
        self.key.chmod(0o600)
        return self._run(conf)

    def _run(self, conf: Path):
        """Run opendkim in the foreground on the config file *conf*, its
        output into opendkim.log, and wait for its milter port; self."""
        log = (self.directory / "opendkim.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-f", "-x", str(conf)], stdout=log, stderr=log)
        try:
            wait_for_port(self.port, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"opendkim did not start: {(self.directory / 'opendkim.log').read_text()[-1000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.proc = None


class OpenDKIMVerifier(OpenDKIM):
    """OpenDKIM in verify mode, resolving through the private DNS server."""

    authserv_id = "verifier.test"

    def __init__(self, directory: Path, dns_port: int):
        self.binary = require_program("opendkim", "opendkim")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dns_port = dns_port
        self.proc = None

    def start(self) -> "OpenDKIMVerifier":
        unbound = self.directory / "unbound.conf"
        unbound.write_text(
            "server:\n"
            "  do-not-query-localhost: no\n"
            '  domain-insecure: "test."\n'
            '  module-config: "iterator"\n'
            '  local-zone: "test." nodefault\n'
            "forward-zone:\n"
            '  name: "."\n'
            f"  forward-addr: 127.0.0.1@{self.dns_port}\n"
        )
        conf = self.directory / "od.conf"
        conf.write_text(
            "Syslog no\n"
            "Mode v\n"
            f"Socket inet:{self.port}@127.0.0.1\n"
            "UserID root\n"
            f"AuthservID {self.authserv_id}\n"
            "InternalHosts 192.0.2.1\n"
            f"ResolverConfiguration {unbound}\n"
            f"PidFile {self.directory / 'opendkim.pid'}\n"
        )
        return self._run(conf)

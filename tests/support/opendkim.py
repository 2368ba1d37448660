"""OpenDKIM (Debian opendkim) as a signing milter, for a private Postfix.

A signer that is not ours: ``OpenDKIM(directory, domain, selector, key)``
runs ``opendkim -f -x od.conf`` listening as a milter on a loopback port;
a Postfix with ``smtpd_milters = inet:127.0.0.1:PORT`` then signs mail from
loopback clients whose From: is in *domain* before relaying it.  Only
signing (``Mode s``): OpenDKIM needs no DNS for that.  Keys under /tmp are
"unsafe" to OpenDKIM (exit 78) unless ``RequireSafeKeys false``.
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

"""A private Dovecot POP3 server for tests: the "remote POP3 store".

    dovecot = Dovecot()                      # or Dovecot(cert=test_ca.issue())
    dovecot.start(users={"printer1": "pw"})
    dovecot.deliver("printer1", b"Subject: x\\n\\nbody\\n")
    ... POP3 on 127.0.0.1:dovecot.port ...
    dovecot.messages("printer1")             # what is still in the Maildir
    dovecot.halt(); dovecot.start(users)     # down and back, same ports and mail
    dovecot.stop()

Everything (config, passwd-file, Maildirs, sockets, log) lives in one
temporary directory that is world-traversable: Dovecot's mail processes run
as ``nobody`` (it refuses uid 0 for mail) and its auth process as
``dovecot``, so pytest's 0700 tmp dirs would lock them out.  Stopped by PID.

With ``cert`` (a support.ca.IssuedCert) the server offers STLS; without it,
``ssl = no`` and plaintext USER/PASS are allowed.  Dovecot counts a
connection whose remote and local IPs are equal (127.0.0.1 to 127.0.0.1) as
"secured", so ``disable_plaintext_auth`` cannot prove TLS on loopback: check
``logins(user)`` instead, Dovecot's own "Login:" log lines, which say "TLS"
for a TLS session and "secured" for a plaintext one.  With a cert there is also an implicit-TLS listener
on ``pop3s_port``.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from support.peers import free_port, require_program, require_root, stop_process, wait_for_port

MAIL_USER = "nobody"
START_TIMEOUT = 15.0


class Dovecot:
    __test__ = False

    def __init__(self, cert=None, *, directory: Path | None = None, auth_failure_delay: str = "0"):
        self.cert = cert
        self.auth_failure_delay = auth_failure_delay
        self._own_dir = directory is None
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="phaserlink-dovecot-"))
        self.dir.chmod(0o755)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.pop3s_port: int | None = None  # implicit TLS (pop3s://), only with a cert
        self.proc: subprocess.Popen | None = None
        pw = pwd.getpwnam(MAIL_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self._counter = itertools.count()

    @property
    def log_text(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logins(self, user: str) -> list[str]:
        """Dovecot's "Login:" log lines for *user*."""
        return [line for line in self.log_text.splitlines() if "Login:" in line and f"user=<{user}>" in line]

    def maildir(self, user: str) -> Path:
        return self.dir / "mail" / user

    def _config(self) -> str:
        d = self.dir
        lines = [
            f"base_dir = {d}/run",
            f"state_dir = {d}/state",
            f"log_path = {d}/dovecot.log",
            f"info_log_path = {d}/dovecot.log",
            "protocols = pop3",
            "listen = 127.0.0.1",
            "auth_mechanisms = plain",
            f"auth_failure_delay = {self.auth_failure_delay}",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {d}/passwd",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = username_format=%u {d}/passwd",
            "}",
            f"mail_location = maildir:{d}/mail/%u",
            "pop3_uidl_format = %08Xu%08Xv",
            "service pop3-login {",
            "  inet_listener pop3 {",
            f"    port = {self.port}",
            "  }",
            "  inet_listener pop3s {",
            f"    port = {self.pop3s_port or 0}",
            "  }",
            "}",
            "service stats {",
            "  unix_listener stats-reader {",
            "    mode = 0666",
            "  }",
            "  unix_listener stats-writer {",
            "    mode = 0666",
            "  }",
            "}",
        ]
        if self.cert is None:
            lines += ["ssl = no", "disable_plaintext_auth = no"]
        else:
            lines += [
                "ssl = yes",
                f"ssl_cert = <{d}/ssl/cert.pem",
                f"ssl_key = <{d}/ssl/key.pem",
                "disable_plaintext_auth = yes",
            ]
        return "\n".join(lines) + "\n"

    def start(self, users: dict[str, str]) -> "Dovecot":
        exe = require_program("dovecot", "dovecot-core dovecot-pop3d")
        require_root("a private Dovecot (mail must belong to a non-root uid)")
        self.users = dict(users)
        # A restart (after halt()) keeps its ports: clients are configured with them.
        self.port = self.port or free_port()
        if self.cert is not None:
            self.pop3s_port = self.pop3s_port or free_port()
        for sub in ("run", "state", "mail", "home"):
            (self.dir / sub).mkdir(exist_ok=True)
            (self.dir / sub).chmod(0o755)
        passwd = self.dir / "passwd"
        passwd.write_text(
            "".join(
                f"{u}:{{PLAIN}}{p}:{self.uid}:{self.gid}::{self.dir}/home/{u}::\n" for u, p in users.items()
            )
        )
        passwd.chmod(0o644)
        for u in users:
            self._make_maildir(u)
            home = self.dir / "home" / u
            home.mkdir(exist_ok=True)
            os.chown(home, self.uid, self.gid)
        if self.cert is not None:
            # A private copy: another test may issue a new "localhost" cert
            # from the same CA (same file names) while this server runs.
            (self.dir / "ssl").mkdir(exist_ok=True)
            shutil.copyfile(self.cert.certificate, self.dir / "ssl" / "cert.pem")
            shutil.copyfile(self.cert.key, self.dir / "ssl" / "key.pem")
            (self.dir / "ssl" / "key.pem").chmod(0o600)
        conf = self.dir / "dovecot.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(
            [exe, "-F", "-c", str(conf)],
            stdout=open(self.dir / "stdout.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, timeout=START_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"Dovecot did not listen on {self.port}: {self.log_text}"
                f"{(self.dir / 'stdout.log').read_text(errors='replace')}"
            ) from None
        return self

    def _make_maildir(self, user: str) -> Path:
        md = self.maildir(user)
        for p in (md, md / "new", md / "cur", md / "tmp"):
            p.mkdir(parents=True, exist_ok=True)
            os.chown(p, self.uid, self.gid)
        return md

    def deliver(self, user: str, data: bytes) -> str:
        """Put *data* (as stored: LF line ends) into the user's Maildir new/;
        returns the file name.  Written in tmp/ and renamed, like an MDA."""
        md = self._make_maildir(user)
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._counter)}.phaserlink-test"
        tmp = md / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(data)
        os.chown(tmp, self.uid, self.gid)
        os.rename(tmp, md / "new" / name)
        return name

    def messages(self, user: str) -> list[bytes]:
        """The messages in the user's Maildir (new/ and cur/), oldest first.

        Dovecot renames (new/ to cur/) and expunges while a session runs: a
        file gone between the listing and its reading means another look."""
        md = self.maildir(user)
        while True:
            files = [p for sub in ("new", "cur") if (md / sub).is_dir() for p in (md / sub).iterdir()]
            files.sort(key=lambda p: p.name.split(":", 1)[0])
            try:
                return [p.read_bytes() for p in files]
            except FileNotFoundError:
                continue

    def halt(self) -> None:
        """Stop the server but keep its directory (mail, config): ``start``
        again brings it back on the same ports, the mail still there."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

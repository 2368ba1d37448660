"""A private Postfix instance on loopback, as a real SMTP peer for tests.

``Postfix(directory).start()`` runs ``postfix -c DIR/etc start`` with its own
main.cf/master.cf, queue and log under *directory*, listening on
``127.0.0.1:<port>``.  By default it is a sink: it accepts mail for every
domain from loopback and delivers it into one Maildir
(:meth:`Postfix.messages`).  ``tls=IssuedCert`` turns on STARTTLS with that
certificate; ``smtps_port=free_port()`` adds an implicit-TLS listener;
``relayhost="[127.0.0.1]:PORT"`` makes it a relay that hands
everything on instead; ``main_extra`` adds or overrides main.cf settings;
``address`` listens on another loopback address (an MX at 127.0.0.4);
``master_extra`` adds master.cf lines (a ``pipe`` service to dovecot-lda).

Postfix needs root; :func:`support.peers.require_root` fails under CI and
skips elsewhere.  Start takes about 2.5 s, so share one instance per module
where tests allow.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.ca import IssuedCert
from support.peers import free_port, require_program, require_root, wait_for_port

SYSTEM_MASTER_CF = Path("/etc/postfix/master.cf")
MAILDIR_OWNER = 65534  # nobody: Postfix's virtual agent will not deliver as root


@dataclass
class Postfix:
    directory: Path
    port: int = field(default_factory=free_port)
    myhostname: str = "postfix.test"
    tls: IssuedCert | None = None
    relayhost: str | None = None
    main_extra: dict[str, str] = field(default_factory=dict)
    smtps_port: int | None = None  # also listen with implicit TLS (needs tls)
    running: bool = False
    address: str = "127.0.0.1"  # the listening (and inet_interfaces) address
    master_extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Postfix's daemons run as postfix/nobody and must reach their
        # directories, but pytest's tmp_path sits under a 0700 directory: the
        # instance lives in its own 0755 temporary directory, linked from
        # *directory* for inspection and removed by stop().
        self.root = Path(tempfile.mkdtemp(prefix="phaserlink-postfix-"))
        self.root.chmod(0o755)
        link = self.directory / "postfix"
        if not link.exists():
            link.symlink_to(self.root)
        self.etc = self.root / "etc"
        self.maildir = self.root / "mail" / "catchall"
        self.log_path = self.root / "postfix.log"

    # -- configuration -----------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        d = self.root
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(d / "queue"),
            "data_directory": str(d / "data"),
            "myhostname": self.myhostname,
            "mydomain": "postfix.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",  # Postfix finds no interface for 127.0.0.4; master.cf binds it
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtp_dns_support_level": "disabled",
            "maillog_file": str(self.log_path),
            # Without this, a log outside /var is a fatal (and silent) error.
            "maillog_file_prefixes": str(d),
            "alias_maps": "",
            "alias_database": "",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
        }
        if self.relayhost:
            settings["relayhost"] = self.relayhost
            settings["default_transport"] = "smtp"
        else:
            settings.update(
                {
                    "virtual_mailbox_domains": "static:all",
                    "virtual_mailbox_base": str(d / "mail"),
                    "virtual_mailbox_maps": "static:catchall/",
                    "virtual_uid_maps": f"static:{MAILDIR_OWNER}",
                    "virtual_gid_maps": f"static:{MAILDIR_OWNER}",
                    "virtual_minimum_uid": "1",
                }
            )
        if self.tls is not None:
            settings.update(
                {
                    "smtpd_tls_cert_file": str(self.tls.certificate),
                    "smtpd_tls_key_file": str(self.tls.key),
                    "smtpd_tls_security_level": "may",
                    "smtpd_tls_received_header": "yes",
                    "smtpd_tls_loglevel": "1",
                }
            )
        settings.update(self.main_extra)
        return settings

    def master_cf(self) -> str:
        """The system master.cf without chroot, listening on our port only."""
        out = []
        for line in SYSTEM_MASTER_CF.read_text().splitlines():
            if line[:1] in ("", "#", " ", "\t"):
                out.append(line)
                continue
            fields = line.split()
            if len(fields) >= 8 and fields[1] == "inet":
                continue  # the system's port 25 listener
            if len(fields) >= 8:
                fields[4] = "n"
                line = " ".join(fields)
            out.append(line)
        out.append(f"{self.address}:{self.port} inet n - n - - smtpd")
        if self.smtps_port is not None:
            out.append(f"{self.address}:{self.smtps_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes")
        out.extend(self.master_extra)
        return "\n".join(out) + "\n"

    def write_config(self) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.etc / "main.cf").write_text(text)
        (self.etc / "master.cf").write_text(self.master_cf())
        for sub in ("queue", "data", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", "postfix")
        if not self.relayhost:
            shutil.chown(self.root / "mail", MAILDIR_OWNER, MAILDIR_OWNER)

    # -- lifecycle ---------------------------------------------------------------

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        program = require_program("postfix")
        return subprocess.run(
            [program, "-c", str(self.etc), *args], capture_output=True, text=True, check=check, timeout=60
        )

    def start(self) -> "Postfix":
        require_root("a private Postfix instance")
        self.write_config()
        result = self.postfix("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stdout}{result.stderr}{self.log()}")
        self.running = True
        try:
            wait_for_port(self.port, host=self.address, timeout=20)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"postfix does not listen on {self.port}: {self.log()}")
        return self

    def stop(self) -> None:
        """Stop the instance; keep its log beside *directory*; remove the rest."""
        if self.running:
            self.postfix("stop", check=False)
            self.running = False
            self._wait_for_master_exit()
        if self.root.exists():
            if self.log_path.exists():
                shutil.copy(self.log_path, self.directory / "postfix.log")
            shutil.rmtree(self.root, ignore_errors=True)

    def _wait_for_master_exit(self, timeout: float = 10.0) -> None:
        pid_file = self.root / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().strip())
                Path(f"/proc/{pid}").stat()
            except (OSError, ValueError):
                return
            time.sleep(0.05)

    def flush(self) -> None:
        self.postfix("flush", check=False)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- what arrived ------------------------------------------------------------

    def message_paths(self) -> list[Path]:
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        return sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))

    def messages(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in self.message_paths()
        ]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Path]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.message_paths()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"Postfix delivered {len(self.message_paths())} of {count}; log:\n{self.log()[-3000:]}")

    def __enter__(self) -> "Postfix":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

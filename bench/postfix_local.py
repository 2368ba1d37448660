"""A private Postfix that accepts mail for one domain and delivers it into a
Maildir, durably: the comparison the appliance's SMTP figures are read against.

Postfix's smtpd hands each message to cleanup, which fsyncs it into the queue
before the 250; its virtual(8) agent then writes the Maildir.  That is the
same promise PhaserLink's 250 makes (on disk, fsync'd), so the rates compare
like with like.  Root only (Postfix insists); everything lives under one
temporary directory and is stopped by ``postfix stop``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

MASTER_LINES = {
    "smtp      inet": None,  # replaced by our own listener
}


class PostfixLocal:
    def __init__(self, directory: Path, port: int, domain: str, mailbox: str):
        self.dir = Path(directory)
        self.port = port
        self.domain = domain
        self.mailbox = mailbox
        self.etc = self.dir / "etc"
        self.mail = self.dir / "mail"

    def write_config(self) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        # postfix's unprivileged daemons must traverse down to data/ and mail/
        self.dir.chmod(0o755)
        self.dir.parent.chmod(0o755)
        for sub in ("queue", "data"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.mail.mkdir(exist_ok=True)
        shutil.chown(self.mail, "nobody", "nogroup")
        shutil.chown(self.dir / "data", "postfix")
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        out = [f"127.0.0.1:{self.port} inet n - n - - smtpd"]
        for line in master:
            if line.startswith("smtp ") and " inet " in line:
                continue
            # no chroot: the queue directory is ours
            parts = line.split()
            if len(parts) >= 8 and not line.startswith((" ", "#")) and parts[4] == "y":
                parts[4] = "n"
                line = " ".join(parts)
            out.append(line)
        out.append("postlog   unix-dgram n  -       n       -       1       postlogd")
        (self.etc / "master.cf").write_text("\n".join(out) + "\n")
        main = f"""
compatibility_level = 3.6
queue_directory = {self.dir / 'queue'}
data_directory = {self.dir / 'data'}
myhostname = postfix-bench.localhost
mydomain = localhost
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
maillog_file = {self.dir / 'postfix.log'}
maillog_file_prefixes = {self.dir}
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = inline:{{ {self.mailbox}@{self.domain}={self.mailbox}/ }}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_destination_concurrency_limit = 20
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
message_size_limit = 0
virtual_mailbox_limit = 0
smtpd_recipient_restrictions = permit_mynetworks, reject
"""
        (self.etc / "main.cf").write_text(main)

    def start(self) -> None:
        self.write_config()
        subprocess.run(["postfix", "-c", str(self.etc), "check"], check=False, capture_output=True)
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 20
        import socket

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not start; see {self.dir / 'postfix.log'}")

    def delivered(self) -> int:
        new = self.mail / self.mailbox / "new"
        return len(list(new.iterdir())) if new.exists() else 0

    def pids(self) -> list[int]:
        """Postfix daemons started from our config directory."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            name = Path(cmd[0].decode(errors="replace")).name if cmd and cmd[0] else ""
            if name in ("master", "smtpd", "cleanup", "qmgr", "virtual", "trivial-rewrite") and (
                str(self.etc).encode() in environ or str(self.etc).encode() in b" ".join(cmd)
            ):
                found.append(int(proc.name))
        return found

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False, capture_output=True)

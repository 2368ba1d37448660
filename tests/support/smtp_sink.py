"""Postfix's ``smtp-sink`` as a catch-all SMTP server for tests.

``SmtpSink(directory, soft_reject=["RCPT"]).start()`` listens on a free
loopback port (``sink.port``) and saves each message it accepts as one file.
:meth:`SmtpSink.messages` parses them back: the envelope smtp-sink recorded
(its ``X-Mail-Args``/``X-Rcpt-Args`` headers) and the message exactly as the
client sent it, unstuffed, with LF line ends (smtp-sink's own headers and its
``Received:`` line removed), both as bytes and as an ``email`` object.

Faults, as smtp-sink implements them (each a list of SMTP command names such
as ``"RCPT"``, ``"DATA"``, ``"."``, ``"EHLO"``, ``"MAIL"``, ``"CONNECT"``):
``soft_reject`` (-r, 4xx), ``hard_reject`` (-f, 5xx), ``hangup_421`` (-Q,
421 then disconnect), ``disconnect`` (-q, hang up without a reply), and
``data_delay`` (-w, seconds before the reply to DATA).  :meth:`restart` stops
it and starts it again on the same port, with other faults, to model a
server that gets better.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import pwd
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from support.peers import free_port, require_program, stop_process, wait_for_port

SINK_HEADERS = (b"x-client-addr:", b"x-client-proto:", b"x-helo-args:", b"x-mail-args:", b"x-rcpt-args:")


@dataclass
class SinkMessage:
    path: Path
    saved: bytes  # the file as smtp-sink wrote it
    helo: str
    mail_from: str  # '' for the null reverse-path
    mail_params: str  # e.g. "SIZE=1234"
    recipients: list[str]
    raw: bytes  # the message as the client sent it (unstuffed, LF line ends)

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def body(self) -> bytes:
        """The bytes after the header block."""
        return self.raw.partition(b"\n\n")[2]


def _angle(text: str) -> tuple[str, str]:
    text = text.strip()
    if text.startswith("<"):
        address, _, rest = text[1:].partition(">")
        return address, rest.strip()
    address, _, rest = text.partition(" ")
    return address, rest.strip()


def parse_saved(path: Path) -> SinkMessage:
    saved = path.read_bytes()
    lines = saved.split(b"\n")
    helo, mail_from, params, rcpts = "", "", "", []
    i = 0
    while i < len(lines) and lines[i].lower().startswith(SINK_HEADERS):
        name, _, value = lines[i].decode("utf-8", "replace").partition(":")
        value = value.strip()
        if name.lower() == "x-helo-args":
            helo = value
        elif name.lower() == "x-mail-args":
            mail_from, params = _angle(value)
        elif name.lower() == "x-rcpt-args":
            rcpts.append(_angle(value)[0])
        i += 1
    if i < len(lines) and lines[i].lower().startswith(b"received:"):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    # smtp-sink ends each dump with one empty line of its own.
    raw = b"\n".join(lines[i:])
    if raw.endswith(b"\n\n"):
        raw = raw[:-1]
    return SinkMessage(path, saved, helo, mail_from, params, rcpts, raw)


@dataclass
class SmtpSink:
    directory: Path
    port: int = field(default_factory=free_port)
    soft_reject: Iterable[str] = ()
    hard_reject: Iterable[str] = ()
    hangup_421: Iterable[str] = ()
    disconnect: Iterable[str] = ()
    data_delay: float | None = None
    hostname: str = "sink.test"
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.dump_dir = self.directory / "saved"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.directory / "smtp-sink.log"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def command_line(self) -> list[str]:
        program = require_program("smtp-sink", "postfix")
        args = [program, "-h", self.hostname, "-d", str(self.dump_dir) + "/%Y%m%d%H%M%S."]
        if os.geteuid() == 0:
            # As root smtp-sink insists on -u; staying root lets it write
            # into pytest's 0700 tmp directories.
            args += ["-u", pwd.getpwuid(os.geteuid()).pw_name]
        for option, commands in (("-r", self.soft_reject), ("-f", self.hard_reject),
                                 ("-Q", self.hangup_421), ("-q", self.disconnect)):
            commands = list(commands)
            if commands:
                args += [option, ",".join(commands)]
        if self.data_delay is not None:
            args += ["-w", str(int(self.data_delay))]
        return args + [f"127.0.0.1:{self.port}", "100"]

    def start(self) -> "SmtpSink":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command_line(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"smtp-sink did not start: {self.log_path.read_text(errors='replace')}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def restart(self, **faults) -> "SmtpSink":
        """Stop, change fault options (e.g. ``hangup_421=()``), start again on the same port."""
        self.stop()
        for name, value in faults.items():
            if not hasattr(self, name):
                raise TypeError(f"unknown option {name}")
            setattr(self, name, value)
        return self.start()

    def messages(self) -> list[SinkMessage]:
        """Every saved message, oldest first."""
        paths = sorted(self.dump_dir.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [parse_saved(p) for p in paths if p.is_file()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[SinkMessage]:
        """Block (in a thread or a non-reactor test) until *count* messages are saved."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"smtp-sink saved {len(self.messages())} of {count} messages")

    def __enter__(self) -> "SmtpSink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

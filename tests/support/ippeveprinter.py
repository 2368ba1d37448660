"""ippeveprinter (Debian cups-ipp-utils) as a real IPP Everywhere printer.

It needs a D-Bus system bus even with DNS-SD off, so each printer gets a
private ``dbus-daemon`` (docs/ipp.md, "Peers").  ``-k`` keeps every document as ``SPOOL/ID-NAME.EXT``
byte-identical; job ids restart at 1 on each start, so every start gets a
fresh spool folder.  With a completion command (``-c``) a job completes when
the command exits, and the command reports the page count on stderr
(``ATTR: job-impressions=N job-impressions-completed=N``); the command here
also records the ``IPP_*`` environment it got (sides, copies, ...) beside
the document, as ``ID.env``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.peers import free_port, require_program, stop_process, wait_for_port

READY_TIMEOUT = 15.0

# The completion command: count the pages (PDF: Ghostscript would be slow;
# a /Type /Page count is enough for the test documents; PWG raster and URF
# are decoded by support/raster.py, which fails the job, as a printer would,
# when the raster is cut short or not at a resolution and colour space the
# printer lists), say them, keep the job's IPP_* environment, wait DELAY
# seconds (a printer that is busy).
RASTER_CHECK = Path(__file__).with_name("raster.py")
COMPLETE_SCRIPT = """#!/bin/sh
out="$(dirname "$1")"
env | grep '^IPP_' | sort > "$1.env"
case "$(head -c 7 "$1")" in
  RaS2*|UNIRAST) pages=$(python3 {raster_check} "$1") || exit 1;;
  *) pages=$(grep -a -c '/Type */Page[^s]' "$1" 2>/dev/null || echo 0);;
esac
[ "$pages" -gt 0 ] || pages=1
sleep "${IPPEVE_DELAY:-0}"
echo "ATTR: job-impressions=$pages job-impressions-completed=$pages" >&2
exit 0
"""


@dataclass
class IppEvePrinter:
    """One running ippeveprinter on a free loopback port."""

    directory: Path
    formats: str = "application/pdf,image/pwg-raster,image/jpeg"
    name: str = "phaserlink-test"
    delay: float = 0.0
    duplex: bool = False  # -2: sides-supported has the two-sided values
    keys: Path | None = None  # -K: TLS credentials NAME.crt/NAME.key (NAME = localhost); IPPS on the same port
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    dbus: subprocess.Popen | None = None
    starts: int = 0

    @property
    def uri(self) -> str:
        return f"ipp://localhost:{self.port}/ipp/print"

    @property
    def ipps_uri(self) -> str:
        return f"ipps://localhost:{self.port}/ipp/print"

    @property
    def spool(self) -> Path:
        return self.directory / f"spool-{self.starts}"

    def start(self) -> "IppEvePrinter":
        exe = require_program("ippeveprinter", "cups-ipp-utils")
        dbus = require_program("dbus-daemon", "dbus")
        self.directory.mkdir(parents=True, exist_ok=True)
        sock = self.directory / "dbus.sock"
        if self.dbus is None:
            if sock.exists():
                sock.unlink()
            self.dbus = subprocess.Popen([dbus, "--session", "--nofork", "--nopidfile",
                                          f"--address=unix:path={sock}"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + READY_TIMEOUT
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        script = self.directory / "complete.sh"
        script.write_text(COMPLETE_SCRIPT.replace("{raster_check}", str(RASTER_CHECK)))
        script.chmod(0o755)
        self.starts += 1
        self.spool.mkdir()
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={sock}", IPPEVE_DELAY=str(self.delay))
        self.log_path = self.directory / f"ippeveprinter-{self.starts}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "-n", "localhost", "-r", "off", "-p", str(self.port), "-k", "-d", str(self.spool),
                 "-f", self.formats, "-c", str(script), *(["-2"] if self.duplex else []),
                 *(["-K", str(self.keys)] if self.keys else []), self.name],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(self.port, timeout=READY_TIMEOUT)
        except Exception:
            self.stop()
            raise
        return self

    def documents(self) -> list[Path]:
        """Every document this printer kept, over all its starts, oldest first."""
        found = []
        for n in range(1, self.starts + 1):
            d = self.directory / f"spool-{n}"
            found += sorted((p for p in d.glob("*") if p.is_file() and p.suffix not in (".env", ".prn")),
                            key=lambda p: p.stat().st_mtime)
        return [p for p in found if p.name[:1].isdigit()]

    def wait_documents(self, count: int, timeout: float = 20.0) -> list[Path]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            docs = self.documents()
            if len(docs) >= count:
                return docs
            time.sleep(0.05)
        raise AssertionError(f"{len(self.documents())} documents at the printer, wanted {count}\n{self.log()}")

    def environment(self, document: Path) -> dict[str, str]:
        env = Path(str(document) + ".env")
        if not env.exists():
            return {}
        return dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except (OSError, AttributeError):
            return ""

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            stop_process(self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self.dbus is not None:
            stop_process(self.dbus)
            self.dbus = None


def start_ippeveprinter(tmp_path: Path, **kwargs) -> IppEvePrinter:
    return IppEvePrinter(tmp_path / "ippeve", **kwargs).start()


__all__ = ["IppEvePrinter", "start_ippeveprinter"]

"""One printer's service on the real reactor with the real toolkit (MIME
extraction, Ghostscript, img2pdf, LibreOffice), mail delivered straight into
its Maildir, status mail caught by a FakeQueue: the rig of the fault tests
and the conversion tests (it was written three times, once per test file).

:class:`LivePrinter` takes its output from :meth:`LivePrinter.make_output`;
:class:`FilePrinter` prints into a folder (``file:``), the one most tests
read back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from support.printer_fakes import FakeQueue, fake_report, make_site
from twisted.internet import defer, task

from phaserlink.pop3_store.maildir import MaildirStore
from phaserlink.printer.service import PrinterService
from phaserlink.printer.toolkit import default_toolkit


def reactor():
    from twisted.internet import reactor as r

    return r


@dataclasses.dataclass
class LivePrinter:
    """Printer ``lp`` of :func:`make_site`; *spool* (default ``tmp/var``) may
    be elsewhere (a small tmpfs), *printer* replaces PrinterConfig fields
    (``{"formats": ("pdf",)}``)."""

    tmp: Path
    spool: Path | None = None
    printer: dict = dataclasses.field(default_factory=dict)
    queue: FakeQueue = dataclasses.field(default_factory=FakeQueue)
    service: PrinterService | None = None

    def make_output(self):
        raise NotImplementedError

    def start(self) -> "LivePrinter":
        site = make_site(self.tmp)
        self.spool = self.spool or site.appliance.spool
        site = dataclasses.replace(site, appliance=dataclasses.replace(site.appliance, spool=self.spool),
                                   printers={"lp": dataclasses.replace(site.printers["lp"], **self.printer)})
        self.store = MaildirStore(self.tmp / "mail", list(site.printers))
        tools = dataclasses.replace(default_toolkit(), write_report=fake_report)
        self.service = PrinterService(site, self.store, self.queue, reactor=reactor(), tools=tools,
                                      outputs={"lp": self.make_output()})
        self.service.startService()
        return self

    def stop(self) -> defer.Deferred:
        return defer.maybeDeferred(self.service.stopService)

    @property
    def dispatcher(self):
        return self.service.runners["lp"].dispatcher

    def deliver(self, data: bytes) -> None:
        d = self.store.deliver(["lp"])
        d.write(data)
        d.commit()

    def states(self) -> list[dict]:
        """Every job in the spool, as its state.json says."""
        root = self.spool / "jobs" / "lp"
        return [json.loads((d / "state.json").read_text()) for d in sorted(root.iterdir())
                if d.is_dir() and (d / "state.json").exists()]

    async def until(self, predicate, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; states: {self.states()}; "
                                     f"mail: {[m.text for m in self.queue.messages]}")
            await task.deferLater(reactor(), 0.05, lambda: None)

    async def finish_mail(self, data: bytes, timeout: float = 25.0) -> list[str]:
        """Deliver *data* and wait for its job to be printed or to fail; the mail events."""
        self.deliver(data)
        await self.until(lambda: "printed" in self.queue.events() or "failed" in self.queue.events(),
                         "the job to finish", timeout)
        return self.queue.events()


@dataclasses.dataclass
class FilePrinter(LivePrinter):
    """A ``file:`` printer writing into *out_dir* (default ``tmp/printed``)."""

    out_dir: Path | None = None

    def make_output(self):
        from phaserlink.printer.output.file_output import FileOutput

        self.out_dir = self.out_dir or self.tmp / "printed"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return FileOutput(f"file:{self.out_dir}", self.out_dir, reactor=reactor())

    def printed(self) -> list[Path]:
        """What the printer got, one file a document."""
        return sorted(p for p in self.out_dir.iterdir() if not p.name.startswith("."))

    def leftovers(self) -> list[Path]:
        """Half-written files the output left behind (it must leave none)."""
        return sorted(p for p in self.out_dir.iterdir() if p.name.startswith("."))

    async def print_mail(self, data: bytes, timeout: float = 25.0) -> list[Path]:
        """Deliver *data*, wait until it is printed (failing otherwise), what was printed."""
        events = await self.finish_mail(data, timeout)
        assert "printed" in events, [m.text for m in self.queue.messages]
        return self.printed()


__all__ = ["FilePrinter", "LivePrinter", "reactor"]

"""Conversions under load: 20 photos and a 50-page .docx, from the SMTP 250 to the last byte at the printer.

    python3 bench/convert_load.py                        # 20 photos of 3-5 MB, a 50-page .docx (2-4 minutes)
    python3 bench/convert_load.py --quick                # 5 photos, a 10-page .docx twice
    python3 bench/convert_load.py --formats postscript   # to a PostScript printer (then pdftops too)

The appliance runs as a user runs it (``twistd -n phaserlink``) with two
printers, each ``socket://`` to its own real p910nd on loopback (writing
what it receives to /dev/shm, so the printers' disk writes are not the
appliance's):

- ``convert``, taking ``--formats`` (default ``pdf``): gets one plain mail
  with the photos as JPEG attachments (camera resolution, 4032 x 3024, made
  here with Pillow from gradients and noise, 3-5 MB each), then a mail
  with a .docx of 50 pages of text and tables (a minimal WordprocessingML
  zip written here), five times in a row (``--docx-mails``: LibreOffice
  takes a few seconds for it, and the probe needs the samples), as a phone
  or a mail program sends them;
- ``probe``, taking PostScript: while the conversions run, a second SMTP
  connection sends it a small PostScript job every 100 ms (one at a time:
  the next leaves once the last reached the printer, at the next 100 ms
  tick), first for a few seconds with nothing else running.

Figures, for each phase (idle, photos, docx):

- the big mail: DATA start -> 250, and 250 -> the last byte at the printer;
- the probe's latency, 250 -> its file complete at the probe printer
  (p50, p99, max, how many);
- the peak RSS of the twistd process (VmHWM, reset before each phase) and
  of each converter process it starts, by name (their VmHWM, sampled every
  20 ms; a converter that lives less than a sample may be missed);
- the load average when it ran (the machine may be shared).

Targets (issue 10): probe p99 < 250 ms while LibreOffice converts; twistd
peak RSS < 64 MB.  It prints figures and asserts nothing.  Needs root
(p910nd's lock directory) and the peers from scripts/install-peers
(LibreOffice, Ghostscript, p910nd, ucspi-tcp).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
# The appliance measured is this checkout's, as in the tests (tests/conftest.py).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from measure import reset_hwm, vm_hwm_kb  # noqa: E402
from print_path import SMTPSender, make_message  # noqa: E402
from support.appliance import Appliance  # noqa: E402
from support.p910nd import P910ndPrinter  # noqa: E402

CONVERT, PROBE = "convert", "probe"
CONVERT_ADDRESS, PROBE_ADDRESS = "convert@phaserlink.test", "probe@phaserlink.test"
#: A phone camera's 12 megapixels.
PHOTO_SIZE = (4032, 3024)
PROBE_INTERVAL = 0.1
SAMPLE_INTERVAL = 0.02


# -- inputs ------------------------------------------------------------------


def make_photo(path: Path, sigma: float, seed: int) -> None:
    """A 12-megapixel JPEG: a colour gradient under Gaussian noise, whose
    strength (*sigma*) sets the size (about 3.7 MB at 10, 4.8 MB at 14)."""
    from PIL import Image, ImageChops

    random.seed(seed)
    w, h = PHOTO_SIZE
    gradient = Image.linear_gradient("L").rotate(random.choice((0, 90, 180, 270))).resize((w, h))
    channels = []
    for i in range(3):
        tint = ImageChops.multiply(gradient, Image.new("L", (w, h), 120 + random.randrange(136)))
        channels.append(ImageChops.add(tint, Image.effect_noise((w, h), sigma), 1.0, -128))
    Image.merge("RGB", channels).save(path, "JPEG", quality=90)


def make_photos(directory: Path, count: int) -> list[Path]:
    photos = []
    for n in range(count):
        path = directory / f"IMG_{n + 1:04d}.JPG"
        make_photo(path, 9.5 + 4.5 * n / max(count - 1, 1), n)
        photos.append(path)
    return photos


_WORDS = ("printer appliance mail photo office document conversion page paper toner duplex queue "
          "status sender letter report figure table summary quarter budget meeting agenda minutes").split()


def make_docx(path: Path, pages: int) -> None:
    """A .docx of *pages* pages of text: the three parts Word and
    LibreOffice need ([Content_Types].xml, the package relationship,
    word/document.xml), a heading, 4 paragraphs and a table of 16 x 5 cells
    a page, a page break between pages (python-docx is not installed, and
    not needed for this)."""
    rnd = random.Random(4711)
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    body = []
    for page in range(pages):
        if page:
            body.append('<w:p><w:r><w:br w:type="page"/></w:r></w:p>')
        body.append(f'<w:p><w:r><w:rPr><w:b/><w:sz w:val="32"/></w:rPr><w:t>Chapter {page + 1}</w:t></w:r></w:p>')
        for _ in range(4):
            text = " ".join(rnd.choice(_WORDS) for _ in range(45)).capitalize() + "."
            body.append(f"<w:p><w:r><w:t>{escape(text)}</w:t></w:r></w:p>")
        body.append(_table(rnd, rows=16, cols=5))
    document = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document {w}><w:body>'
                + "".join(body)
                + '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/><w:pgMar w:top="1440" w:right="1440" '
                  'w:bottom="1440" w:left="1440" w:header="708" w:footer="708" w:gutter="0"/></w:sectPr>'
                  "</w:body></w:document>")
    types = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
             '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
             '<Default Extension="xml" ContentType="application/xml"/>'
             '<Override PartName="/word/document.xml" ContentType="application/'
             'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
    rels = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", types)
        z.writestr("_rels/.rels", rels)
        z.writestr("word/document.xml", document)


def _table(rnd: random.Random, rows: int, cols: int) -> str:
    """A bordered table of figures, as reports have: LibreOffice's layout
    works harder on tables than on paragraphs."""
    border = "".join(f'<w:{side} w:val="single" w:sz="4" w:space="0" w:color="000000"/>'
                     for side in ("top", "left", "bottom", "right", "insideH", "insideV"))
    grid = "".join(f'<w:gridCol w:w="{9000 // cols}"/>' for _ in range(cols))
    cells = []
    for r in range(rows):
        row = "".join(
            f"<w:tc><w:p><w:r>{'<w:rPr><w:b/></w:rPr>' if r == 0 else ''}<w:t>"
            f"{escape(rnd.choice(_WORDS).capitalize() if r == 0 or c == 0 else f'{rnd.uniform(0, 9999):.2f}')}"
            "</w:t></w:r></w:p></w:tc>"
            for c in range(cols))
        cells.append(f"<w:tr>{row}</w:tr>")
    return (f'<w:tbl><w:tblPr><w:tblW w:w="5000" w:type="pct"/><w:tblBorders>{border}</w:tblBorders></w:tblPr>'
            f"<w:tblGrid>{grid}</w:tblGrid>{''.join(cells)}</w:tbl><w:p/>")


DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def write_mail(out: Path, recipient: str, subject: str, attachments: list[tuple[Path, str]]) -> None:
    """A plain multipart/mixed mail as a mail program writes it: a line of
    text, then each file base64-encoded, streamed from disk."""
    boundary = f"=_convbench_{os.getpid()}_{time.monotonic_ns()}"
    with open(out, "wb") as f:
        f.write((f"From: Alice <bench@client.test>\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
                 f"Message-ID: <{time.monotonic_ns()}.{os.getpid()}@client.test>\r\n"
                 f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
                 f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
                 f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease print.\r\n").encode())
        for path, content_type in attachments:
            f.write((f"--{boundary}\r\nContent-Type: {content_type}; name=\"{path.name}\"\r\n"
                     "Content-Transfer-Encoding: base64\r\n"
                     f"Content-Disposition: attachment; filename=\"{path.name}\"\r\n\r\n").encode())
            with open(path, "rb") as src:
                for chunk in iter(lambda: src.read(57 * 1024), b""):
                    f.write(base64.encodebytes(chunk).replace(b"\n", b"\r\n"))
        f.write(f"--{boundary}--\r\n".encode())


PROBE_PS = b"""%!PS-Adobe-3.0
%%Pages: 1
%%EndComments
%%Page: 1 1
/Helvetica findfont 12 scalefont setfont 72 720 moveto (PhaserLink latency probe) show showpage
%%EOF
"""


# -- measuring ---------------------------------------------------------------


def take_job(directory: Path) -> bool:
    """Is a complete job file in *directory*?  It is removed (so the next
    look is as cheap as the first)."""
    found = False
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("job-") and entry.name.endswith(".data"):
                os.unlink(entry.path)
                found = True
    return found


class Probe(threading.Thread):
    """Small PostScript jobs to the probe printer, one each 100 ms tick,
    each timed from its 250 to its file at the printer."""

    def __init__(self, port: int, printer: P910ndPrinter, work: Path):
        super().__init__(daemon=True)
        self.port, self.printer, self.work = port, printer, work
        self.phase = "idle"
        self.latencies: dict[str, list[float]] = {}
        self.timeline: list[tuple[float, float]] = []  # (the 250, latency ms) of each probe
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            data = self.work / "probe.ps"
            data.write_bytes(PROBE_PS)
            sender = SMTPSender(self.port)
            n = 0
            tick = time.monotonic()
            while not self.stopping.is_set():
                message = self.work / "probe.eml"
                make_message(data, message, 10_000 + n, recipient=PROBE_ADDRESS)
                n += 1
                phase = self.phase
                _, accepted = sender.send(message, recipient=PROBE_ADDRESS)
                deadline = accepted + 60
                while not take_job(self.printer.out):
                    if time.monotonic() > deadline:
                        raise TimeoutError("a probe job did not reach its printer in 60 s")
                    time.sleep(0.001)
                self.latencies.setdefault(phase, []).append((time.monotonic() - accepted) * 1000)
                self.timeline.append((accepted, (time.monotonic() - accepted) * 1000))
                tick += PROBE_INTERVAL
                now = time.monotonic()
                if tick < now:  # late: the next tick from now
                    tick = now
                self.stopping.wait(tick - now)
            sender.close()
        except BaseException as e:  # reported by the main thread
            self.error = e


def _children(pid: int) -> list[int]:
    """*pid*'s children, from each of its threads' ``children`` list (cheap:
    no walk over every process of a shared machine)."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            found += map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    except OSError:
        pass
    return found


def _tree(root: int) -> dict[int, str]:
    """The descendants of *root*: pid -> a name (comm, or the converter's module)."""
    found: dict[int, str] = {}
    frontier = _children(root)
    while frontier:
        nxt = []
        for pid in frontier:
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                if name.startswith("python"):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"twisted.scripts.twistd" in cmd:
                        continue  # twistd's own fork before the exec: its pages are twistd's
                    name = next((c.decode().rsplit(".", 1)[-1] for c in cmd.split(b"\0")
                                 if c.startswith(b"phaserlink.")), name)
            except OSError:
                continue
            found[pid] = name
            nxt += _children(pid)
        frontier = nxt
    return found


class MemoryWatch(threading.Thread):
    """Samples the twistd process's VmHWM and its children's, each 20 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.children: dict[str, float] = {}  # name -> peak MB in this phase
        self.converters_at_once = 0.0  # peak MB of all children together

    def new_phase(self) -> None:
        with self.lock:
            reset_hwm(self.pid)
            self.children = {}
            self.converters_at_once = 0.0

    def twistd_mb(self) -> float:
        return vm_hwm_kb(self.pid) / 1024

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_INTERVAL):
            together = 0.0
            tree = _tree(self.pid)
            with self.lock:
                for pid, name in tree.items():
                    try:
                        mb = vm_hwm_kb(pid) / 1024
                    except OSError:
                        continue
                    together += mb
                    self.children[name] = max(self.children.get(name, 0.0), mb)
                self.converters_at_once = max(self.converters_at_once, together)


def wait_for_print(printer: P910ndPrinter, app: Appliance, timeout: float, reported: set[str]) -> float:
    """Poll (1 ms) for the job file at *printer*; fail early, with the
    appliance's words, when the job is aborted or the appliance exits (a
    finished job's state leaves the spool, so its log line tells)."""
    deadline = time.monotonic() + timeout
    checked = 0.0
    while time.monotonic() < deadline:
        if list(printer.out.glob("job-*.data")):
            return time.monotonic()
        if time.monotonic() - checked > 0.5:
            checked = time.monotonic()
            if app.proc.poll() is not None:
                raise RuntimeError(f"the appliance exited\n{app.log()[-3000:]}")
            for line in app.log().splitlines():
                if f"printer {CONVERT} job" in line and (": aborted: " in line or ": canceled: " in line):
                    if line not in reported:  # not an earlier phase's
                        reported.add(line)
                        raise RuntimeError(line.split("] ", 1)[-1])
        time.sleep(0.001)
    raise TimeoutError(f"nothing reached the printer in {timeout:g} s\n{app.log()[-3000:]}")


def pages_of(path: Path) -> str:
    """Pages of what reached the printer (Ghostscript), for the report."""
    import subprocess

    head = path.read_bytes()[:8] if path.stat().st_size else b""
    gs = shutil.which("gs")
    if gs is None:
        return "?"
    if head.startswith(b"%PDF"):
        cmd = [gs, "-q", "-dNODISPLAY", "-dNOSAFER", "-c", f"({path}) (r) file runpdfbegin pdfpagecount = quit"]
    else:
        cmd = [gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=bbox", str(path)]
        out = subprocess.run(cmd, capture_output=True, text=True).stderr
        return str(out.count("%%BoundingBox"))
    return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[-1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def report_probe(probe: Probe, phase: str) -> str:
    values = probe.latencies.get(phase, [])
    if not values:
        return "probe: no job in this phase"
    return (f"probe (4 KB PostScript to the other printer, {len(values)} jobs): "
            f"p50 {statistics.median(values):.0f} ms, p99 {percentile(values, 0.99):.0f} ms, "
            f"max {max(values):.0f} ms")


def report_memory(watch: MemoryWatch) -> str:
    with watch.lock:
        children = ", ".join(f"{name} {mb:.0f} MB" for name, mb in
                             sorted(watch.children.items(), key=lambda kv: -kv[1]) if mb >= 1)
        together = watch.converters_at_once
    return (f"twistd peak RSS {watch.twistd_mb():.1f} MB; converters' peak RSS: {children or 'none seen'} "
            f"(all together at most {together:.0f} MB)")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 photos and a 10-page .docx")
    parser.add_argument("--formats", default="pdf", help="what the converting printer takes (default pdf)")
    parser.add_argument("--photos", type=int, help="number of photos (default 20, 5 with --quick)")
    parser.add_argument("--pages", type=int, help="pages of the .docx (default 50, 10 with --quick)")
    parser.add_argument("--docx-mails", type=int, help="the .docx mailed this many times in a row, for more "
                        "probes while LibreOffice converts (default 5, 2 with --quick)")
    args = parser.parse_args()
    photos_n = args.photos or (5 if args.quick else 20)
    pages_n = args.pages or (10 if args.quick else 50)
    docx_n = args.docx_mails or (2 if args.quick else 5)
    idle_s = 2.0 if args.quick else 5.0

    print(f"start: {load()} ({os.cpu_count()} cores)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="phaserlink-convbench-"))
    made = time.monotonic()
    inputs = work / "inputs"
    inputs.mkdir()
    photos = make_photos(inputs, photos_n)
    docx = inputs / "report.docx"
    make_docx(docx, pages_n)
    photo_mail = work / "photos.eml"
    write_mail(photo_mail, CONVERT_ADDRESS, "Holiday photos", [(p, "image/jpeg") for p in photos])
    docx_mails = []
    for n in range(docx_n):  # each its own message (Message-ID): the same one again would not print
        docx_mails.append(work / f"docx-{n}.eml")
        write_mail(docx_mails[-1], CONVERT_ADDRESS, f"Quarterly report {n + 1}", [(docx, DOCX_TYPE)])
    sizes = [p.stat().st_size / 1e6 for p in photos]
    print(f"inputs made in {time.monotonic() - made:.0f} s: {photos_n} JPEGs {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} of "
          f"{min(sizes):.1f}-{max(sizes):.1f} MB ({sum(sizes):.0f} MB, mail {photo_mail.stat().st_size / 1e6:.0f} MB); "
          f"a {pages_n}-page .docx of {docx.stat().st_size / 1e3:.0f} KB", flush=True)

    # The printers write what they receive to tmpfs: a real printer's disk
    # is not the appliance's, and 1 GB of PostScript landing on the spool's
    # disk would stall the appliance's fsyncs for the printer's sake.
    shm = Path("/dev/shm")
    printer_dir = Path(tempfile.mkdtemp(prefix="phaserlink-convbench-printers-",
                                        dir=shm if shm.is_dir() else work))
    printers = {}
    for name in (CONVERT, PROBE):
        (printer_dir / name).mkdir()
        printers[name] = P910ndPrinter(printer_dir / name)
        printers[name].start()
    app = Appliance(work / "appliance")
    app.directory.mkdir()
    app.appliance_extra = "max_message_size = 1G\n"
    app.sections = "".join(
        f"[printer:{name}]\nsender_auth = none\naddresses = {address}\noutput = {printers[name].uri()}\n"
        f"allowed_senders = *\nformats = {formats}\nnotify = none\n\n"
        for name, address, formats in ((CONVERT, CONVERT_ADDRESS, args.formats), (PROBE, PROBE_ADDRESS, "postscript")))
    probe = watch = None
    try:
        app.start()
        pid = app.proc.pid
        print(f"twistd (pid {pid}) started: RSS {vm_hwm_kb(pid) / 1024:.1f} MB; converting printer takes "
              f"{args.formats}", flush=True)
        watch = MemoryWatch(pid)
        watch.start()
        probe = Probe(app.smtp_port, printers[PROBE], work)
        watch.new_phase()
        probe.start()
        time.sleep(idle_s)
        print(f"idle ({idle_s:g} s): {report_probe(probe, 'idle')}; {report_memory(watch)}", flush=True)
        sender = SMTPSender(app.smtp_port)
        reported: set[str] = set()
        for phase, mails, what in (("photos", [photo_mail], f"{photos_n} photos"),
                                   ("docx", docx_mails, f"a {pages_n}-page .docx")):
            watch.new_phase()
            probe.phase = phase
            began, times, printed_what = time.monotonic(), [], ""
            for mail in mails:
                started, accepted = sender.send(mail, recipient=CONVERT_ADDRESS)
                try:
                    done = wait_for_print(printers[CONVERT], app, timeout=900, reported=reported)
                except RuntimeError as e:
                    print(f"{what}: NOT PRINTED after {time.monotonic() - accepted:.1f} s: {e}", flush=True)
                    break
                [printed] = printers[CONVERT].out.glob("job-*.data")
                times.append((accepted - started, done - accepted))
                printed_what = f"{pages_of(printed)} pages, {printed.stat().st_size / 1e6:.1f} MB of {args.formats}"
                printed.unlink()
            ended = time.monotonic()
            probe.phase = f"after {phase}"
            if times:
                each = ", ".join(f"{t:.1f}" for _, t in times)
                print(f"{what} ({mails[0].stat().st_size / 1e6:.1f} MB mail{f', {len(times)} in a row' if len(mails) > 1 else ''}): "
                      f"250 after {max(t for t, _ in times):.2f} s, then 250 -> last byte at the printer {each} s "
                      f"({printed_what}); {load()}", flush=True)
            print(f"  {report_probe(probe, phase)}", flush=True)
            slow = sorted((ms, at - began) for at, ms in probe.timeline if began <= at <= ended)[-3:]
            if slow:
                print("  slowest probes: " + ", ".join(f"{ms:.0f} ms at {t:.1f} s" for ms, t in reversed(slow)),
                      flush=True)
            print(f"  {report_memory(watch)}", flush=True)
            if probe.error:
                raise probe.error
        sender.close()
        print("targets: probe p99 < 250 ms while LibreOffice converts; twistd peak RSS < 64 MB")
    finally:
        if probe is not None:
            probe.stopping.set()
            probe.join(5)
        if watch is not None:
            watch.stopping.set()
        app.stop()
        for printer in printers.values():
            printer.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(printer_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

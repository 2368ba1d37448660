"""What twistd imports at start-up: only what the configured site uses.

The printer path's memory target (peak RSS under 64 MB) is met only if the
idle appliance leaves out what it does not run in-process: the sender
verification libraries (their work runs in verifier worker processes; with
``verify_processes = 0`` they load with the first check), the IPP client (no
``ipp://`` printer configured), ``twisted.names`` (no MX look-up yet) and the
image converters.  Each test starts the real twistd on the demo site
(etc/site.ini, with free ports and a private spool), lets it run, and reads
``sys.modules`` from inside it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from support.peers import free_port

ROOT = Path(__file__).resolve().parent.parent

#: Loaded only where the verification runs (the worker, or the lookup pool's first request).
VERIFICATION = ("dkim", "spf", "authheaders", "authres", "dns", "dns.resolver", "publicsuffix2",
                "phaserlink.trust.verify", "phaserlink.trust.stamp", "phaserlink.trust.dns")
#: Loaded with the first ipp:// or ipps:// printer.
IPP = ("phaserlink.printer.output.ipp", "phaserlink.net.ipp_client", "phaserlink.net.ipp_codec",
       "twisted.web.client")
#: Loaded by the first MX look-up.
MX = ("twisted.names", "twisted.names.client")
#: Loaded by the first photo to convert.
IMAGES = ("PIL", "PIL.Image", "img2pdf", "pillow_heif")

# twistd as the tests run it (support/twistd.py), with a timer that writes
# sys.modules once the appliance has run for a moment, then stops it.
RUN = """
import json, sys
from twisted.internet import default
default.install()
from twisted.internet import reactor

DUMP = sys.argv.pop(1)

def dump():
    with open(DUMP, "w") as f:
        json.dump(sorted(sys.modules), f)
    reactor.stop()

reactor.callWhenRunning(reactor.callLater, {delay}, dump)
from twisted.scripts.twistd import run
sys.argv[0] = "twistd"
run()
"""


def demo_site(directory: Path, appliance_extra: str = "", sections: str = "") -> Path:
    """etc/site.ini as shipped, on free ports and a spool in *directory*."""
    text = (ROOT / "etc" / "site.ini").read_text()
    for port in ("2525", "1110", "8631"):
        text, n = re.subn(rf"\btcp:{port}:", f"tcp:{free_port()}:", text)
        assert n == 1, port
    text = text.replace("spool = var", f"spool = {directory / 'var'}")
    text = text.replace("file:var/", f"file:{directory / 'var'}/")
    if appliance_extra:
        text = text.replace("[appliance]\n", f"[appliance]\n{appliance_extra}\n", 1)
    path = directory / "site.ini"
    path.write_text(text + "\n" + sections)
    return path


def modules_after_start(directory: Path, config: Path, delay: float = 1.0,
                        python: tuple[str, ...] = (sys.executable,), env=None) -> tuple[set[str], str]:
    """The modules twistd has imported *delay* seconds after it started, and its log."""
    dump = directory / "modules.json"
    log = directory / "twistd.log"
    result = subprocess.run(
        [*python, "-c", RUN.format(delay=delay), str(dump), "-n", "--pidfile=", "--logfile", str(log),
         "phaserlink", "--config", str(config)],
        cwd=directory, capture_output=True, text=True, timeout=90, env=env)
    text = log.read_text(errors="replace") if log.exists() else ""
    assert result.returncode == 0 and dump.exists(), f"{result.stdout}\n{result.stderr}\n{text}"
    return set(json.loads(dump.read_text())), text


def loaded(modules: set[str], names) -> list[str]:
    return sorted(set(names) & modules)


def test_the_demo_site_starts_without_the_heavy_modules(tmp_path):
    modules, log = modules_after_start(tmp_path, demo_site(tmp_path))
    assert "phaserlink.trust.gate" in modules and "phaserlink.admin.service" in modules  # it did start
    assert "verifier worker 1 started" in log  # the verification is there, in its own process
    assert loaded(modules, VERIFICATION) == []
    assert loaded(modules, IPP) == []
    assert loaded(modules, MX) == []
    assert loaded(modules, IMAGES) == []


def test_verification_in_process_still_waits_for_its_first_check(tmp_path):
    modules, log = modules_after_start(tmp_path, demo_site(tmp_path, "verify_processes = 0"))
    assert "verifier worker" not in log
    assert loaded(modules, VERIFICATION) == []


def test_an_ipp_printer_loads_the_ipp_client(tmp_path):
    printer = (f"[printer:office]\naddresses = office@phaserlink.localhost\n"
               f"output = ipp://127.0.0.1:{free_port()}/ipp/print\nsender_auth = none\nallowed_senders = *\n")
    modules, _log = modules_after_start(tmp_path, demo_site(tmp_path, sections=printer))
    assert loaded(modules, IPP) == sorted(IPP)
    assert loaded(modules, VERIFICATION) == []


def test_the_lookup_pool_imports_the_libraries_with_its_first_request(tmp_path):
    """``verify_processes = 0``: the first request loads them (here on a
    reactor without threads, so inline) and answers as before."""
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: x\n\nbody\n")
    code = f"""
import sys
from twisted.internet.task import Clock
from phaserlink.trust.verifier import ThreadVerifier
v = ThreadVerifier(Clock(), dns_servers=[("127.0.0.1", 9)])
assert "dkim" not in sys.modules and "dns.resolver" not in sys.modules
results = []
v.insert({str(message)!r}, 0, b"X-Test: 1\\n").addBoth(results.append)
assert results == [(len(b"X-Test: 1\\nSubject: x\\n\\nbody\\n"), 1)], results
assert "dkim" in sys.modules and "dns.resolver" in sys.modules
assert v.resolver.resolver.nameservers == ["127.0.0.1"] and v.resolver.resolver.port == 9
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert message.read_bytes() == b"X-Test: 1\nSubject: x\n\nbody\n"


def test_a_missing_verification_library_still_stops_twistd(tmp_path):
    """As before the libraries were imported lazily: twistd exits non-zero
    at start with the import error, instead of a worker failing each mail."""
    import dkim

    site_packages = Path(dkim.__file__).resolve().parent.parent
    shadow = tmp_path / "site-packages"  # the interpreter's site-packages, without dkimpy
    shadow.mkdir()
    for entry in site_packages.iterdir():
        if entry.name == "dkim" or entry.name.startswith("dkimpy-"):
            continue
        (shadow / entry.name).symlink_to(entry)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(ROOT), str(shadow))))
    config = demo_site(tmp_path)
    dump = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-S", "-c", RUN.format(delay=1.0), str(dump), "-n", "--pidfile=", "--logfile=-",
         "phaserlink", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, env=env)
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'dkim'" in result.stdout + result.stderr
    assert not dump.exists()

"""Acceptance (issue 10, "IPP output"): what the printer says decides the
job, on real IPP peers through the real appliance (twistd).

- ippeveprinter whose print command fails: the printer aborts the job; the
  job fails for good (never sent twice) and the status mail carries the
  printer's job-state-reasons;
- ippeveprinter where an operator cancels the job at the printer
  (``ipptool`` Cancel-Job): the job fails, the mail says canceled;
- a real cupsd queue that is not accepting jobs (``cupsreject``) or is
  stopped (``cupsdisable``): the job is held with ``printer-stopped`` and
  prints once after ``cupsaccept`` / ``cupsenable``, and CUPS's own
  completed-jobs list shows it once;
- ippeveprinter speaking IPPS with a certificate from the test CA:
  verified against ``output_ca`` it prints; with the system CAs (the ipps
  default, ``output_tls = required``) nothing is sent and the job waits;
  ``output_tls = none`` encrypts without checking.
"""

from __future__ import annotations

import subprocess
import time
from email.utils import make_msgid

import pytest

from support.e2e import wait_until
from support.peers import require_program
from test_ipp_e2e import Site, cups_queue, ippeve, job_mail, pdf_bytes, site_for  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

FAILING_SCRIPT = """#!/bin/sh
echo "ERROR: the fuser unit is too hot" >&2
exit 1
"""


def test_a_job_the_printer_aborts_fails_with_the_printers_reasons_and_is_not_sent_again(ippeve, site_for,
                                                                                        monkeypatch):
    import support.ippeveprinter as peer

    monkeypatch.setattr(peer, "COMPLETE_SCRIPT", FAILING_SCRIPT)
    printer = ippeve("failing")
    site = site_for({"office": printer.uri})
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("office", pdf_bytes(1, "accept-aborted"), message_id=message_id))
    fields = site.report(message_id, "failed", timeout=60)
    assert "X-PhaserLink-Job-State: aborted" in fields, fields
    text = site.status_text(message_id, "aborted")
    assert "job-state-reasons" in text, text
    site.settle("office")
    time.sleep(2)
    assert len(printer.documents()) == 1  # failed for good: not sent again


def test_a_job_canceled_at_the_printer_fails_and_the_mail_says_canceled(ippeve, site_for):
    ipptool = require_program("ipptool", "cups-ipp-utils")
    printer = ippeve(delay=20)  # the job stays processing at the printer
    site = site_for({"office": printer.uri})
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("office", pdf_bytes(1, "accept-canceled"), message_id=message_id))
    printer.wait_documents(1)
    out = subprocess.run([ipptool, "-t", printer.uri, "/usr/share/cups/ipptool/cancel-current-job.test"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    fields = site.report(message_id, "failed", timeout=60)
    text = site.status_text(message_id, "canceled")
    assert "canceled job" in text, (fields, text)
    assert len(printer.documents()) == 1


@pytest.mark.parametrize("stop, start, words", [
    ("cupsreject", "cupsaccept", "is not accepting jobs"),
    ("cupsdisable", "cupsenable", "is stopped"),
])
def test_a_cups_queue_not_accepting_or_stopped_holds_the_job_and_prints_it_once_when_back(
        cups_queue, site_for, stop, start, words):
    cups = cups_queue
    cups.run(stop, "Q")
    site = site_for({"cupsq": f"ipp://127.0.0.1:{cups.port}/printers/Q"})
    data = pdf_bytes(2, f"accept-{stop}")
    message_id = make_msgid(domain="example.com")
    site.send(job_mail("cupsq", data, message_id=message_id))

    site.wait_held("cupsq", 60)
    wait_until(lambda: words in site.appliance.log(), 20, f"the log saying the printer {words}", site.log)
    assert list(cups.printed.glob("job-*")) == []
    cups.run(start, "Q")
    fields = site.report(message_id, "printed", timeout=90)
    assert "X-PhaserLink-Job-State: completed" in fields
    [printed] = list(cups.printed.glob("job-*"))
    assert printed.read_bytes() == data
    listed = cups.run("lpstat", "-W", "completed", "-o", "Q").stdout
    assert len([line for line in listed.splitlines() if line.startswith("Q-")]) == 1, listed


# -- ipps:// to a real printer with a certificate ---------------------------------


@pytest.fixture
def tls_printer(tmp_path, test_ca):
    """ippeveprinter speaking IPPS (-K) with a certificate for localhost
    issued by the test CA."""
    import shutil

    from support.ippeveprinter import IppEvePrinter

    keys = tmp_path / "printer-keys"
    keys.mkdir()
    issued = test_ca.issue("localhost")
    shutil.copy(issued.certificate, keys / "localhost.crt")
    shutil.copy(issued.key, keys / "localhost.key")
    printer = IppEvePrinter(tmp_path / "ippeve-tls", keys=keys).start()
    yield printer
    printer.close()


def tls_site(tmp_path, printer, **keys) -> Site:
    from support.e2e import printer_section

    site = Site(tmp_path / "tls-site", {})
    site.configure(printer_section("secure", printer.ipps_uri, formats="pdf", **keys))
    site.appliance.start()
    return site


def test_ipps_verified_against_output_ca_prints_byte_identical(tmp_path, tls_printer, test_ca):
    site = tls_site(tmp_path, tls_printer, output_ca=str(test_ca.ca_path))
    try:
        data = pdf_bytes(2, "accept-ipps")
        message_id = make_msgid(domain="example.com")
        site.send(job_mail("secure", data, message_id=message_id))
        fields = site.report(message_id, "printed", timeout=60)
        assert "X-PhaserLink-Job-State: completed" in fields
        assert [d.read_bytes() for d in tls_printer.documents()] == [data]
    finally:
        site.stop()


def test_ipps_with_a_certificate_the_system_cas_do_not_know_holds_the_job_and_sends_nothing(tmp_path, tls_printer):
    """output_tls = required (the ipps default) without output_ca: the test
    CA is not among the system's, so nothing is sent; the job waits."""
    site = tls_site(tmp_path, tls_printer)
    try:
        message_id = make_msgid(domain="example.com")
        site.send(job_mail("secure", pdf_bytes(1, "accept-ipps-unknown-ca"), message_id=message_id))

        site.wait_held("secure", 60, "the job held on the unverified certificate", reason=None)
        wait_until(lambda: "certificate verify failed" in site.appliance.log(), 20, "the TLS failure logged",
                   site.log)
        time.sleep(1)
        assert tls_printer.documents() == []
        assert not [m for m in site.sink.messages() if message_id.encode() in m.raw
                    and b"X-PhaserLink-Event: failed" in m.raw]
    finally:
        site.stop()


def test_ipps_with_output_tls_none_encrypts_without_checking(tmp_path, tls_printer):
    site = tls_site(tmp_path, tls_printer, output_tls="none")
    try:
        data = pdf_bytes(1, "accept-ipps-unchecked")
        message_id = make_msgid(domain="example.com")
        site.send(job_mail("secure", data, message_id=message_id))
        site.report(message_id, "printed", timeout=60)
        assert [d.read_bytes() for d in tls_printer.documents()] == [data]
    finally:
        site.stop()

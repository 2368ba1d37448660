"""Acceptance (issue 10, "Job options": "and the same from the CUPS
backend's job options"): ``lp -o sides=two-sided-long-edge -n 2 -o
page-ranges=2`` on a real cupsd queue whose device is the PhaserLink
backend reaches the appliance (twistd) and, through it, ippeveprinter as
the IPP attributes ``sides``, ``copies`` and ``page-ranges``."""

from __future__ import annotations

import pytest

from support.cups import cupsd, phaserlink_queue  # noqa: F401  (cupsd is a fixture)
from support.e2e import SENDER, printer_section, wait_until
from test_ipp_e2e import Site, ippeve, pdf_bytes  # noqa: F401  (fixture)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]


def test_lp_job_options_reach_ippeveprinter_through_the_phaserlink_backend(cupsd, ippeve, tmp_path):
    printer = ippeve(duplex=True, formats="application/pdf")
    site = Site(tmp_path / "site", {})
    site.configure(printer_section("office", printer.uri, formats="pdf", senders=SENDER))
    try:
        site.appliance.start()
        phaserlink_queue(cupsd, "office@phaserlink.test", site.appliance.smtp_port, SENDER)
        document = tmp_path / "three.pdf"
        document.write_bytes(pdf_bytes(3, "accept-cups-options"))
        out = cupsd.run("lp", "-d", "pl", "-t", "CUPS options", "-n", "2", "-o", "sides=two-sided-long-edge",
                        "-o", "page-ranges=2", str(document))
        job_name = out.stdout.split()[3]  # "request id is pl-1 (1 file(s))"
        assert cupsd.wait_job_done(job_name, timeout=60) == "completed"
        [doc] = printer.wait_documents(1, timeout=60)
        env = wait_until(lambda: printer.environment(doc) or None, 30, "the printer's job attributes", site.log)
        assert env.get("IPP_SIDES") == "two-sided-long-edge", env
        assert env.get("IPP_COPIES") == "2", env
        assert env.get("IPP_PAGE_RANGES") in ("2", "2-2"), env
        assert doc.read_bytes() == document.read_bytes()
    finally:
        site.stop()

"""Jobs held for sender release on the running appliance (docs/trust.md,
issues 8 and 9): the printer that checks its senders with DMARC, mail sent
to it, the held job and the release mail waited for, and the address the
release mail asks the owner to reply to.

The hold tests (test_accept9_sender_hold, test_accept8_hold_timeout,
test_trust_appliance) each set these up the same way; what they check
about the held job stays in each test.
"""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

from support.appliance import Appliance
from support.console_http import jobs
from support.e2e import wait_until

# The address in the release mail's Reply-To: that releases the job.
RELEASE_ADDRESS = r"Reply-To: <(release\+[A-Za-z0-9_-]+@phaserlink\.test)>"


def dmarc_printer(out: Path, **keys: str) -> str:
    """A ``[printer:lp]`` section printing PostScript into *out*, for senders
    at good.test whose mail must pass DMARC; *keys* add or replace keys
    (``unauthenticated="hold"``, ``hold_timeout="6s"``, ``notify=...``)."""
    settings = {"addresses": "lp@phaserlink.test", "output": f"file:{out}", "allowed_senders": "*@good.test",
                "sender_auth": "dmarc", "formats": "postscript", "notify": "none", **keys}
    return "[printer:lp]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()) + "\n"


def deliver(appliance: Appliance, *mails: tuple[str, str, bytes], timeout: float = 30) -> None:
    """Send each (sender, recipient, message) in one SMTP session to
    *appliance*, each accepted for its recipient."""
    with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=timeout) as client:
        for sender, recipient, msg in mails:
            assert client.sendmail(sender, [recipient], msg) == {}


def wait_held_jobs(appliance: Appliance, port: int, printer: str = "lp", what: str = "the held job") -> list[dict]:
    """*printer*'s pending-held jobs, as the console at *port* lists them,
    once there is one."""
    return wait_until(lambda: [j for j in jobs(port, printer=printer) if j["state"] == "pending-held"] or None,
                      30, what, appliance.log)


def queued_release_mails(appliance: Appliance, marker: bytes, timeout: float,
                         what: str = "the release mail") -> list[Path]:
    """The files of the outbound queue holding *marker*, once there is one:
    the release mail, which waits there while the smarthost does not answer."""
    return appliance.wait_for(lambda: [p for p in (appliance.spool / "queue" / "data").glob("*")
                                       if marker in p.read_bytes()], timeout=timeout, what=what)


def release_address(text: str) -> str | None:
    """The release address the release mail *text* asks the owner to reply to."""
    found = re.search(RELEASE_ADDRESS, text)
    return found.group(1) if found else None


def printed_files(out: Path) -> list[Path]:
    """What a file: printer printed into *out* (nothing while it does not exist)."""
    return sorted(out.glob("*")) if out.exists() else []

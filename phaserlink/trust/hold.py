"""Hold and release: an allowed but unauthenticated sender's job waits for its owner (docs/trust.md).

With ``[printer:NAME] unauthenticated = hold``, a message from an allowed
From: address that no ``sender_auth`` rule authenticates gets a 250 anyway
and becomes a job in ``pending-held`` (``job-hold-until-specified``).  A
release mail goes to the From: address, through the outbound queue, from
the null sender with ``Auto-Submitted: auto-replied``; it says what was
received and how to release it: reply, or send any mail to the one-time
address ``release+TOKEN@HOSTNAME`` (the token: 128 random bits).  A forger
never sees that mail; the real owner releases the job or ignores it.  A
released job prints once; one never released is canceled after
``hold_timeout`` with no further mail.

The SMTP side marks the stored message with ``X-PhaserLink-Hold: TOKEN;
printers=A,B`` (any such field that came with the message is removed, as
our Authentication-Results are); the printer side reads it at intake
(:func:`held_token`).  Release mails are rate-limited per address
(:data:`RELEASE_MAILS_PER_HOUR`), so the appliance cannot be made to mail a
third party more than that, whatever a forger sends.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

HOLD_FIELD = "x-phaserlink-hold"
RELEASE_LOCAL = "release"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    RELEASE_MAILS_PER_HOUR,
    HOLD_MAX_TRACKED as MAX_TRACKED,
    HEAD_SCAN,
)

TOKEN_BYTES = 16  # 128 bits
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hold_field(token: str, printers: list[str]) -> bytes:
    return f"X-PhaserLink-Hold: {token}; printers={','.join(printers)}\n".encode()


def release_address(token: str, hostname: str) -> str:
    return f"{RELEASE_LOCAL}+{token}@{hostname}"


def token_of(address: str, hostname: str) -> str | None:
    """The token of ``release+TOKEN@HOSTNAME``, None for any other address."""
    local, at, domain = address.strip("<>").rpartition("@")
    if not at or domain.lower() != hostname.lower():
        return None
    prefix = RELEASE_LOCAL + "+"
    if not local.lower().startswith(prefix):
        return None
    token = local[len(prefix):]
    return token if _TOKEN.match(token) else None


def held_token(path: Path, printer: str) -> str | None:
    """The hold token a stored message carries for *printer*, if any (the
    SMTP session wrote the field; forged ones were removed there)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_SCAN)
    except OSError:
        return None
    head = head.split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == HOLD_FIELD.encode():
            token, _, rest = value.decode("ascii", "replace").strip().partition(";")
            printers = rest.strip().removeprefix("printers=").split(",")
            if printer in printers and _TOKEN.match(token.strip()):
                return token.strip()
    return None


class ReleaseMailer:
    """Sends release mails, at most RELEASE_MAILS_PER_HOUR per address."""

    def __init__(self, queue, hostname: str, status_sender: str, clock):
        self.queue = queue
        self.hostname = hostname
        self.status_sender = status_sender
        self.clock = clock
        self.sent: "OrderedDict[str, list[float]]" = OrderedDict()

    def _allowed(self, address: str) -> bool:
        now = self.clock.seconds()
        times = [t for t in self.sent.pop(address, []) if t > now - 3600]
        if len(times) >= RELEASE_MAILS_PER_HOUR:
            self.sent[address] = times
            return False
        times.append(now)
        self.sent[address] = times
        while len(self.sent) > MAX_TRACKED:
            self.sent.popitem(last=False)
        return True

    def send_refusals(self, author: str, subject: str, printed: list[str], refused: dict[str, str]) -> bool:
        """Tell an authenticated sender which printers of its message did
        not take it, and why (a group, several printers).  Never to an
        unauthenticated address: that would be backscatter."""
        if not self._allowed(author.lower()):
            return False
        when = format_datetime(datetime.fromtimestamp(self.clock.seconds(), timezone.utc))
        title = subject.replace("\n", " ").replace("\r", " ")[:200] or "(no subject)"
        lines = "".join(f"    {name}: {why}\n" for name, why in refused.items())
        text = (
            f"From: PhaserLink <{self.status_sender}>\nTo: <{author}>\n"
            f"Subject: Not printed everywhere: {title}\nDate: {when}\n"
            f"Message-ID: {make_msgid(domain=self.hostname)}\nAuto-Submitted: auto-replied\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            f"Your message \"{title}\" ({when}) prints on {', '.join(printed)}, but not on:\n\n{lines}"
        ).encode("utf-8", "replace")
        return self._queue(author, text)

    def _queue(self, author: str, text: bytes) -> bool:
        try:
            message = self.queue.submit("", [author])
            message.write(text)
            d = defer.maybeDeferred(message.commit)
        except (OSError, ValueError, AttributeError) as e:
            log.error("mail to {author} not queued: {e}", author=author, e=e)
            return False
        d.addErrback(lambda f: log.failure("mail to {author} not queued", f, author=author))
        return True

    def send(self, author: str, token: str, printers: list[str], subject: str, why: str,
             timeout_text: str) -> bool:
        """Queue the release mail to *author*; False if rate-limited or failed."""
        if not self._allowed(author.lower()):
            log.warn("release mail to {author} not sent: more than {n} this hour", author=author,
                     n=RELEASE_MAILS_PER_HOUR)
            return False
        address = release_address(token, self.hostname)
        when = format_datetime(datetime.fromtimestamp(self.clock.seconds(), timezone.utc))
        title = subject.replace("\n", " ").replace("\r", " ")[:200] or "(no subject)"
        text = (
            f"From: PhaserLink <{self.status_sender}>\n"
            f"To: <{author}>\n"
            f"Reply-To: <{address}>\n"
            f"Subject: Release your print job? {title}\n"
            f"Date: {when}\n"
            f"Message-ID: {make_msgid(domain=self.hostname)}\n"
            "Auto-Submitted: auto-replied\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n"
            "\n"
            f"A print job for {', '.join(printers)} arrived from your address:\n\n"
            f"    Subject: {title}\n    Received: {when}\n\n"
            f"It is held because its sender could not be verified ({why}).\n\n"
            f"If you sent it, release it: reply to this mail, or send any mail to\n\n    {address}\n\n"
            f"If you did not send it, do nothing: it is canceled after {timeout_text}\n"
            "and you hear nothing more about it.\n"
        ).encode("utf-8", "replace")
        return self._queue(author, text)

"""The postmaster's mailbox (RFC 5321 4.5.1), when no address is configured.

Mail to ``postmaster`` (bare, or at any of the appliance's domains) must be
accepted, and it must never be printed.  With ``[appliance] postmaster =
ADDRESS`` it is relayed there through the outbound queue; without one it is
kept here, in the Maildir ``SPOOL/mail/.postmaster`` (a name no printer can
have: printer names cannot start with a dot, so no retriever ever reads it),
and an admin reads it over POP3 as user ``postmaster`` with the password
``[appliance] postmaster_pop3_password`` (a PBKDF2 hash, like a printer's
``pop3_password``).  See docs/smtp.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phaserlink.passwords import PasswordHash

#: The mailbox name in the store (not a valid printer name, on purpose).
POSTMASTER_BOX = ".postmaster"
#: The POP3 login of that mailbox.
POSTMASTER_USER = "postmaster"


@dataclass(frozen=True)
class PostmasterAccount:
    """The postmaster box as a POP3 account: the attributes the POP3
    checkers read from a printer (``pop3_user``, ``pop3_password``, ...)."""

    pop3_password: PasswordHash
    name: str = POSTMASTER_BOX
    pop3_user: str = POSTMASTER_USER
    pop3_apop_secret: bytes | None = None
    output: str = "pull"  # read by a POP3 client, never by the appliance
    mailbox: None = None  # a local mailbox


def keeps_local_box(site: Any) -> bool:
    """True when postmaster mail stays in :data:`POSTMASTER_BOX` (no
    ``postmaster`` address to relay it to)."""
    return not getattr(site.appliance, "postmaster", None)


def postmaster_account(site: Any) -> PostmasterAccount | None:
    """The POP3 account of the postmaster box, or None (no box, or no
    ``postmaster_pop3_password``: then nobody logs in to it)."""
    password = getattr(site.appliance, "postmaster_pop3_password", None)
    if not keeps_local_box(site) or password is None:
        return None
    return PostmasterAccount(password)

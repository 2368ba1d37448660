"""Who may send what to whom: the appliance's recipient and relay policy.

Decisions are made at RCPT time, so a refused recipient costs the client no
DATA and a sender learns *why* in the reply text (guarantee 4, "nobody prints
who may not").  The rules, in order:

0. ``postmaster`` (RFC 5321 4.5.1), bare or at any of our domains, case
   insensitive, from any sender (the null one too): accepted and never
   printed.  It is relayed to ``[appliance] postmaster`` through the
   outbound queue, or, with no such address, kept in the postmaster's box
   (:mod:`phaserlink.pop3_store.postmaster`, docs/smtp.md).  This comes
   before the printers: a printer address ``postmaster@...`` never prints.
1. An address of a ``[printer:NAME]`` names that printer, a
   ``[group:NAME]`` address its members.  Who may print on them is not
   decided here but by :mod:`phaserlink.trust.gate` (docs/trust.md), which
   the session asks next: at RCPT and at the end of DATA, printer by
   printer (a group delivers to the members whose rules the message passes).
2. ``allowed_senders`` is matched by the gate too, against the From:
   address (against MAIL FROM only for ``sender_auth = spf``); bounces,
   auto-replies and quotas are the gate's as well.
3. Any other address in one of our domains (the printers', the groups' and
   the appliance hostname) is unknown: 550 5.1.1.
4. Any other domain is relaying: allowed for clients in ``relay_networks``
   and for sessions authenticated with a ``[user:NAME]`` login (then the
   message goes into the outbound queue), else 550 5.7.1 relay denied.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twisted.logger import Logger

from phaserlink.config import SiteConfig, normalize_address
from phaserlink.pop3_store.postmaster import POSTMASTER_BOX, POSTMASTER_USER

log = Logger()


@dataclass(frozen=True)
class RecipientVerdict:
    """What to do with one RCPT TO address."""

    code: int
    status: str
    text: str
    printers: tuple[str, ...] = ()  # mailboxes to deliver into
    relay: bool = False  # goes into the outbound queue
    forward_to: str | None = None  # the queue's recipient, when not the RCPT address

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300


class RelayPolicy:
    """The rules above for one site configuration."""

    def __init__(self, site: SiteConfig):
        self.site = site
        self.networks = site.appliance.relay_networks
        self.postmaster = self._postmaster_target(site)

    @staticmethod
    def _postmaster_target(site: SiteConfig) -> str | None:
        """Where postmaster mail is relayed, or None for the local box.  An
        address of our own domains would come back here (and might print):
        that is refused with an error in the log, and the box is used."""
        target = getattr(site.appliance, "postmaster", None)
        if target and site.is_local_domain(target):
            log.error("[appliance] postmaster = {address} is in one of the appliance's own domains; "
                      "postmaster mail is kept in the local postmaster box instead", address=target)
            return None
        return target

    def is_postmaster(self, address: str) -> bool:
        """``postmaster`` bare or at one of our domains (RFC 5321 4.5.1)."""
        address = normalize_address(address)
        local, at, _ = address.rpartition("@")
        if not at:
            return address == POSTMASTER_USER
        return local == POSTMASTER_USER and self.site.is_local_domain(address)

    def client_may_relay(self, host: str) -> bool:
        """Is the client's IP address in ``relay_networks``?"""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # a UNIX socket or something else without an IP
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == net.version and address in net for net in self.networks)

    def recipient(self, rcpt: str, mail_from: str, may_relay: bool) -> RecipientVerdict:
        address = normalize_address(rcpt)
        if self.is_postmaster(address):
            if self.postmaster is not None:
                return RecipientVerdict(250, "2.1.5", "Ok, for the postmaster", relay=True,
                                        forward_to=self.postmaster)
            return RecipientVerdict(250, "2.1.5", "Ok, for the postmaster", printers=(POSTMASTER_BOX,))
        if "@" not in address:
            return RecipientVerdict(550, "5.1.1", f"<{rcpt}>: Recipient address rejected: no such printer here")
        printers = self.site.printers_for_address(address)
        if printers is not None:  # who may print: phaserlink.trust.gate, next
            names = tuple(p.name for p in printers)
            return RecipientVerdict(250, "2.1.5", f"Ok, prints on {', '.join(names)}", printers=names)
        if self.site.is_local_domain(address):
            return RecipientVerdict(550, "5.1.1", f"<{rcpt}>: Recipient address rejected: no such printer here")
        if may_relay:
            return RecipientVerdict(250, "2.1.5", "Ok, relayed", relay=True)
        return RecipientVerdict(550, "5.7.1", f"<{rcpt}>: Relay access denied")

    def check_login(self, username: str, password: bytes) -> bool:
        """SMTP AUTH against the ``[user:NAME]`` sections (PBKDF2: slow on
        purpose).  An unknown name costs the same PBKDF2 as a known one, so
        timing does not tell which users exist (docs/logins.md)."""
        from phaserlink.trust.logins import PasswordBook

        book = self.__dict__.get("_password_book")
        if book is None:  # made once; a race makes two equal books, harmless
            book = self._password_book = PasswordBook({n: u.password for n, u in self.site.users.items()})
        return book.verify(username, password)

"""Seams of the printer side.

A printer's mail comes from an :class:`IMailSource`: the appliance's own
Maildir store (read in-process, woken by the store's delivery event) or a
remote POP3 server such as Dovecot.  Both give the retriever the same three
steps, so guarantee 2 is kept the same way for both: retrieve into the spool,
fsync, and only then delete at the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


@dataclass(frozen=True)
class SourceMessage:
    """A message waiting at a source: its UIDL (stable id) and size."""

    uidl: str
    size: int


class SourceBusy(Exception):
    """``IMailSource.open`` could not start a session because another
    session holds the source (a POP3 server's ``[IN-USE]`` lock: another
    appliance, or a mail client, is retrieving this mailbox).  Not a fault:
    the mail stays at the source and the retriever tries at its next poll;
    it logs a warning that says who to look for, with no traceback."""


class IMailSource(Interface):
    """Where one printer's mail waits."""

    description = Attribute("Human-readable, for logs: 'local mailbox demo', 'pop3://u@h:110'.")

    def open() -> "Deferred[IMailSession]":
        """Start a session (a POP3 login; nothing for the local store).
        Fails with :class:`SourceBusy` when another session holds the source."""

    def on_new_mail(callback: Callable[[], None]) -> None:
        """Call *callback* when mail may have arrived (local store: on each
        delivery; remote: never, the retriever polls)."""


class IMailSession(Interface):
    """One session at a source; deletions take effect at ``close``."""

    def list() -> "Deferred[list[SourceMessage]]":
        """The messages waiting, oldest first."""

    def retrieve(uidl: str, out: BinaryIO) -> "Deferred[None]":
        """Write the message (LF line ends, unstuffed) into *out*, streaming."""

    def delete(uidl: str) -> "Deferred[None]":
        """Mark for deletion; durable only after ``close`` fires."""

    def close() -> "Deferred[None]":
        """Commit deletions (POP3 QUIT) and end the session."""

    def abort() -> None:
        """Drop the session; nothing marked is deleted."""

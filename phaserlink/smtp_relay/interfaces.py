"""Seams between the SMTP relay, the outbound queue and their users."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class IQueuedMessage(Interface):
    """A message being written into the outbound queue.

    The data is the whole RFC 5322 message with LF line ends (no dot
    stuffing).  ``commit`` returns a Deferred that fires only after the
    message and its envelope are fsync'd (in the ``durable`` worker pool,
    docs/smtp.md); then the queue owns it and will deliver or bounce it.
    """

    def write(data: bytes) -> None:
        """Append message data."""

    def commit() -> "Deferred[str]":
        """Make it durable and schedule delivery; fires with the queue id.

        Fails with OSError if it could not be stored (nothing is queued then).
        """

    def commit_in_background() -> str:
        """Start ``commit`` and return the queue id now; a failure is logged
        by the queue (for callers that do not wait, e.g. status mail)."""

    def abort() -> None:
        """Throw the partial message away."""


class IOutboundQueue(Interface):
    """The durable queue of mail the appliance sends out."""

    def submit(mail_from: str, recipients: "list[str]", body: "str | None" = None) -> IQueuedMessage:
        """Start a message from *mail_from* ('' for the null reverse-path).

        *body* is the client's ``BODY=`` (``7BIT`` or ``8BITMIME``, RFC 6152)
        or None; it is kept in the envelope and declared on the way out.
        """

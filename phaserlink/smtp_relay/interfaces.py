"""Seams between the SMTP relay, the outbound queue and their users."""

from __future__ import annotations

from zope.interface import Interface


class IQueuedMessage(Interface):
    """A message being written into the outbound queue.

    The data is the whole RFC 5322 message with LF line ends (no dot
    stuffing).  ``commit`` returns only after the message and its envelope
    are fsync'd; then the queue owns it and will deliver or bounce it.
    """

    def write(data: bytes) -> None:
        """Append message data."""

    def commit() -> str:
        """Make it durable and schedule delivery; return the queue id.

        Raises OSError if it could not be stored (nothing is queued then).
        """

    def abort() -> None:
        """Throw the partial message away."""


class IOutboundQueue(Interface):
    """The durable queue of mail the appliance sends out."""

    def submit(mail_from: str, recipients: "list[str]") -> IQueuedMessage:
        """Start a message from *mail_from* ('' for the null reverse-path)."""

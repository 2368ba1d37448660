"""Names of PhaserLink's own header fields, in one place for both directions.

The client writes them into a job message (build.py), the printer side reads
them (extract.job_request) and writes them into status reports (report.py),
and ``phaserlink status`` reads those back.  They are ``X-`` fields so every
relay passes them unchanged; they sit in the top-level header, which RFC 2046
5.2.2.1 keeps when message/partial fragments are reassembled.
"""

from __future__ import annotations

from .events import EVENTS as _EVENTS

JOB_ID = "X-PhaserLink-Job-Id"
"""Client-chosen job id: 1-64 of ``[A-Za-z0-9._@+-]``; links status mail to the job."""

TITLE = "X-PhaserLink-Title"
"""Job title for the printer (banner page, LPD ``J``); RFC 2047 encoded if non-ASCII."""

COPIES = "X-PhaserLink-Copies"
"""Decimal number of copies, 1..MAX_COPIES."""

NOTIFY = "X-PhaserLink-Notify"
"""Comma-separated events the sender wants status mail for, or ``none``
(the words of :mod:`phaserlink.message.events`)."""

PRINTER = "X-PhaserLink-Printer"
JOB_STATE = "X-PhaserLink-Job-State"
JOB_STATE_REASONS = "X-PhaserLink-Job-State-Reasons"
PAGES = "X-PhaserLink-Pages"
EVENT = "X-PhaserLink-Event"
"""The five above appear in status reports (message/disposition-notification)."""

EVENTS = _EVENTS
"""Events a status mail can report, and the values of X-PhaserLink-Notify:
:data:`phaserlink.message.events.EVENTS`, named there once."""

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_COPIES,
)

"""More copies than this is taken as garbage, not as a request."""

SENDER_JOB_ID = "X-PhaserLink-Sender-Job-Id"
"""In status reports: the job id the sender's client chose (its
X-PhaserLink-Job-Id), echoed so ``phaserlink status JOB`` finds the job by
the id ``phaserlink send`` printed, on any machine."""

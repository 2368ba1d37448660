"""The status events, named once for every side that speaks of them.

A job's sender hears of what happened to it by status mail, one mail per
event.  The same few words name those events everywhere: in a printer's
``notify`` policy (site.ini), in the client's ``--notify`` and
``destinations.ini``, in the ``X-PhaserLink-Notify`` header of a job
message, and in the ``X-PhaserLink-Event`` field of a status report.
This module is the only list of them; it lives in :mod:`phaserlink.message`
because the client and the appliance both import it (and the client imports
nothing of the appliance).  docs/vocabulary.md says why these words.

Before, site.ini and ``--notify`` said ``errors`` and ``trace`` where the
header and the reports said ``failed`` and ``fragment``, and each side
translated.  The old words are still understood wherever a word is read
(:data:`OLD_WORDS`); nothing writes them any more.
"""

from __future__ import annotations

from typing import Iterable

RECEIVED = "received"
"""The job was taken into the printer's spool."""
PRINTED = "printed"
"""The printer acknowledged all of the job."""
FAILED = "failed"
"""The job was aborted (or canceled): it will not print."""
DELAYED = "delayed"
"""The job has waited longer than the printer's ``delay_notice``."""
FRAGMENT = "fragment"
"""One message/partial fragment of a split job arrived (or the set is complete)."""

EVENTS: tuple[str, ...] = (RECEIVED, PRINTED, FAILED, DELAYED, FRAGMENT)
"""Every event, in the order a job meets them; the only words on the wire."""

ALL = "all"
"""Shorthand for every event (read only: writers list the events)."""
NONE = "none"
"""No status mail at all; on the wire, the whole value of X-PhaserLink-Notify."""

DEFAULT_POLICY: tuple[str, ...] = (PRINTED, FAILED)
"""A printer's ``notify`` when site.ini does not say."""

OLD_WORDS: dict[str, tuple[str, ...]] = {
    "errors": (FAILED,),
    "error": (FAILED,),
    "trace": EVENTS,
}
"""Words of the old site.ini/--notify vocabulary -> the events they meant."""


class UnknownEvent(ValueError):
    """A word that names no event (raised by the strict readers only)."""


def _words(value: str | Iterable[str]) -> list[str]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    return [w.strip().lower() for w in items if w and w.strip()]


def _expand(word: str) -> tuple[str, ...] | None:
    if word in EVENTS:
        return (word,)
    if word == ALL:
        return EVENTS
    return OLD_WORDS.get(word)


def parse_events(value: str | Iterable[str]) -> tuple[str, ...]:
    """A user's list (site.ini, ``--notify``, destinations.ini) -> events.

    Strict: an unknown word raises :class:`UnknownEvent` saying which words
    are known, because a typo in a policy would otherwise silence status
    mail without a word.  ``none`` alone gives ``()``; ``none`` with events
    is a contradiction and an error.  Old words and ``all`` are expanded;
    the result has each event once, in :data:`EVENTS` order.
    """
    words = _words(value)
    if NONE in words:
        if len(set(words)) > 1:
            raise UnknownEvent(f"{NONE!r} cannot be combined with events ({', '.join(words)})")
        return ()
    wanted: set[str] = set()
    for word in words:
        events = _expand(word)
        if events is None:
            raise UnknownEvent(f"{word!r} is not one of {', '.join(EVENTS + (ALL, NONE))}")
        wanted.update(events)
    return tuple(e for e in EVENTS if e in wanted)


def read_events(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """What a sender asked for (the X-PhaserLink-Notify header, or a job's
    saved request) -> events, ``()`` for silence, or None when nothing usable
    was asked (then the printer's policy applies).

    Lenient, since the header comes from anybody: unknown words are
    ignored; ``none`` anywhere means silence (a sender who says it does not
    want mail is not sent any).  Old words are read as they were meant, so
    messages from older clients and jobs spooled before an upgrade keep
    their wishes.
    """
    if value is None:
        return None
    words = _words(value)
    if NONE in words:
        return ()
    wanted: set[str] = set()
    for word in words:
        wanted.update(_expand(word) or ())
    if not wanted:
        return None
    return tuple(e for e in EVENTS if e in wanted)


def header_value(events: Iterable[str]) -> str:
    """The X-PhaserLink-Notify value for *events* (any words
    :func:`parse_events` takes): the event names, or ``none``."""
    canonical = parse_events(list(events) or [NONE])
    return ", ".join(canonical) if canonical else NONE


def report_event(word: str) -> str:
    """The X-PhaserLink-Event value for *word*: an event name, or an old word
    that meant exactly one event (``errors`` -> ``failed``).  Anything else
    raises :class:`UnknownEvent`: a status report names one event of
    :data:`EVENTS`, so a new event is added here, not made up by a caller."""
    events = _expand(word.strip().lower())
    if events is None or len(events) != 1:
        raise UnknownEvent(f"{word!r} is not one event of {', '.join(EVENTS)} "
                           "(new events are named in phaserlink/message/events.py)")
    return events[0]

"""Job options a sender may ask for (copies, sides, media, colour, page
ranges): the one vocabulary of them, for every way they are said.

- carried in one header field, ``X-PhaserLink-Options`` (fields.OPTIONS)::

      X-PhaserLink-Options: sides=two-sided-long-edge; media=a4; color=monochrome; pages=1-3,7

  written by ``phaserlink send`` (copies have their own header,
  X-PhaserLink-Copies, though ``copies=N`` is read here too);
- said by a person in a plain mail's Subject, in brackets
  (:func:`parse_subject`, when the printer has ``subject_options = yes``)::

      Subject: Report [duplex] [copies=2] [a4] [pages=1-3]

- set by a site per printer (``options_allowed``, ``options_default``:
  :func:`parse_option_names`, :func:`parse_defaults`, :func:`apply_policy`).

The printer side maps the result to what its output can say (IPP
job-template attributes, PJL ``@PJL SET``, LPD copies, Ghostscript page
selection; docs/options.md).  Reading what a sender wrote is forgiving: an
unknown key or a bad value is dropped and listed in :attr:`JobOptions.ignored`
so the status mail can say so, never an error.  What a site writes in
site.ini is read strictly (ValueError with the reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from phaserlink.limits import MAX_COPIES

#: Every option, by the name site.ini's ``options_allowed`` uses.
OPTION_NAMES = ("copies", "sides", "media", "color", "pages")

SIDES = ("one-sided", "two-sided-long-edge", "two-sided-short-edge")
COLOR_MODES = ("color", "monochrome")
#: Short media names -> PWG 5101.1 self-describing names (what IPP's media takes).
MEDIA = {
    "a3": "iso_a3_297x420mm", "a4": "iso_a4_210x297mm", "a5": "iso_a5_148x210mm",
    "letter": "na_letter_8.5x11in", "legal": "na_legal_8.5x14in", "tabloid": "na_ledger_11x17in",
}
#: The longest page list accepted (a page-ranges 1setOf this long is plenty).
MAX_RANGES = 32
MAX_PAGE = 100_000
_PWG_NAME = re.compile(r"[a-z0-9]+_[a-z0-9.-]+_[0-9.]+x[0-9.]+(mm|in)")


def parse_pages(text: str) -> tuple[tuple[int, int], ...]:
    """``"1-3,7"`` -> ((1, 3), (7, 7)); ValueError that says what is wrong."""
    ranges = []
    for item in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d{1,6})(?:-(\d{1,6}))?", item)
        if not m:
            raise ValueError(f"{item!r} is not a page or a range like 1-3")
        low = int(m.group(1))
        high = int(m.group(2) or low)
        if not 1 <= low <= high <= MAX_PAGE:
            raise ValueError(f"{item!r}: pages count from 1, and a range goes up")
        ranges.append((low, high))
    if not ranges or len(ranges) > MAX_RANGES:
        raise ValueError(f"give 1 to {MAX_RANGES} pages or ranges")
    return tuple(ranges)


def media_name(text: str) -> str:
    """A short name (a4, letter) or a PWG name as is; ValueError otherwise."""
    value = text.strip().lower()
    if value in MEDIA:
        return value
    if _PWG_NAME.fullmatch(value):
        return value
    raise ValueError(f"{text!r} is not a media size ({', '.join(MEDIA)} or a PWG name like iso_a4_210x297mm)")


def parse_copies(text: str) -> int:
    """``"2"`` -> 2; ValueError unless a whole number 1..MAX_COPIES."""
    value = text.strip()
    if not re.fullmatch(r"\d{1,6}", value) or not 1 <= int(value) <= MAX_COPIES:
        raise ValueError(f"{text!r} is not a number of copies (1 to {MAX_COPIES})")
    return int(value)


def format_pages(pages: tuple[tuple[int, int], ...]) -> str:
    """((1, 3), (7, 7)) -> ``"1-3,7"`` (the header's and Ghostscript's -sPageList form)."""
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in pages)
#: PDF points per unit of a PWG self-describing name's size.
_POINTS_PER = {"mm": 72 / 25.4, "in": 72.0}


def media_size(text: str) -> tuple[float, float]:
    """The (width, height) in PDF points of a media name: a short name
    (``letter``) or any PWG 5101.1 self-describing name, whose last part
    says its size (``na_letter_8.5x11in``, ``iso_a4_210x297mm``, what an IPP
    printer's ``media-default`` says).  Photos are fitted to it
    (docs/convert.md).  ValueError for anything else."""
    name = MEDIA.get(media_name(text), text.strip().lower())
    m = re.search(r"_([0-9.]+)x([0-9.]+)(mm|in)$", name)
    if m is None:
        raise ValueError(f"{text!r} does not say its size")
    try:
        width, height = float(m.group(1)), float(m.group(2))
    except ValueError:
        raise ValueError(f"{text!r} does not say its size") from None
    if not (0 < width and 0 < height):
        raise ValueError(f"{text!r} has no area")
    scale = _POINTS_PER[m.group(3)]
    return round(width * scale, 2), round(height * scale, 2)


@dataclass(frozen=True)
class JobOptions:
    sides: str | None = None
    media: str | None = None  # short name (a4) or PWG name
    color: str | None = None  # color | monochrome
    pages: tuple[tuple[int, int], ...] = ()
    ignored: tuple[str, ...] = ()  # what a header said that was not understood
    copies: int | None = None  # None: not asked (the job's own copies count, 1 by default)

    def __bool__(self) -> bool:
        return bool(self.sides or self.media or self.color or self.pages or self.copies)

    def value(self, name: str) -> object:
        """The value of option *name* (one of OPTION_NAMES); None/() when not set."""
        return getattr(self, name)

    def given(self) -> tuple[str, ...]:
        """The names of the options that are set, in OPTION_NAMES order."""
        return tuple(n for n in OPTION_NAMES if self.value(n))

    def describe(self, name: str) -> str:
        """``sides=two-sided-long-edge``: one option as the header says it."""
        value = self.value(name)
        return f"{name}={format_pages(value) if name == 'pages' else value}"  # type: ignore[arg-type]

    def over(self, other: "JobOptions") -> "JobOptions":
        """These options, with *other*'s where these say nothing (the
        header over the Subject, the sender over the printer's defaults)."""
        values = {n: self.value(n) or other.value(n) for n in OPTION_NAMES}
        return JobOptions(ignored=self.ignored + other.ignored, **values)  # type: ignore[arg-type]

    def without(self, *names: str) -> "JobOptions":
        """These options less *names* (and less the ignored list)."""
        return replace(self, ignored=(), **{n: (() if n == "pages" else None) for n in names})

    @property
    def pwg_media(self) -> str | None:
        return None if self.media is None else MEDIA.get(self.media, self.media)

    def header_value(self) -> str:
        parts = []
        if self.copies:
            parts.append(f"copies={self.copies}")
        if self.sides:
            parts.append(f"sides={self.sides}")
        if self.media:
            parts.append(f"media={self.media}")
        if self.color:
            parts.append(f"color={self.color}")
        if self.pages:
            parts.append("pages=" + format_pages(self.pages))
        return "; ".join(parts)

    @classmethod
    def parse(cls, value: str | None) -> "JobOptions":
        if not value:
            return cls()
        found: dict[str, object] = {}
        ignored = []
        for item in value.split(";"):
            item = item.strip()
            if not item:
                continue
            key, _, text = item.partition("=")
            key, text = key.strip().lower(), text.strip()
            try:
                if key == "sides" and text.lower() in SIDES:
                    found["sides"] = text.lower()
                elif key == "color" and text.lower() in COLOR_MODES:
                    found["color"] = text.lower()
                elif key == "media":
                    found["media"] = media_name(text)
                elif key == "pages":
                    found["pages"] = parse_pages(text)
                elif key == "copies":
                    found["copies"] = parse_copies(text)
                else:
                    ignored.append(item[:80])
            except ValueError:
                ignored.append(item[:80])
        return cls(ignored=tuple(ignored), **found)  # type: ignore[arg-type]


def from_cups_options(text: str) -> JobOptions:
    """The CUPS backend's *options* argument (``sides=two-sided-long-edge
    media=A4 print-color-mode=monochrome page-ranges=1-3``, space
    separated, values possibly quoted) as JobOptions; what is not a job
    option here is left to CUPS (not listed as ignored: CUPS passes many)."""
    import shlex

    try:
        words = shlex.split(text or "")
    except ValueError:
        words = (text or "").split()
    found: dict[str, object] = {}
    for word in words:
        key, _, value = word.partition("=")
        key, value = key.strip().lower(), value.strip()
        try:
            if key == "sides" and value.lower() in SIDES:
                found["sides"] = value.lower()
            elif key in ("media", "pagesize", "media-size") and value:
                found["media"] = media_name(value.split(",")[0])
            elif key == "print-color-mode" and value.lower() in COLOR_MODES:
                found["color"] = value.lower()
            elif key == "colormodel" and value:
                found["color"] = "monochrome" if value.lower() in ("gray", "grey", "black", "kgray") else "color"
            elif key in ("page-ranges", "pages") and value:
                found["pages"] = parse_pages(value)
        except ValueError:
            continue
    return JobOptions(**found)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Options in a Subject line: "Report [duplex] [copies=2] [a4] [pages=1-3]"

#: Words that are a whole option by themselves (after lower-casing and
#: writing spaces and underscores as "-"): what people type.
SUBJECT_WORDS: dict[str, tuple[str, str]] = {
    **{w: ("sides", "two-sided-long-edge") for w in (
        "duplex", "two-sided", "double-sided", "long-edge", "duplex-long", "duplex-long-edge",
        "two-sided-long-edge")},
    **{w: ("sides", "two-sided-short-edge") for w in (
        "duplex-short", "short-edge", "duplex-short-edge", "two-sided-short-edge", "tumble")},
    **{w: ("sides", "one-sided") for w in ("simplex", "one-sided", "single-sided")},
    **{w: ("color", "color") for w in ("color", "colour")},
    **{w: ("color", "monochrome") for w in (
        "mono", "monochrome", "gray", "grey", "grayscale", "greyscale", "bw", "b&w", "b/w",
        "black-and-white", "black-white")},
    **{w: ("media", w) for w in MEDIA},
}
#: Keys of ``[key=value]`` (also ``key: value``, ``key value``), by the option they set.
SUBJECT_KEYS = {
    "copies": "copies", "copy": "copies", "sides": "sides", "media": "media", "paper": "media",
    "size": "media", "color": "color", "colour": "color", "pages": "pages", "page": "pages",
}
_BRACKET = re.compile(r"\[([^\[\]]{0,200})\]")
#: Items of one bracket: ";" always, "," unless a digit follows (pages=1-3,7).
_ITEM_SPLIT = re.compile(r";|,(?!\s*\d)")


def _subject_value(option: str, text: str) -> object:
    """The value of *option* as a person wrote it; ValueError if it is none."""
    word = re.sub(r"[\s_]+", "-", text.strip().lower())
    if option == "copies":
        return parse_copies(word.removesuffix("-copies").removesuffix("x").removeprefix("x"))
    if option == "pages":
        return parse_pages(text)
    if option == "media":
        return media_name(text)  # PWG names have underscores of their own
    if option == "sides":
        if word in SIDES:
            return word
        known = SUBJECT_WORDS.get(word)
        if known and known[0] == "sides":
            return known[1]
        raise ValueError(f"{text!r} is not one-sided, duplex or duplex-short")
    known = SUBJECT_WORDS.get(word)
    if word in COLOR_MODES:
        return word
    if known and known[0] == "color":
        return known[1]
    raise ValueError(f"{text!r} is not color or mono")


def _subject_item(item: str) -> tuple[str, object] | None:
    """One option of a bracket -> (option, value); None if it is not one
    (not our words at all); ValueError if it is ours with a bad value."""
    text = " ".join(item.split())
    word = re.sub(r"[\s_]+", "-", text.lower())
    if word in SUBJECT_WORDS:
        return SUBJECT_WORDS[word]
    m = re.fullmatch(r"(\d{1,6})\s*(?:copies|copy|x)", text.lower()) or re.fullmatch(r"x\s*(\d{1,6})", text.lower())
    if m:
        return "copies", parse_copies(m.group(1))
    m = re.fullmatch(r"([a-z]+)\s*(?:[=:]\s*|\s)(.+)", text.lower())
    if m and m.group(1) in SUBJECT_KEYS:
        option = SUBJECT_KEYS[m.group(1)]
        return option, _subject_value(option, text[m.start(2):])
    return None


@dataclass(frozen=True)
class SubjectOptions:
    """What :func:`parse_subject` found: the options, and the Subject with
    the brackets it took out (the job's title)."""

    options: JobOptions
    title: str


def parse_subject(subject: str | None) -> SubjectOptions:
    """Options in a Subject line, each in square brackets, anywhere::

        Report [duplex] [copies=2] [a4] [pages=1-3]
        Slides [Duplex Short, Mono] [2 copies] [pages: 1-3,7]

    Case and spaces do not matter.  A bracket of options is taken out of
    the title; a bracket that is not ours (``[EXT]``, ``[Ticket 42]``)
    stays in the title and is no error; a bracket of ours with a bad value
    (``[copies=0]``, ``[pages=3-1]``) stays too and is listed in
    ``ignored``, so the status mail can say so.  The first bracket to set
    an option wins."""
    text = subject or ""
    found: dict[str, object] = {}
    ignored: list[str] = []
    kept: list[str] = []
    last = 0
    for m in _BRACKET.finditer(text):
        items = [i for i in (part.strip() for part in _ITEM_SPLIT.split(m.group(1))) if i]
        parsed: list[tuple[str, object]] = []
        bad = False
        ours = bool(items)
        for item in items:
            try:
                one = _subject_item(item)
            except ValueError:
                bad = True
                continue
            if one is None:
                ours = False
                break
            parsed.append(one)
        if not ours:
            continue  # not options: left in the title as it is
        if bad:
            ignored.append(m.group(0)[:80])
            continue
        for option, value in parsed:
            found.setdefault(option, value)
        kept.append(text[last:m.start()])
        last = m.end()
    kept.append(text[last:])
    title = " ".join("".join(kept).split())
    return SubjectOptions(JobOptions(ignored=tuple(ignored), **found), title)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# A printer's policy: options_allowed, options_default (site.ini, docs/options.md)


def parse_option_names(text: str) -> tuple[str, ...]:
    """``options_allowed``: ``copies, sides`` / ``all`` / ``none``; ValueError
    naming a word that is not an option."""
    words = [w.strip().lower() for w in re.split(r"[,\s]+", text or "") if w.strip()]
    if words == ["all"]:
        return OPTION_NAMES
    if words == ["none"]:
        return ()
    for word in words:
        if word not in OPTION_NAMES:
            raise ValueError(f"{word!r} is not an option ({', '.join(OPTION_NAMES)}, or all, or none)")
    return tuple(n for n in OPTION_NAMES if n in words)


def parse_defaults(text: str) -> JobOptions:
    """``options_default``: ``sides=two-sided-long-edge, media=a4`` (``,``
    or ``;`` between them); ValueError on anything not understood: a site's
    own configuration is read strictly."""
    found: dict[str, object] = {}
    for item in re.split(r";|,(?=\s*[A-Za-z-]+\s*=)", text or ""):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in OPTION_NAMES:
            raise ValueError(f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(OPTION_NAMES)}")
        if key in found:
            raise ValueError(f"{key} is given twice")
        value = value.strip()
        if key == "sides":
            if value.lower() not in SIDES:
                raise ValueError(f"sides={value!r}: expected one of {', '.join(SIDES)}")
            found[key] = value.lower()
        elif key == "color":
            if value.lower() not in COLOR_MODES:
                raise ValueError(f"color={value!r}: expected one of {', '.join(COLOR_MODES)}")
            found[key] = value.lower()
        elif key == "media":
            found[key] = media_name(value)
        elif key == "pages":
            found[key] = parse_pages(value)
        else:
            found[key] = parse_copies(value)
    return JobOptions(**found)  # type: ignore[arg-type]


def apply_policy(requested: JobOptions, allowed: tuple[str, ...] | frozenset[str],
                 defaults: JobOptions) -> tuple[JobOptions, list[str]]:
    """What a printer applies of what was asked: options it does not allow
    are dropped, its defaults fill what the sender left open (a default
    applies even to an option senders may not set: that is how a site
    forces duplex).  Returns the options and, for the status mail, what was
    not applied and why."""
    notes: list[str] = []
    kept = requested.without(*(n for n in OPTION_NAMES if n not in allowed))
    for name in requested.given():
        if name in allowed:
            continue
        default = defaults.value(name)
        notes.append(f"{requested.describe(name)} is not allowed on this printer; not applied"
                     + (f" (printed with {defaults.describe(name)})" if default else ""))
    return kept.over(defaults.without()), notes

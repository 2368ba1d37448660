"""Job options a sender may ask for (sides, media, colour, page ranges),
carried in one header field, ``X-PhaserLink-Options`` (fields.OPTIONS):

    X-PhaserLink-Options: sides=two-sided-long-edge; media=a4; color=monochrome; pages=1-3,7

Written by ``phaserlink send`` (and anything else that builds job mail),
read by the printer side, which maps them to what its output can say (IPP
job-template attributes, see docs/ipp.md).  Reading is forgiving: an
unknown key or a bad value is dropped and listed in :attr:`JobOptions.ignored`
so the status mail can say so, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

    def __bool__(self) -> bool:
        return bool(self.sides or self.media or self.color or self.pages)

    @property
    def pwg_media(self) -> str | None:
        return None if self.media is None else MEDIA.get(self.media, self.media)

    def header_value(self) -> str:
        parts = []
        if self.sides:
            parts.append(f"sides={self.sides}")
        if self.media:
            parts.append(f"media={self.media}")
        if self.color:
            parts.append(f"color={self.color}")
        if self.pages:
            parts.append("pages=" + ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.pages))
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

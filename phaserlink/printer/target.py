"""What the documents of a job are converted to, for the printer it goes to.

The conversion graph (:mod:`phaserlink.printer.convert`) finds a path to
one of the *accepted* formats; this module says which formats those are,
which media pictures are fitted to, and which raster Ghostscript makes for
a raster-only printer.  It is the policy; the IPP output only reports what
the printer answered (``IPPOutput.capabilities``, a ``PrinterStatus``), and
the dispatcher asks it again before each job is prepared (docs/convert.md,
"What the printer takes").

- Formats: an IPP printer without a ``formats`` key gets what its
  ``document-format-supported`` says, in the ``formats`` vocabulary
  (:func:`phaserlink.message.formats.printer_formats_of`).  A ``formats``
  key *restricts* that list: the formats both name.  When they name none in
  common the job is held (``printer-stopped``) with words that say so: a
  site.ini to fix, not a document to throw away.  A printer whose list has
  nothing of the vocabulary (only ``application/octet-stream``: it detects
  the format itself) gets the ``formats`` key as it is, else PostScript
  (what every other output defaults to).
- Media for pictures: the job's ``media`` option (when the printer lists it
  in ``media-supported``, or is no IPP printer), else the IPP printer's
  ``media-default``, else the printer's ``media`` key (default a4).
- Raster: the ``pwg-raster-document-resolution-supported`` (PWG raster) or
  ``urf-supported`` ``RS`` (URF) resolution nearest to 300 dpi, and for PWG
  raster the best ``pwg-raster-document-type-supported`` colour space
  Ghostscript can make (``srgb_8``, else ``sgray_8``, else ``black_1``; grey
  first when the sender asked for monochrome), each page scaled to fit the
  same media pictures are fitted to (a raster printer cannot scale).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from twisted.logger import Logger

from phaserlink.message import formats as _formats
from phaserlink.message.job_options import JobOptions, MEDIA, media_size
from phaserlink.printer.faults import PRINTER_STOPPED, SCOPE_PRINTER, TemporaryFault

log = Logger()

#: The raster resolution Ghostscript makes when the printer says none.
RASTER_DPI = 300
#: The media pictures are fitted to when nothing else says (the ``media`` key's default).
DEFAULT_MEDIA = "a4"
#: What a printer that names nothing of the vocabulary is sent (as ``formats`` defaults to).
FALLBACK_FORMATS = (_formats.POSTSCRIPT,)
#: PWG raster colour spaces Ghostscript's pwgraster device makes, best first:
#: keyword (PWG 5102.4 pwg-raster-document-type) -> (cupsColorSpace, bits per colour).
PWG_TYPES = {"srgb_8": (19, 8), "sgray_8": (18, 8), "black_1": (3, 1)}
#: The same, for a sender who asked for monochrome.
PWG_TYPES_MONOCHROME = ("sgray_8", "black_1", "srgb_8")


@dataclass(frozen=True)
class RasterMode:
    """How Ghostscript renders for a raster printer: ``-r{x}x{y}`` and the
    colour space, as a PWG raster type keyword.  The default is 8-bit grey,
    which every IPP Everywhere printer takes; the devices' own default,
    1-bit black, is optional in PWG raster and does not exist in URF."""

    dpi: tuple[int, int] = (RASTER_DPI, RASTER_DPI)
    pwg_type: str | None = "sgray_8"
    #: The printer's media in points: every page is scaled to fit it
    #: (``-dFIXEDMEDIA -dFitPage``); None: each page at its own size.
    page: tuple[float, float] | None = None

    def ghostscript_args(self, device: str) -> list[str]:
        x, y = self.dpi
        args = [f"-r{x}" if x == y else f"-r{x}x{y}"]
        if self.pwg_type in PWG_TYPES:  # pwgraster and urf take the cups device's parameters
            space, bits = PWG_TYPES[self.pwg_type]
            args += [f"-dcupsColorSpace={space}", f"-dcupsBitsPerColor={bits}"]
        if self.page is not None:
            width, height = self.page
            args += [f"-dDEVICEWIDTHPOINTS={width:g}", f"-dDEVICEHEIGHTPOINTS={height:g}", "-dFIXEDMEDIA",
                     "-dFitPage"]
        return args


@dataclass(frozen=True)
class PrintTarget:
    """What a job's documents are made into for one printer."""

    formats: tuple[str, ...]
    media: str = DEFAULT_MEDIA
    rasters: tuple[tuple[str, RasterMode], ...] = ()  # by format: pwg-raster, urf

    def raster(self, fmt: str) -> RasterMode | None:
        return dict(self.rasters).get(fmt)


def print_target(printer, status=None, options: JobOptions | None = None, uri: str = "") -> PrintTarget:
    """The target for *printer* (a PrinterConfig) given the IPP printer's
    last answer *status* (a ``PrinterStatus``, None for other outputs) and
    the job's *options*.  Raises a TemporaryFault (the job is held) when
    ``formats`` and the printer name no format in common."""
    options = options or JobOptions()
    formats = accepted_formats(tuple(printer.formats), status, uri)
    media = photo_media(options, status, getattr(printer, "media", DEFAULT_MEDIA) or DEFAULT_MEDIA)
    rasters: list[tuple[str, RasterMode]] = []
    if status is not None:
        page = media_size(media)  # raster pages on the media pictures are fitted to
        if _formats.PWG_RASTER in formats:
            rasters.append((_formats.PWG_RASTER, replace(pwg_raster_mode(status, options), page=page)))
        if _formats.URF in formats:
            rasters.append((_formats.URF, replace(urf_mode(status, options), page=page)))
    return PrintTarget(formats=formats, media=media, rasters=tuple(rasters))


def accepted_formats(site: tuple[str, ...], status, uri: str = "") -> tuple[str, ...]:
    """The formats documents are converted to (module docstring)."""
    if status is None:
        return site or FALLBACK_FORMATS
    said = _formats.printer_formats_of(status.formats)
    if not said:
        return site or FALLBACK_FORMATS
    if not site:
        return said
    both = tuple(f for f in said if f in site)
    if not both:
        raise TemporaryFault(
            f"the IPP printer{' ' + uri if uri else ''} says it takes {', '.join(said)}, but its formats in site.ini "
            f"({', '.join(site)}) allow none of them; fix formats (or leave it out to use what "
            "the printer says)", SCOPE_PRINTER, PRINTER_STOPPED)
    return both


def photo_media(options: JobOptions, status, default: str = DEFAULT_MEDIA) -> str:
    """The media pictures are fitted to (module docstring); always a name
    :func:`media_size` knows."""
    if options.media:
        supported = status.supported("media") if status is not None else None
        if not supported or options.pwg_media in supported:
            return options.media
    if status is not None:
        found = status.attributes.get("media-default")
        for name in ([str(v) for v in found.all if v is not None] if found is not None else []):
            try:
                media_size(name)
            except ValueError:
                continue
            return _short_media(name)
    return default


def _short_media(name: str) -> str:
    """A PWG name as its short name where there is one (na_letter_8.5x11in -> letter)."""
    for short, pwg in MEDIA.items():
        if pwg == name.lower():
            return short
    return name.lower()


def _dpi(resolution) -> tuple[int, int] | None:
    cross, feed, units = (getattr(resolution, k, None) for k in ("cross_feed", "feed", "units"))
    if not isinstance(cross, int) or not isinstance(feed, int) or cross <= 0 or feed <= 0:
        return None
    if units == 4:  # dots per centimetre
        return round(cross * 2.54), round(feed * 2.54)
    return cross, feed


def nearest_resolution(choices: list[tuple[int, int]]) -> tuple[int, int]:
    """The resolution nearest to RASTER_DPI (a tie: the finer one)."""
    if not choices:
        return (RASTER_DPI, RASTER_DPI)
    return min(choices, key=lambda r: (abs(r[0] - RASTER_DPI) + abs(r[1] - RASTER_DPI), -r[0]))


def pwg_raster_mode(status, options: JobOptions | None = None) -> RasterMode:
    choices = [d for d in map(_dpi, status.supported("pwg-raster-document-resolution")) if d]
    types = [str(t) for t in status.supported("pwg-raster-document-type")]
    order = PWG_TYPES_MONOCHROME if options is not None and options.color == "monochrome" else tuple(PWG_TYPES)
    chosen = next((t for t in order if t in types), "sgray_8")
    return RasterMode(dpi=nearest_resolution(choices), pwg_type=chosen)


#: URF colour keywords (``urf-supported``) -> the PWG raster type Ghostscript makes for them.
URF_TYPES = {"SRGB24": "srgb_8", "W8": "sgray_8"}


def urf_mode(status, options: JobOptions | None = None) -> RasterMode:
    """URF: ``urf-supported`` says its resolutions as ``RS300-600`` and its
    colour spaces as ``W8`` (8-bit grey), ``SRGB24``."""
    choices: list[tuple[int, int]] = []
    types: list[str] = []
    for keyword in map(str, status.supported("urf")):
        m = re.fullmatch(r"RS(\d+(?:-\d+)*)", keyword)
        if m:
            choices += [(int(n), int(n)) for n in m.group(1).split("-") if int(n) > 0]
        elif keyword in URF_TYPES:
            types.append(URF_TYPES[keyword])
    order = PWG_TYPES_MONOCHROME if options is not None and options.color == "monochrome" else tuple(PWG_TYPES)
    # Every URF printer takes 8-bit grey (W8 is required); never 1-bit.
    chosen = next((t for t in order if t in types and t != "black_1"), "sgray_8")
    return RasterMode(dpi=nearest_resolution(choices), pwg_type=chosen)


__all__ = ["PrintTarget", "RasterMode", "accepted_formats", "photo_media", "print_target",
           "pwg_raster_mode", "urf_mode"]

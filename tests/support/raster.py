"""Reading PWG raster (PWG 5102.4) and Apple raster (URF) the way a printer
does: every page header, and every page's compressed lines decoded to the
end, so a stream that is cut short, or whose resolution or colour space is
not one the printer listed, is caught.

Used by the tests, and by ippeveprinter's completion command
(support/ippeveprinter.py) as ``python3 raster.py FILE``: it prints the page
count, or says what is wrong and exits 1, so ippeveprinter aborts that job
as a printer would.  The printer's lists come from the ``IPP_*``
environment ippeveprinter gives the command, else ippeveprinter's defaults.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

PWG_HEADER = 1796
URF_HEADER = 32
#: PWG ColorSpace and bits per colour -> pwg-raster-document-type keyword.
PWG_TYPES = {(3, 1): "black_1", (3, 8): "black_8", (18, 8): "sgray_8", (19, 8): "srgb_8",
             (20, 8): "adobe-rgb_8", (18, 16): "sgray_16", (19, 16): "srgb_16"}
#: URF bits per pixel and colour space -> urf-supported keyword.
URF_TYPES = {(8, 0): "W8", (24, 1): "SRGB24", (24, 3): "ADOBERGB24", (32, 6): "CMYK32"}


@dataclass(frozen=True)
class Page:
    dpi: tuple[int, int]
    kind: str  # pwg-raster-document-type keyword, or urf-supported keyword
    size: tuple[int, int]  # pixels
    page_size: tuple[int, int] | None = None  # points (PWG raster only)


class RasterError(ValueError):
    pass


def _skip_lines(data: memoryview, pos: int, height: int, line_units: int, unit: int) -> int:
    """Decode *height* lines of PackBits-style data from *pos*; where it ends."""
    y = 0
    end = len(data)
    while y < height:
        if pos >= end:
            raise RasterError(f"page data cut short at line {y} of {height}")
        y += data[pos] + 1
        pos += 1
        x = 0
        while x < line_units:
            if pos >= end:
                raise RasterError(f"page data cut short inside line {y}")
            c = data[pos]
            pos += 1
            if c == 128:  # the rest of the line is white (URF; tolerated in PWG)
                x = line_units
            elif c < 128:
                x += c + 1
                pos += unit
            else:
                count = 257 - c
                x += count
                pos += count * unit
            if x > line_units:
                raise RasterError(f"line {y} is longer than {line_units} pixels")
    if y != height:
        raise RasterError(f"{y} lines where the header says {height}")
    return pos


def pwg_pages(path: Path) -> list[Page]:
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"RaS2":
        raise RasterError("no RaS2 sync word: not PWG raster")
    pos, pages = 4, []
    while pos < len(data):
        h = data[pos:pos + PWG_HEADER]
        if len(h) < PWG_HEADER or bytes(h[:10]) != b"PwgRaster\0":
            raise RasterError(f"page {len(pages) + 1}: no PwgRaster page header")
        dpi = struct.unpack(">II", h[276:284])
        page_size = struct.unpack(">II", h[352:360])
        width, height = struct.unpack(">II", h[372:380])
        bpc, bpp, bpl, _order, space = struct.unpack(">5I", h[384:404])
        kind = PWG_TYPES.get((space, bpc), f"colorspace-{space}_{bpc}")
        unit = max(1, bpp // 8)
        if width <= 0 or height <= 0 or bpl * 8 < width * bpp:
            raise RasterError(f"page {len(pages) + 1}: impossible size {width}x{height}")
        pos = _skip_lines(data, pos + PWG_HEADER, height, bpl // unit, unit)
        pages.append(Page(dpi, kind, (width, height), page_size))
    if not pages:
        raise RasterError("no pages")
    return pages


def urf_pages(path: Path) -> list[Page]:
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:8]) != b"UNIRAST\0":
        raise RasterError("no UNIRAST header: not URF")
    pos, pages = 12, []
    while pos < len(data):
        h = data[pos:pos + URF_HEADER]
        if len(h) < URF_HEADER:
            raise RasterError(f"page {len(pages) + 1}: header cut short")
        bpp, space = h[0], h[1]
        width, height, dpi = struct.unpack(">III", h[12:24])
        kind = URF_TYPES.get((bpp, space), f"bpp{bpp}-cs{space}")
        if bpp % 8 or width <= 0 or height <= 0:
            raise RasterError(f"page {len(pages) + 1}: {bpp} bits per pixel, {width}x{height}: not URF")
        pos = _skip_lines(data, pos + URF_HEADER, height, width, bpp // 8)
        pages.append(Page((dpi, dpi), kind, (width, height)))
    if not pages:
        raise RasterError("no pages")
    return pages


def _listed(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def check(path: Path) -> int:
    """The page count of a raster file a printer with ippeveprinter's lists
    can print; RasterError saying why not otherwise."""
    head = Path(path).read_bytes()[:8]
    if head.startswith(b"RaS2"):
        pages = pwg_pages(path)
        resolutions = _listed("IPP_PWG_RASTER_DOCUMENT_RESOLUTION_SUPPORTED", "300dpi,600dpi")
        types = _listed("IPP_PWG_RASTER_DOCUMENT_TYPE_SUPPORTED", "black_1,sgray_8")
    elif head.startswith(b"UNIRAST"):
        pages = urf_pages(path)
        urf = _listed("IPP_URF_SUPPORTED", "CP1,IS1-4-5-19,MT1-2-3-4-5-6,RS600,V1.4,W8")
        resolutions = [f"{n}dpi" for k in urf if k.startswith("RS") for n in k[2:].split("-")]
        types = urf
    else:
        raise RasterError("neither PWG raster nor URF")
    for n, page in enumerate(pages, 1):
        x, y = page.dpi
        if (f"{x}dpi" if x == y else f"{x}x{y}dpi") not in resolutions:
            raise RasterError(f"page {n}: {x}x{y} dpi is not one of {', '.join(resolutions)}")
        if page.kind not in types:
            raise RasterError(f"page {n}: {page.kind} is not one of {', '.join(types)}")
    return len(pages)


def main(argv: list[str]) -> int:
    try:
        print(check(Path(argv[1])))
    except (RasterError, OSError) as e:
        print(f"ERROR: {argv[1]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

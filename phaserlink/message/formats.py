"""Which page description language a print job is in, from its first bytes.

Mail programs often lie about, or do not know, the type of an attachment:
mpack labels everything ``application/octet-stream``, and a ``.prn`` file
from a Windows driver may be PostScript or PCL.  The printer side must still
choose the right path (PostScript passes through, PDF goes to Ghostscript,
PCL only to a PCL printer), so it looks at the data itself, the way a
printer's own language sniffing does.

Only the head of a document is needed (``HEAD_SIZE`` bytes); callers read that
much from disk and never pass a whole job.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    HEAD_SIZE,
    PDF_SEARCH,
)

"""How many leading bytes ``detect_format`` looks at (callers read this many)."""

"""Acrobat accepts ``%PDF-`` anywhere in the first 1024 bytes; so do we."""

POSTSCRIPT = "postscript"
PDF = "pdf"
PCL = "pcl"
TEXT = "text"

FORMATS = (POSTSCRIPT, PDF, PCL, TEXT)
"""What our own client labels a job as (``phaserlink send --format``)."""

JPEG = "jpeg"
PNG = "png"
GIF = "gif"
TIFF = "tiff"
HEIF = "heif"
WEBP = "webp"
PWG_RASTER = "pwg-raster"
URF = "urf"
HTML = "html"

IMAGES = (JPEG, PNG, GIF, TIFF, HEIF, WEBP)
"""Photos and pictures: each becomes one page (a TIFF one per frame)."""

OFFICE = ("docx", "xlsx", "pptx", "odt", "ods", "odp", "rtf", "doc", "xls", "ppt")
"""Office documents, made into PDF by LibreOffice (docs/convert.md)."""

PRINTER_FORMATS = (POSTSCRIPT, PDF, PCL, TEXT, JPEG, PNG, PWG_RASTER, URF)
"""What a printer's ``formats`` key may name: what it takes as it is."""

DOCUMENT_FORMATS = tuple(dict.fromkeys(PRINTER_FORMATS + IMAGES + OFFICE + (HTML,)))
"""Every format a document in a mail may be printed from."""

CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        POSTSCRIPT: "application/postscript",
        PDF: "application/pdf",
        PCL: "application/vnd.hp-pcl",
        TEXT: "text/plain",
        JPEG: "image/jpeg",
        PNG: "image/png",
        GIF: "image/gif",
        TIFF: "image/tiff",
        HEIF: "image/heic",
        WEBP: "image/webp",
        PWG_RASTER: "image/pwg-raster",
        URF: "image/urf",
        HTML: "text/html",
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt": "application/vnd.oasis.opendocument.text",
        "ods": "application/vnd.oasis.opendocument.spreadsheet",
        "odp": "application/vnd.oasis.opendocument.presentation",
        "rtf": "application/rtf",
        "doc": "application/msword",
        "xls": "application/vnd.ms-excel",
        "ppt": "application/vnd.ms-powerpoint",
    }
)
"""format -> the MIME type we send; see ``FORMAT_OF_TYPE`` for the reverse."""

FORMAT_OF_TYPE: Mapping[str, str] = MappingProxyType(
    {
        "application/postscript": POSTSCRIPT,
        "application/x-postscript": POSTSCRIPT,
        "application/ps": POSTSCRIPT,
        "application/pdf": PDF,
        "application/x-pdf": PDF,
        "application/vnd.hp-pcl": PCL,
        "application/x-pcl": PCL,
        "application/pcl": PCL,
        "application/vnd.hp-pclxl": PCL,
        "text/plain": TEXT,
        **{t: f for f, t in CONTENT_TYPES.items() if f not in (POSTSCRIPT, PDF, PCL, TEXT)},
        "image/jpg": JPEG,
        "image/pjpeg": JPEG,
        "image/heif": HEIF,
        "image/heic-sequence": HEIF,
        "image/heif-sequence": HEIF,
        "image/tif": TIFF,
        "text/rtf": "rtf",
        "application/x-rtf": "rtf",
    }
)
"""MIME type (lower case, no parameters) -> format, including common aliases."""

EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {POSTSCRIPT: "ps", PDF: "pdf", PCL: "pcl", TEXT: "txt", JPEG: "jpg", PNG: "png", GIF: "gif",
     TIFF: "tif", HEIF: "heic", WEBP: "webp", PWG_RASTER: "pwg", URF: "urf", HTML: "html",
     **{f: f for f in OFFICE}}
)
"""format -> file name extension for spool files and attachment names."""

_UEL = b"\x1b%-12345X"  # PJL Universal Exit Language
_ESC_E = b"\x1bE"  # PCL printer reset
_CTRL_D = b"\x04"  # PostScript end-of-job, often sent first by Windows drivers
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\x08\x1b")  # tolerated in "printable text"
_TEXT_MAX_BAD = 0.01  # fraction of other control bytes still called text


def detect_format(head: bytes) -> str | None:
    """The format of a document starting with *head*, or None if unknown.

    Order matters: PJL-wrapped jobs are unwrapped first (the PJL header says
    which language follows), then PDF (whose magic may come after junk),
    then PostScript and PCL, and text last, because most formats begin with
    text.
    """
    data = head[:HEAD_SIZE]
    if not data:
        return None
    stripped = data.lstrip(_CTRL_D)
    if stripped.startswith(_UEL):
        return _after_pjl(stripped)
    if b"%PDF-" in data[:PDF_SEARCH]:
        return PDF
    if stripped.startswith(b"%!"):
        return POSTSCRIPT
    if data.startswith(_ESC_E):
        return PCL
    binary = _binary_format(data)
    if binary is not None:
        return None if binary in (ZIP, OLE) else binary
    if _looks_like_text(data):
        return TEXT
    return None


#: ISO BMFF brands (the ``ftyp`` box) of HEIF/HEIC pictures.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
#: The ``mimetype`` an OpenDocument file stores first, uncompressed.
_ODF_TYPES = {
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
    b"application/vnd.oasis.opendocument.presentation": "odp",
}
#: Part names inside an Office Open XML zip that say which kind it is.
_OOXML_PARTS = ((b"word/", "docx"), (b"xl/", "xlsx"), (b"ppt/", "pptx"))
ZIP = "zip"
"""A zip whose kind the head does not tell: :func:`refine` decides by name."""
OLE = "ole"
"""An OLE2 compound file (.doc, .xls, .ppt): :func:`refine` decides by name."""


def _binary_format(data: bytes) -> str | None:
    """Pictures, raster streams and Office files, by their magic bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return HEIF
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return WEBP
    if data.startswith(b"RaS2"):
        return PWG_RASTER
    if data.startswith(b"UNIRAST\x00"):
        return URF
    if data.startswith(b"{\\rtf"):
        return "rtf"
    if data.startswith(b"PK\x03\x04"):
        if data[30:38] == b"mimetype":
            for mime, fmt in _ODF_TYPES.items():
                if data[38:38 + len(mime)] == mime:
                    return fmt
            return None  # another OpenDocument kind (a drawing, a formula)
        for part, fmt in _OOXML_PARTS:
            if part in data:
                return fmt
        return ZIP
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return OLE
    return None


def detect_document(head: bytes, declared: str | None, filename: str | None) -> str | None:
    """:func:`detect_format`, and a zip or OLE2 file is the Office document
    its label or name says (the head alone does not always tell which)."""
    detected = _binary_format(head[:HEAD_SIZE]) if head.startswith((b"PK", b"\xd0\xcf")) else None
    if detected not in (ZIP, OLE):
        return detect_format(head)
        return detected
    kinds = ("docx", "xlsx", "pptx") if detected == ZIP else ("doc", "xls", "ppt")
    if declared in kinds:
        return declared
    ext = (filename or "").rpartition(".")[2].lower()
    if ext in kinds:
        return ext
    if detected == OLE and ext in ("dot", "xlt", "pps", "pot"):
        return {"dot": "doc", "xlt": "xls"}.get(ext, "ppt")
    return None


def _after_pjl(data: bytes) -> str | None:
    """Skip the PJL lines after a UEL and look at what they announce or enter."""
    rest = data[len(_UEL):]
    language = None
    while rest.startswith((b"@PJL", b"@pjl")) or rest[:1] in (b"\r", b"\n"):
        line, sep, rest = rest.partition(b"\n")
        if not sep:
            break
        upper = line.upper()
        if b"ENTER" in upper and b"LANGUAGE" in upper and b"=" in upper:
            # "@PJL ENTER LANGUAGE = POSTSCRIPT" (spaces around "=" optional)
            language = upper.partition(b"=")[2].strip()
    if rest.startswith(b"%!") or rest.lstrip(_CTRL_D).startswith(b"%!"):
        return POSTSCRIPT
    if rest.startswith(b"%PDF-"):
        return PDF
    if rest.startswith(_ESC_E):
        return PCL
    if language is not None:
        lang = language.strip().upper()
        if lang.startswith(b"POSTSCRIPT"):
            return POSTSCRIPT
        if lang.startswith(b"PDF"):
            return PDF
        if lang.startswith((b"PCL", b"PCLXL")):
            return PCL
    return None


def _looks_like_text(data: bytes) -> bool:
    """Mostly printable: ASCII or UTF-8/Latin text with few stray controls."""
    bad = sum(1 for b in data if b < 0x20 and b not in _TEXT_CONTROLS) + data.count(b"\x7f")
    if bad > len(data) * _TEXT_MAX_BAD:
        return False
    if data.isascii():
        return True
    # Non-ASCII: UTF-8 (allowing a character cut at the end of the head),
    # or an 8-bit charset with mostly ASCII letters.
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        if e.start >= len(data) - 3 and e.reason == "unexpected end of data":
            return True
    high = sum(1 for b in data if b >= 0x80)
    return high <= len(data) * 0.3


def printer_formats_of(mime_types) -> tuple[str, ...]:
    """What a printer's MIME types (IPP ``document-format-supported``) are in
    the ``formats`` vocabulary (:data:`PRINTER_FORMATS`), in the printer's
    order, each once.  ``application/octet-stream`` (auto-detect) and types
    outside the vocabulary are left out; so is PCL XL, which is no PCL 5.
    Parameters (``text/plain; charset=utf-8``) and case do not matter."""
    found: dict[str, None] = {}
    for mime in mime_types:
        base = str(mime).split(";", 1)[0].strip().lower()
        fmt = FORMAT_OF_TYPE.get(base)
        if fmt in PRINTER_FORMATS and base != "application/vnd.hp-pclxl":
            found[fmt] = None
    return tuple(found)

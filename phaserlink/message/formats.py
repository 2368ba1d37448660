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

HEAD_SIZE = 4096
"""How many leading bytes ``detect_format`` looks at (callers read this many)."""

PDF_SEARCH = 1024
"""Acrobat accepts ``%PDF-`` anywhere in the first 1024 bytes; so do we."""

POSTSCRIPT = "postscript"
PDF = "pdf"
PCL = "pcl"
TEXT = "text"

FORMATS = (POSTSCRIPT, PDF, PCL, TEXT)

CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        POSTSCRIPT: "application/postscript",
        PDF: "application/pdf",
        PCL: "application/vnd.hp-pcl",
        TEXT: "text/plain",
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
    }
)
"""MIME type (lower case, no parameters) -> format, including common aliases."""

EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {POSTSCRIPT: "ps", PDF: "pdf", PCL: "pcl", TEXT: "txt"}
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
    if _looks_like_text(data):
        return TEXT
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

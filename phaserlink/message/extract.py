"""What to print from a mail message, and what the sender asked for.

Print jobs arrive from our own client (one base64 part, well labelled) and
from anything else people use: mpack (everything is application/octet-stream),
and ordinary mail clients (a text body, maybe an HTML alternative, and the
document as an attachment).  The rule, in the order it is applied:

1. Every leaf part is looked at, in message order (multiparts and forwarded
   message/rfc822 parts are entered).  A message/partial message is refused:
   reassemble it first (partial.reassemble).
2. The *body text* is a text/plain part that is neither marked
   ``attachment`` nor carries a file name; HTML alternatives, signatures,
   images, audio and video are ignored.
3. An *attachment* is printable when its type says PostScript, PDF, PCL or
   text/plain (the content is sniffed with detect_format, and a PostScript /
   PDF / PCL label that the content contradicts is corrected); an
   application/octet-stream (or other application/*) part is printable when
   its content is recognised as PostScript, PDF or PCL (and, for
   octet-stream only, as text).
4. **All printable attachments are printed, in message order, as separate
   documents of the one job.**  The body text is then not printed (it is the
   "please print this" note).
5. Only when the message has no attachments at all is the body text printed
   (the first one, e.g. the text/plain of a text+HTML alternative), if it is
   not blank.
6. Otherwise the job fails with ExtractError: nothing printable (IPP reason
   ``unsupported-document-format``, naming what was found) or a body that
   cannot be decoded (``document-format-error``, naming the attachment and
   the fault).  Empty attachments are skipped.

Files are written as ``NN.ext`` in the output directory; the file name from
the mail is only reported, never used as a path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path
from typing import Iterator

from . import fields
from .formats import (
    CONTENT_TYPES,
    EXTENSIONS,
    FORMAT_OF_TYPE,
    HEAD_SIZE,
    PCL,
    PDF,
    POSTSCRIPT,
    DOCUMENT_FORMATS,
    HTML,
    TEXT,
    detect_format,
    detect_document,
)
from .mime import DecodeError, Headers, MimeError, Part, iter_decoded, iter_parts, read_headers

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_TITLE,
)

"""A title is cut to this many characters (IPP job-name is name(255))."""

PAGE_LANGUAGES = (POSTSCRIPT, PDF, PCL)

#: Formats recognised from the bytes (pictures, Office files, raster
#: streams): what the content says wins over the label, as for PDF.
SNIFFED = tuple(f for f in DOCUMENT_FORMATS if f not in (TEXT, HTML))

_IGNORED_TYPES = (
    "text/html",
    "text/enriched",
    "text/richtext",
    "text/x-vcard",
    "text/vcard",
    "application/pgp-signature",
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pgp-keys",
    "message/delivery-status",
    "message/disposition-notification",
)
_IGNORED_MAJOR = ("audio/", "video/", "multipart/", "message/", "model/", "font/")
_JOB_ID = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class ExtractError(Exception):
    """Nothing can be printed from this message.

    ``reason`` is a sentence for the sender's status mail; ``ipp_reason`` is
    an RFC 8011 job-state-reasons keyword for the job.
    """

    def __init__(self, reason: str, ipp_reason: str = "document-format-error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.ipp_reason = ipp_reason


@dataclass(frozen=True)
class Document:
    """One decoded document on disk, ready for conversion/output."""

    path: Path
    format: str  # 'postscript' | 'pdf' | 'pcl' | 'text'
    content_type: str  # as labelled in the mail (e.g. application/octet-stream)
    filename: str | None  # as named in the mail, for display only
    size: int  # decoded bytes
    charset: str | None = None  # for text: the charset parameter, if any


@dataclass(frozen=True)
class JobRequest:
    """What the sender asked for, from the top-level header (see fields.py)."""

    title: str | None
    copies: int
    notify: tuple[str, ...] | None  # None: the printer's default policy
    sender: str | None  # addr-spec of From
    message_id: str | None
    job_id: str | None
    options: str | None = None  # X-PhaserLink-Options as sent (job_options.JobOptions.parse reads it)
    subject: str | None = None  # the Subject, decoded and on one line (job_options.parse_subject reads it)
    copies_given: bool = False  # X-PhaserLink-Copies was there (and valid): it wins over the Subject


@dataclass(frozen=True)
class _Choice:
    part: Part
    format: str | None  # None: sniff while decoding


def extract_documents(message_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Document]:
    """Decode every document to print from *message_path* into *out_dir*.

    See the module docstring for which parts are chosen.  Raises ExtractError.
    On error no files of this call are left behind.
    """
    out_dir = Path(out_dir)
    choices = _choose(message_path)
    docs: list[Document] = []
    try:
        for choice in choices:
            path = out_dir / f"{len(docs) + 1:02d}.tmp"
            doc = _decode(message_path, choice, path)
            if doc is None:
                continue
            final = out_dir / f"{len(docs) + 1:02d}.{EXTENSIONS[doc.format]}"
            os.replace(path, final)
            docs.append(_with_path(doc, final))
    except BaseException:
        for d in docs:
            d.path.unlink(missing_ok=True)
        raise
    if not docs:
        raise ExtractError(_nothing_printable(message_path), "unsupported-document-format")
    return docs


def extract_document(message_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Document:
    """The first document extract_documents would print, written to *out_path*."""
    out_path = Path(out_path)
    for choice in _choose(message_path):
        doc = _decode(message_path, choice, out_path)
        if doc is not None:
            return doc
    raise ExtractError(_nothing_printable(message_path), "unsupported-document-format")


def _with_path(doc: Document, path: Path) -> Document:
    return Document(path, doc.format, doc.content_type, doc.filename, doc.size, doc.charset)


def _walk(message_path: str | os.PathLike[str]) -> list[Part]:
    try:
        parts = list(iter_parts(message_path))
    except MimeError as e:
        raise ExtractError(f"the message is malformed: {e}") from None
    except OSError as e:
        raise ExtractError(f"the message cannot be read: {e}", "document-access-error") from None
    if parts and parts[0].depth == 0 and parts[0].content_type == "message/partial":
        raise ExtractError(
            "the message is one fragment of a message/partial set; "
            "it must be reassembled before printing"
        )
    return parts


def _is_body_text(part: Part) -> bool:
    return (
        part.content_type == "text/plain"
        and part.disposition != "attachment"
        and not part.filename
    )


def _is_ignored(part: Part) -> bool:
    ct = part.content_type
    if ct.startswith("image/") and "multipart/related" in part.ancestors and part.disposition != "attachment":
        return True  # a logo or picture shown inside an HTML body, not a photo to print
    return ct in _IGNORED_TYPES or ct.startswith(_IGNORED_MAJOR) or (
        ct.startswith("text/") and ct != "text/plain"
    )


def _choose(message_path: str | os.PathLike[str]) -> list[_Choice]:
    parts = _walk(message_path)
    attachments = [p for p in parts if not _is_body_text(p) and not _is_ignored(p)]
    if attachments:
        return [_Choice(p, FORMAT_OF_TYPE.get(p.content_type)) for p in attachments]
    bodies = [_Choice(p, TEXT) for p in parts if _is_body_text(p)][:1]
    if bodies:
        return bodies
    # An HTML-only body (an order confirmation, a forwarded newsletter).
    return [_Choice(p, HTML) for p in parts if _is_html_body(p)][:1]


def _is_html_body(part: Part) -> bool:
    return part.content_type == "text/html" and part.disposition != "attachment" and not part.filename


def _decode(message_path: str | os.PathLike[str], choice: _Choice, out_path: Path) -> Document | None:
    """Decode one chosen part; None if it turns out not printable or empty."""
    part = choice.part
    label = f"attachment {part.filename!r}" if part.filename else f"the {part.content_type} part"
    try:
        with open(message_path, "rb") as f:
            pieces = iter_decoded(f, part)
            head, pieces = _head(pieces)
            fmt = _decide(choice, head)
            if fmt is None or not head:
                return None
            if fmt == TEXT and choice.format == TEXT and _is_body_text(part) and not head.strip():
                return None  # a blank body
            size = 0
            with open(out_path, "wb") as out:
                if fmt == HTML:
                    out.write(_html_charset(part))
                for piece in _chain(head, pieces):
                    out.write(piece)
                    size += len(piece)
    except DecodeError as e:
        out_path.unlink(missing_ok=True)
        raise ExtractError(f"{label} cannot be decoded: {e}") from None
    except OSError as e:
        out_path.unlink(missing_ok=True)
        raise ExtractError(f"{label} cannot be written to the spool: {e}", "document-access-error") from None
    charset = part.params.get("charset") if fmt == TEXT else None
    return Document(out_path, fmt, part.content_type, part.filename, size, charset)


_CHARSET = re.compile(r"[A-Za-z0-9._:-]{1,40}")


def _html_charset(part: Part) -> bytes:
    """A ``<meta charset>`` saying the mail's charset, put first: the HTML
    file alone no longer has the Content-Type that said it, and a browser
    would guess (an HTML5 parser takes it from the first 1024 bytes)."""
    charset = part.params.get("charset", "")
    return f'<meta charset="{charset}">\n'.encode() if _CHARSET.fullmatch(charset) else b""


def _head(pieces: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """Take at least HEAD_SIZE decoded bytes (fewer at the end) for sniffing."""
    got: list[bytes] = []
    n = 0
    for piece in pieces:
        got.append(piece)
        n += len(piece)
        if n >= HEAD_SIZE:
            break
    return b"".join(got), pieces


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _decide(choice: _Choice, head: bytes) -> str | None:
    declared = choice.format
    detected = detect_document(head, declared, choice.part.filename)
    if declared == HTML:
        return HTML
    if detected in SNIFFED and detected not in PAGE_LANGUAGES:
        return detected  # a photo, an Office file: whatever it was labelled
    if declared in SNIFFED and detected is None:
        return None  # says it is a picture or an Office file, and is not
    if declared in PAGE_LANGUAGES:
        # a PDF labelled PostScript (and so on) goes where its bytes belong
        return detected if detected in PAGE_LANGUAGES else declared
    if declared == TEXT:
        return detected if detected in PAGE_LANGUAGES else TEXT
    if detected in PAGE_LANGUAGES:
        return detected
    if detected == TEXT and choice.part.content_type == "application/octet-stream":
        return TEXT
    return None


def _nothing_printable(message_path: str | os.PathLike[str]) -> str:
    found = []
    for p in _walk(message_path):
        name = f"{p.content_type}" + (f" ({p.filename})" if p.filename else "")
        found.append(name)
    listed = ", ".join(found[:10]) or "no parts"
    return (f"nothing printable in the message (found: {listed}); PhaserLink prints PostScript, PDF, PCL, "
            "plain text, pictures (JPEG, PNG, GIF, TIFF, HEIC, WebP) and Office documents")


# ---------------------------------------------------------------------------
# The job request header fields


def job_request(headers: Headers) -> JobRequest:
    """Read the sender's wishes; a garbage value is ignored, never an error."""
    return JobRequest(
        title=_title(headers),
        copies=_copies(headers.get(fields.COPIES)),
        notify=_notify(headers.get(fields.NOTIFY)),
        sender=_sender(headers.get("From")),
        message_id=_message_id(headers.get("Message-ID")),
        job_id=_job_id(headers.get(fields.JOB_ID)),
        options=_options(headers.get(fields.OPTIONS)),
        subject=_one_line(headers.display("Subject")),
        copies_given=_copies(headers.get(fields.COPIES), None) is not None,
    )


def job_request_of(message_path: str | os.PathLike[str]) -> JobRequest:
    """job_request of the top-level header of the message file."""
    with open(message_path, "rb") as f:
        return job_request(read_headers(f))


def _title(headers: Headers) -> str | None:
    for name in (fields.TITLE, "Subject"):
        value = _one_line(headers.display(name))
        if value:
            return value
    return None


def _one_line(value: str | None) -> str | None:
    """A header's text without control characters, on one line, bounded."""
    if value is None:
        return None
    return " ".join(_CONTROL.sub(" ", value).split())[:MAX_TITLE] or None


def _options(value: str | None) -> str | None:
    if not value:
        return None
    value = " ".join(_CONTROL.sub(" ", value).split())[:MAX_TITLE]
    return value or None


def _copies(value: str | None, default: int | None = 1) -> int | None:
    if value is None or not re.fullmatch(r"\s*\d{1,6}\s*", value):
        return default
    n = int(value)
    return n if 1 <= n <= fields.MAX_COPIES else default


def _notify(value: str | None) -> tuple[str, ...] | None:
    from .events import read_events  # the header's words are read in one place

    return read_events(value)


def _sender(value: str | None) -> str | None:
    if not value:
        return None
    for _name, addr in getaddresses([value]):
        if "@" in addr and not _CONTROL.search(addr):
            return addr
    return None


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    m = re.search(r"<[^<>\s]+>", value)
    return m.group(0) if m else None


def _job_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if _JOB_ID.fullmatch(value) else None

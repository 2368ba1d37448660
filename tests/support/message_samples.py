"""Sample print data and mail messages for the phaserlink.message tests.

Documents are small but real enough for format sniffing: a PDF header with
binary after it, a DSC PostScript program, a PCL reset, text.  Messages are
built the way the senders we meet build them: Python's email package, a
Thunderbird-style multipart/mixed with a text+HTML alternative, mpack.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
from email.message import EmailMessage
from email.policy import SMTP, default
from pathlib import Path


def pdf_bytes(size: int = 30_000, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n"
    body = bytes(rnd.getrandbits(8) for _ in range(max(0, size - len(head) - 6)))
    return head + body + b"%%EOF\n"


def ps_bytes(lines: int = 400) -> bytes:
    out = [b"%!PS-Adobe-3.0", b"%%Pages: 1", b"/Helvetica findfont 12 scalefont setfont"]
    for i in range(lines):
        out.append(b"72 %d moveto (PhaserLink line %d) show" % (720 - i % 60 * 10, i))
        if i % 60 == 59:
            out.append(b"showpage")
    out.append(b"showpage")
    out.append(b"%%EOF")
    return b"\n".join(out) + b"\n"


PCL = b"\x1bE\x1b&l0O\x1b(s0p12h10v0s0b3T" + b"Hello from PCL\r\n" * 50 + b"\x0c\x1bE"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def email_bytes(msg: EmailMessage, crlf: bool = False) -> bytes:
    """Serialise as stored on disk (LF) or as on the wire (CRLF)."""
    return msg.as_bytes(policy=SMTP if crlf else default)


def python_email_with_attachments(*attachments: tuple[bytes, str, str, str], body: str = "Please print.\n") -> EmailMessage:
    """Text body plus (data, maintype, subtype, filename) attachments."""
    msg = EmailMessage()
    msg["From"] = "Ann Example <ann@example.org>"
    msg["To"] = "lp@print.example"
    msg["Subject"] = "Quarterly report"
    msg["Message-ID"] = "<q1@example.org>"
    msg.set_content(body)
    for data, maintype, subtype, filename in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def mail_with(*attachments: tuple[bytes, str, str, str], sender: str = "alice@example.com",
              to: str = "lp@phaserlink.test", subject: str = "Please print", message_id: str | None = None,
              headers: dict[str, str] | None = None, body: str = "Please print.\n") -> EmailMessage:
    """A job mail as the printer tests send it: a text body and (data,
    maintype, subtype, filename) attachments, *headers* added (e.g.
    X-PhaserLink-Options); a fresh Message-ID unless one is given."""
    from email.utils import make_msgid

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    for data, maintype, subtype, filename in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def thunderbird_style(pdf: bytes, filename: str = "report.pdf") -> bytes:
    """multipart/mixed > (multipart/alternative > text, html), PDF attachment.

    Written out by hand, CRLF line ends, Thunderbird's boundary style (dashes
    and a random tail) and format=flowed text.
    """
    b64 = base64.encodebytes(pdf).replace(b"\n", b"\r\n")
    lines = [
        b'Content-Type: multipart/mixed; boundary="------------0ZqYbD2nF8a1xQ7cLmTsPe3W"',
        b"Message-ID: <7f2c9e1a-1111-4d2b-9a3e-5c6d7e8f9a0b@example.org>",
        b"Date: Tue, 24 Nov 2026 10:15:00 +0100",
        b"MIME-Version: 1.0",
        b"User-Agent: Mozilla Thunderbird",
        b"Content-Language: en-US",
        b"To: lp@print.example",
        b"From: Ann Example <ann@example.org>",
        b"Subject: =?UTF-8?Q?Gr=c3=bc=c3=9fe_report?=",
        b"",
        b"This is a multi-part message in MIME format.",
        b"--------------0ZqYbD2nF8a1xQ7cLmTsPe3W",
        b'Content-Type: multipart/alternative;',
        b' boundary="------------Alt9kQ2mR5vT8wX1yZ4aB6cD"',
        b"",
        b"--------------Alt9kQ2mR5vT8wX1yZ4aB6cD",
        b"Content-Type: text/plain; charset=UTF-8; format=flowed",
        b"Content-Transfer-Encoding: 7bit",
        b"",
        b"Please print the attached report.",
        b"",
        b"--------------Alt9kQ2mR5vT8wX1yZ4aB6cD",
        b"Content-Type: text/html; charset=UTF-8",
        b"Content-Transfer-Encoding: 7bit",
        b"",
        b"<html><body><p>Please print the attached report.</p></body></html>",
        b"",
        b"--------------Alt9kQ2mR5vT8wX1yZ4aB6cD--",
        b"",
        b"--------------0ZqYbD2nF8a1xQ7cLmTsPe3W",
        b'Content-Type: application/pdf; name="%s"' % filename.encode(),
        b'Content-Disposition: attachment; filename="%s"' % filename.encode(),
        b"Content-Transfer-Encoding: base64",
        b"",
    ]
    return b"\r\n".join(lines) + b"\r\n" + b64 + b"\r\n--------------0ZqYbD2nF8a1xQ7cLmTsPe3W--\r\n"


def random_file(path: Path, size: int, prefix: bytes = b"%PDF-1.4\n") -> Path:
    """*size* bytes of incompressible data, written in 1 MB pieces."""
    with open(path, "wb") as f:
        f.write(prefix)
        left = size - len(prefix)
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path

"""DKIM signatures (RFC 6376) on the appliance's own mail, as it is queued.

Status, release and bounce mail leaves from the null reverse-path with a
``From:`` of ``status_sender``; receivers that enforce DMARC take it only
when a DKIM signature of the From domain verifies.  With ``[appliance]
dkim_key``, ``dkim_selector`` and ``dkim_domain`` set, :class:`Signer` adds a
``DKIM-Signature`` (rsa-sha256, relaxed/relaxed) to every message from the
null sender of at most ``MAX_SIGNED_SIZE`` bytes, in the queue's commit, in a
worker thread (docs/outbound.md).

Only these: dkimpy needs the whole message in memory, and the appliance's
own messages are small.  Relayed mail (print jobs of any size, from
clients that sign their own mail or go through their own MTA) is not
signed.  The key file is loaded by the configuration check at start, so a
bad key is a config error naming ``dkim_key``.  dkimpy is imported only
then: a site that does not sign never loads it in the SMTP process.
"""

from __future__ import annotations

from pathlib import Path

# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_SIGNED_SIZE,
    DKIM_SIGN_MIN_KEY_BITS as MIN_KEY_BITS,
)

CANONICALIZATION = (b"relaxed", b"relaxed")


def load_key(path: str | Path) -> bytes:
    """The PEM RSA private key in *path*, checked; ValueError says why not."""
    from dkim.crypto import parse_pem_private_key

    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the key: {e.strerror}") from None
    try:
        key = parse_pem_private_key(pem)
    except Exception as e:
        raise ValueError(f"not a PEM RSA private key ({e.__class__.__name__}); "
                         "make one with phaserlink-dkim-keygen") from None
    bits = key["modulus"].bit_length()
    if bits < MIN_KEY_BITS:
        raise ValueError(f"the RSA key has {bits} bits; DKIM needs at least {MIN_KEY_BITS} (RFC 8301)")
    return pem


class Signer:
    """Makes the DKIM-Signature header for one message."""

    def __init__(self, key_file: str | Path, selector: str, domain: str):
        self.key = load_key(key_file)
        self.selector = selector
        self.domain = domain

    def header(self, message: bytes) -> bytes:
        """The ``DKIM-Signature:`` field (LF line ends, folded) for *message*
        (RFC 5322, LF or CRLF line ends)."""
        import dkim

        wire = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        field = dkim.sign(wire, self.selector.encode("ascii"), self.domain.encode("ascii"), self.key,
                          canonicalize=CANONICALIZATION)
        return field.replace(b"\r\n", b"\n")


def signer_for(appliance) -> Signer | None:
    """The site's signer, or None when DKIM is not configured."""
    key = getattr(appliance, "dkim_key", None)
    if key is None:
        return None
    return Signer(key, appliance.dkim_selector, appliance.dkim_domain)

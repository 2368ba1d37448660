"""TLS contexts for every part: one place that loads certificates and builds
verifying client options, so no part forgets to verify.

Server side: the appliance's certificate (chain) and key from site.ini, used
for SMTP STARTTLS and POP3 STLS.  Client side: ``client_options`` always
verifies the peer's certificate chain and its name (service-identity), against
a given CA file or else the platform's trust store.

Client login policy: :func:`cleartext_login_refusal` is the one rule every
client that sends a password follows (POP3 USER/PASS in
:mod:`phaserlink.net.pop3_client`, SMTP AUTH in
:mod:`phaserlink.net.smtp_client`, so the retriever, the outbound queue's
smarthost and the ``phaserlink`` client alike).  See docs/tls.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet import ssl

if TYPE_CHECKING:
    from phaserlink.config import TLSFiles

#: TLS policies of a client connection (site.ini ``mailbox_tls`` and
#: ``smarthost_tls``, destinations.ini ``tls``).  ``none``: never start TLS,
#: and a password may then go in clear (the administrator said so);
#: ``opportunistic``: TLS when the server offers it, and no login when it
#: does not; ``required``: no session at all without TLS.
TLS_NONE = "none"
TLS_OPPORTUNISTIC = "opportunistic"
TLS_REQUIRED = "required"
TLS_POLICIES = (TLS_NONE, TLS_OPPORTUNISTIC, TLS_REQUIRED)


def cleartext_login_refusal(policy: str, *, encrypted: bool, where: str, offer: str,
                            setting: str = "tls") -> str | None:
    """Why a password must not be sent on this session now, or None if it may.

    The rule: a password goes only over TLS, unless the configuration says
    ``none`` for that server explicitly.  ``opportunistic`` protects against
    a passive listener, not against a server (or a man in the middle) that
    simply stops offering TLS; so without TLS it means "do not log in", and
    the answer says what would allow it.  *where* names the server
    (``pop3://host:110``), *offer* the upgrade it did not offer (``STLS``,
    ``STARTTLS``), *setting* the configuration key that would allow it.
    """
    if policy not in TLS_POLICIES:
        raise ValueError(f"tls must be one of {TLS_POLICIES}, not {policy!r}")
    if encrypted or policy == TLS_NONE:
        return None
    return (f"{where} does not offer {offer}; not sending the password in clear "
            f"(set {setting} = none to allow it)")


def load_server_certificate(files: "TLSFiles") -> ssl.PrivateCertificate:
    """Load cert + key; raise if they are unreadable or do not match."""
    cert_pem = Path(files.certificate).read_bytes()
    key_pem = Path(files.key).read_bytes()
    cert = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
    return cert


def server_options(files: "TLSFiles") -> ssl.CertificateOptions:
    """Options for the server side of STARTTLS/STLS, with the whole chain."""
    from OpenSSL import crypto

    cert_pem = Path(files.certificate).read_bytes()
    key_pem = Path(files.key).read_bytes()
    chain = []
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + b for b in cert_pem.split(marker)[1:]]
    for block in blocks[1:]:
        chain.append(crypto.load_certificate(crypto.FILETYPE_PEM, block))
    leaf = crypto.load_certificate(crypto.FILETYPE_PEM, blocks[0])
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=leaf,
        extraCertChain=chain,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def client_options(hostname: str, ca_file: str | Path | None = None):
    """Client options that verify *hostname* against *ca_file* or the system CAs."""
    if ca_file is not None:
        pem = Path(ca_file).read_bytes()
        marker = b"-----BEGIN CERTIFICATE-----"
        blocks = [marker + b for b in pem.split(marker)[1:]]
        if len(blocks) == 1:
            trust = ssl.Certificate.loadPEM(blocks[0])
        else:
            from OpenSSL import crypto

            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate(crypto.load_certificate(crypto.FILETYPE_PEM, b)) for b in blocks]
            )
        return ssl.optionsForClientTLS(hostname, trustRoot=trust)
    return ssl.optionsForClientTLS(hostname, trustRoot=ssl.platformTrust())

"""TLS contexts for every part: one place that loads certificates and builds
verifying client options, so no part forgets to verify.

Server side: the appliance's certificate (chain) and key from site.ini, used
for SMTP STARTTLS and POP3 STLS.  Client side: ``client_options`` always
verifies the peer's certificate chain and its name (service-identity), against
a given CA file or else the platform's trust store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet import ssl

if TYPE_CHECKING:
    from phaserlink.config import TLSFiles


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

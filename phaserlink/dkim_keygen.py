"""``phaserlink-dkim-keygen``: make the appliance's DKIM key, print its DNS record.

    phaserlink-dkim-keygen --selector SEL --domain DOMAIN [--bits 2048] KEYFILE

Writes an RSA private key (PEM, mode 0600) to KEYFILE (refuses to overwrite
one) and prints the TXT record to publish at ``SEL._domainkey.DOMAIN`` and
the ``[appliance]`` lines that use it (docs/outbound.md).  Exit status: 0
done, 1 the file exists or cannot be written, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys

DEFAULT_BITS = 2048
TXT_CHUNK = 255  # a DNS character-string holds at most 255 bytes


def txt_value(public_der: bytes) -> str:
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode("ascii")


def zone_line(selector: str, domain: str, value: str) -> str:
    chunks = " ".join(f'"{value[i:i + TXT_CHUNK]}"' for i in range(0, len(value), TXT_CHUNK))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phaserlink-dkim-keygen", description=__doc__.split("\n")[0])
    parser.add_argument("--selector", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--bits", type=int, default=DEFAULT_BITS, choices=(1024, 2048, 3072, 4096))
    parser.add_argument("keyfile")
    args = parser.parse_args(argv)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(args.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        print(f"phaserlink-dkim-keygen: {args.keyfile}: {e.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    domain = args.domain.lower().rstrip(".")
    print(f"; publish this record in the DNS zone of {domain}:")
    print(zone_line(args.selector, domain, txt_value(der)))
    print("; and set in site.ini [appliance]:")
    print(f"; dkim_key = {os.path.abspath(args.keyfile)}")
    print(f"; dkim_selector = {args.selector}")
    print(f"; dkim_domain = {domain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

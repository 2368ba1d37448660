"""Password hashes for site.ini, and the ``phaserlink-passwd`` command.

site.ini never holds a clear-text password for something a client logs in
to (POP3 mailboxes, SMTP AUTH for relaying).  The scheme is PBKDF2-HMAC-SHA256
from the standard library, written in the modular crypt style::

    $pbkdf2-sha256$<iterations>$<salt, base64>$<digest, base64>

(base64 is standard base64 without padding).  ``phaserlink-passwd`` reads a
password twice from the terminal (or once from standard input when it is not
a terminal) and prints such a line to paste into site.ini.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass

SCHEME = "pbkdf2-sha256"
DEFAULT_ITERATIONS = 200_000
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MIN_ITERATIONS,
)

SALT_BYTES = 16


class PasswordHashError(ValueError):
    """A stored hash is not in the documented format."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True)
class PasswordHash:
    """A parsed ``$pbkdf2-sha256$...`` hash that can check a password."""

    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> "PasswordHash":
        parts = text.strip().split("$")
        if len(parts) != 5 or parts[0] != "" or parts[1] != SCHEME:
            raise PasswordHashError(
                f"not a {SCHEME} hash; expected $pbkdf2-sha256$ITERATIONS$SALT$DIGEST"
                " (make one with phaserlink-passwd)"
            )
        try:
            iterations = int(parts[2])
        except ValueError:
            raise PasswordHashError(f"iterations {parts[2]!r} is not a number") from None
        if iterations < MIN_ITERATIONS:
            raise PasswordHashError(f"iterations {iterations} is below {MIN_ITERATIONS}")
        try:
            salt = _unb64(parts[3])
            digest = _unb64(parts[4])
        except ValueError:
            raise PasswordHashError("salt or digest is not valid base64") from None
        if len(digest) != 32:
            raise PasswordHashError("digest must be 32 bytes (SHA-256)")
        return cls(iterations, salt, digest)

    def check(self, password: bytes | str) -> bool:
        if isinstance(password, str):
            password = password.encode("utf-8")
        candidate = hashlib.pbkdf2_hmac("sha256", password, self.salt, self.iterations)
        return hmac.compare_digest(candidate, self.digest)

    def __str__(self) -> str:
        return f"${SCHEME}${self.iterations}${_b64(self.salt)}${_b64(self.digest)}"


def hash_password(password: bytes | str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Return the site.ini line for *password*."""
    if isinstance(password, str):
        password = password.encode("utf-8")
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    return str(PasswordHash(iterations, salt, digest))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import getpass

    parser = argparse.ArgumentParser(
        prog="phaserlink-passwd",
        description="Print a password hash for site.ini (pop3_password, [user:NAME] password).",
    )
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            print("phaserlink-passwd: the passwords differ", file=sys.stderr)
            return 1
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if not first:
        print("phaserlink-passwd: empty password", file=sys.stderr)
        return 1
    print(hash_password(first, args.iterations))
    return 0


if __name__ == "__main__":
    sys.exit(main())

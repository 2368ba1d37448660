"""Where an SMTP AUTH or POP3 password comes from: a file, an environment
variable or a prompt, in that order, and never the command line (a command
line is readable by every user through ``ps`` and lands in shell history).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Callable, TextIO

DEFAULT_ENV = "PHASERLINK_PASSWORD"
"""Consulted when an entry names no ``password_env`` of its own."""


class PasswordUnavailable(Exception):
    """No file, no variable, and no terminal to ask on."""


def read_password_file(path: Path) -> str:
    """The first line of *path*, without its line end (the rest is ignored,
    so a file may carry a comment after the password line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise PasswordUnavailable(f"cannot read password file {path}: {e.strerror}") from None
    return text.splitlines()[0] if text else ""


def get_password(
    what: str,
    *,
    password_file: Path | None = None,
    password_env: str | None = None,
    environ: dict[str, str] | None = None,
    interactive: bool | None = None,
    prompt: Callable[[str], str] | None = None,
    stream: TextIO | None = None,
) -> str:
    """The password for *what* (e.g. ``alice@smtp.example.com``).

    Order: *password_file*, the variable *password_env* (or
    :data:`DEFAULT_ENV`), then a prompt if stdin is a terminal.  A named
    variable that is unset is not an error when a prompt can stand in.
    """
    if password_file is not None:
        return read_password_file(password_file)
    env = environ if environ is not None else os.environ
    for name in (password_env, DEFAULT_ENV):
        if name and env.get(name) is not None:
            return env[name]
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if not interactive:
        hint = f"${password_env}" if password_env else f"password_file or ${DEFAULT_ENV}"
        raise PasswordUnavailable(f"no password for {what}: set {hint} (no terminal to ask on)")
    ask = prompt or (lambda text: getpass.getpass(text, stream=stream))
    return ask(f"Password for {what}: ")

"""Printers that fetch their jobs from a mailbox (``mailbox = pop3://...``):
the site.ini the remote-source tests load, and the ``[printer:NAME]``
section of a printer polling its own Dovecot mailbox over POP3S, as the
multi-box tests and the polling benchmark configure hundreds of them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from phaserlink.config import load


def remote_printer(tmp_path: Path, url: str, *, password: str, extra: str = ""):
    """The loaded config of printer ``remote`` (site.ini in *tmp_path*),
    printing into *tmp_path*/printed the mail of the mailbox at *url*,
    logging in with *password* (from a password file); *extra* are more
    lines of its section (``mailbox_tls = none``)."""
    pwfile = tmp_path / "mailbox.password"
    pwfile.write_text(password + "\n")
    (tmp_path / "site.ini").write_text(f"""
[appliance]
hostname = phaserlink.test
spool = {tmp_path}/var

[printer:remote]
sender_auth = none
addresses = remote@phaserlink.test
output = file:{tmp_path}/printed
allowed_senders = *
mailbox = {url}
mailbox_password_file = {pwfile}
{extra}
""")
    return load(tmp_path / "site.ini").printers["remote"]


def pop3s_printer_section(name: str, out: Path, dovecot=None, password: Path | None = None, ca: Path | None = None,
                          *, poll: str = "1s") -> str:
    """A ``[printer:NAME]`` section for NAME@printers.test printing
    PostScript from anyone at big.test into *out*; with a *dovecot*
    (support.dovecot's, with a ``pop3s_port``), it also polls the mailbox
    NAME there over POP3S every *poll*, verified against *ca*, with the
    password in the file *password*."""
    text = textwrap.dedent(f"""\
        [printer:{name}]
        addresses = {name}@printers.test
        output = file:{out}
        allowed_senders = *@big.test
        sender_auth = none
        formats = postscript
        notify = none
        """)
    if dovecot is not None:
        text += textwrap.dedent(f"""\
            mailbox = pop3s://{name}@127.0.0.1:{dovecot.pop3s_port}
            mailbox_password_file = {password}
            mailbox_tls = required
            mailbox_ca = {ca}
            poll_interval = {poll}
            """)
    return text

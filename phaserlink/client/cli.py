"""The ``phaserlink`` command: send, destinations, status, cups-install.

Plain argparse; the network parts run on the reactor through
:func:`phaserlink.client.runner.run`.  Exit codes (also for scripts and the
CUPS backend's callers): 0 done; 1 refused for good (a 5xx reply) or, with
``--wait``, the job did not print; 2 bad arguments or destinations file;
75 temporary failure (4xx, connection refused, timeout): try again later.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Sequence

from phaserlink.client import destinations as dmod
from phaserlink.client.destinations import DestinationError
from phaserlink.client.sending import EXIT_OK, EXIT_TEMPFAIL, EXIT_USAGE
from phaserlink.message import events, job_options
# Everything the appliance can print from (pictures and Office documents too):
# the client only labels the job, the printer side converts it.
from phaserlink.message.formats import DOCUMENT_FORMATS as FORMATS
from phaserlink.values import parse_duration, parse_positive_int, parse_size

PROG = "phaserlink"


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _pages(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return job_options.parse_pages(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _media(text: str) -> str:
    try:
        return job_options.media_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        return parse_positive_int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _notify(text: str) -> tuple[str, ...]:
    try:
        return dmod.parse_notify(text)
    except DestinationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _notify_value(text: str | None) -> str | None:
    """What a destinations.ini ``notify`` key is written as: the event names
    (whatever words were typed), ``none``, or None to leave it out.  A bad
    word is a DestinationError, as for every other bad value of an edit."""
    return None if text is None else events.header_value(dmod.parse_notify(text))


def _format(text: str) -> str:
    if text.lower() not in FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(FORMATS)}")
    return text.lower()


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: "--password x" must not quietly mean "--password-file x".
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Print over the Internet by email (PhaserLink client).",
        epilog="Exit codes: 0 done, 1 refused or not printed, 2 usage or config error, "
               "75 temporary failure (try again later).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser = functools.partial(sub.add_parser, allow_abbrev=False)  # type: ignore[method-assign]

    # send
    p = sub.add_parser("send", help="send files to a printer, a group or a printer's mail address",
                       description="Send each FILE (or standard input for -) as a print job. "
                                   "A group gets one job per member.")
    p.add_argument("files", nargs="+", metavar="FILE", help="a file to print, or - for standard input")
    p.add_argument("--to", required=True, metavar="DEST",
                   help="a printer or group from 'phaserlink destinations', or a mail address")
    p.add_argument("--from", dest="sender", metavar="ADDRESS",
                   help="sender address (default: the destinations file, else LOGIN@HOSTNAME)")
    p.add_argument("--server", metavar="NAME|HOST:PORT",
                   help="SMTP server: an entry's name, HOST:PORT, or smtps://HOST:PORT for implicit TLS")
    p.add_argument("--tls", choices=dmod.TLS_POLICIES, help="STARTTLS policy for --server HOST:PORT "
                   "(default opportunistic; the certificate is always verified)")
    p.add_argument("--ca-file", type=Path, metavar="PEM", help="trust these CAs instead of the system's")
    p.add_argument("--user", metavar="NAME", help="SMTP AUTH login (password from --password-file, "
                   "$PHASERLINK_PASSWORD, or a prompt)")
    p.add_argument("--password-file", type=Path, metavar="FILE", help="read the SMTP AUTH password from FILE")
    p.add_argument("--copies", type=_positive, metavar="N", help="copies to print")
    p.add_argument("--title", metavar="TEXT", help="job title (default: the file name)")
    p.add_argument("--sides", choices=job_options.SIDES, help="one- or two-sided printing")
    p.add_argument("--media", type=_media, metavar="SIZE",
                   help=f"paper size: {', '.join(job_options.MEDIA)} or a PWG name (iso_a4_210x297mm)")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--color", dest="color", action="store_const", const="color", help="print in colour")
    colour.add_argument("--monochrome", dest="color", action="store_const", const="monochrome",
                        help="print in black and white")
    p.add_argument("--pages", type=_pages, metavar="LIST", help="pages to print, e.g. 1-3,7")
    p.add_argument("--notify", type=_notify, metavar="EVENTS",
                   help=f"status mail wanted: some of {','.join(events.EVENTS)}, or {events.ALL} or "
                        f"{events.NONE} (default: the destination's, else the printer's policy)")
    p.add_argument("--max-message-size", type=_size, metavar="SIZE",
                   help="split into message/partial fragments above SIZE (e.g. 5M; default: the server's "
                        "SIZE less headroom for relays, else 10M)")
    p.add_argument("--type", type=_format, metavar="FORMAT",
                   help=f"data format ({', '.join(FORMATS)}; default: detected from the data)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the final status mail (needs a [mailbox]); exit 0 only if printed")
    p.add_argument("--wait-timeout", type=_duration, default=3600.0, metavar="DURATION",
                   help="give up waiting after this long (seconds, or e.g. 90s, 30m, 2h; default 1h)")
    p.add_argument("--wait-interval", type=_duration, default=15.0, metavar="DURATION",
                   help="check the mailbox this often while waiting (default 15s)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    # destinations
    p = sub.add_parser("destinations", help="manage printers, groups, SMTP servers and the status mailbox",
                       description=f"Entries live in {dmod.user_path()} merged over the site file "
                                   f"{dmod.site_path()} (${dmod.SITE_ENV} overrides its path).")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    dsub.add_parser = functools.partial(dsub.add_parser, allow_abbrev=False)  # type: ignore[method-assign]
    dsub.add_parser("list", help="list every destination and server", description="List every entry.")
    q = dsub.add_parser("show", help="show one entry", description="Show one entry and where it is defined.")
    q.add_argument("name", metavar="NAME")

    q = dsub.add_parser("add-printer", help="add or replace a printer",
                        description="Add (or replace) a printer: its mail address and default options.")
    q.add_argument("name", metavar="NAME")
    q.add_argument("address", metavar="ADDRESS", help="the printer's mail address")
    q.add_argument("--server", metavar="NAME", help="SMTP server entry to send through")
    q.add_argument("--copies", type=_positive, metavar="N")
    q.add_argument("--notify", metavar="EVENTS")
    q.add_argument("--type", type=_format, metavar="FORMAT")
    q.add_argument("--title", metavar="TEXT")
    q.add_argument("--from", dest="sender", metavar="ADDRESS")
    q.add_argument("--max-message-size", metavar="SIZE")

    q = dsub.add_parser("add-group", help="add or replace a group of printers",
                        description="Add (or replace) a group: a send to it is one job per member.")
    q.add_argument("name", metavar="NAME")
    q.add_argument("members", nargs="+", metavar="MEMBER", help="printer names")
    q.add_argument("--server", metavar="NAME")
    q.add_argument("--notify", metavar="EVENTS")

    q = dsub.add_parser("add-server", help="add or replace an SMTP server",
                        description="Add (or replace) an SMTP server. ENDPOINT is HOST[:PORT] (STARTTLS "
                                    "by --tls) or smtps://HOST[:PORT] (implicit TLS).")
    q.add_argument("name", metavar="NAME")
    q.add_argument("endpoint", metavar="ENDPOINT")
    q.add_argument("--tls", choices=dmod.TLS_POLICIES)
    q.add_argument("--ca-file", metavar="PEM")
    q.add_argument("--username", metavar="LOGIN")
    q.add_argument("--password-file", metavar="FILE")
    q.add_argument("--password-env", metavar="VARIABLE")
    q.add_argument("--max-message-size", metavar="SIZE")
    q.add_argument("--helo", metavar="NAME")
    q.add_argument("--default", action="store_true", help="make it the default server")

    q = dsub.add_parser("set-mailbox", help="set the POP3 mailbox status mail arrives in",
                        description="ENDPOINT is pop3://HOST[:PORT] (STLS by --tls) or pop3s://HOST[:PORT].")
    q.add_argument("endpoint", metavar="ENDPOINT")
    q.add_argument("--username", required=True, metavar="LOGIN")
    q.add_argument("--tls", choices=dmod.TLS_POLICIES)
    q.add_argument("--ca-file", metavar="PEM")
    q.add_argument("--password-file", metavar="FILE")
    q.add_argument("--password-env", metavar="VARIABLE")

    q = dsub.add_parser("set-defaults", help="set the default sender, server or notify events",
                        description="Set keys of [defaults]; an empty value removes nothing (edit the file).")
    q.add_argument("--from", dest="sender", metavar="ADDRESS")
    q.add_argument("--server", metavar="NAME")
    q.add_argument("--notify", metavar="EVENTS")

    q = dsub.add_parser("remove", help="remove a printer, group or server (or 'mailbox')",
                        description="Remove an entry from your file. NAME may be written printer:NAME, "
                                    "group:NAME or server:NAME when names clash.")
    q.add_argument("name", metavar="NAME")

    # status
    p = sub.add_parser("status", help="show print jobs' status from the status mail in your mailbox",
                       description="Read status mail from the [mailbox] over POP3 and show each job. "
                                   "Other mail is left alone.")
    p.add_argument("job", nargs="?", metavar="JOB", help="only this job id")
    p.add_argument("--all", action="store_true", help="every status event, not only each job's latest")
    p.add_argument("--delete", action="store_true",
                   help="delete the status mail of finished jobs after showing it (default: keep)")
    p.add_argument("--password-file", type=Path, metavar="FILE")

    # cups-install
    p = sub.add_parser("cups-install", help="install the CUPS backend as 'phaserlink'",
                       description="Install the phaserlink CUPS backend so queues can use phaserlink://DEST "
                                   "device URIs (add one with: lpadmin -p QUEUE -E -v phaserlink://DEST).")
    p.add_argument("--backend-dir", type=Path, metavar="DIR",
                   help="CUPS backend directory (default: from cups-config, else /usr/lib/cups/backend)")
    p.add_argument("--run-as", choices=("lp", "root"), default="root",
                   help="mode 0700 runs the backend as root (can read root-only password files); "
                        "0755 as lp (default: root)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "send":
            from phaserlink.client.send_command import run_send

            return run_send(args)
        if args.command == "destinations":
            return run_destinations(args)
        if args.command == "status":
            from phaserlink.client.status import run_status

            return run_status(args)
        if args.command == "cups-install":
            from phaserlink.client.cups_install import install

            path = install(args.backend_dir, run_as=args.run_as)
            print(f"installed {path}")
            print("add a queue with: lpadmin -p QUEUE -E -v phaserlink://PRINTER")
            return EXIT_OK
    except DestinationError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_TEMPFAIL
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


# -- destinations ------------------------------------------------------------------


def _kind_name(text: str) -> tuple[str | None, str]:
    kind, sep, name = text.partition(":")
    if sep and kind in ("printer", "group", "server"):
        return kind, name
    return None, text


def run_destinations(args: argparse.Namespace) -> int:
    action = args.action
    if action == "list":
        return _list(dmod.load())
    if action == "show":
        return _show(dmod.load(), args.name)
    user = dmod.user_path()
    site = dmod.site_path()
    if action == "add-printer":
        dmod.check_name(args.name)
        values = {
            "address": dmod.check_address(args.address), "server": args.server,
            "copies": str(args.copies) if args.copies else None, "notify": _notify_value(args.notify),
            "type": args.type,
            "title": args.title, "from": args.sender, "max_message_size": args.max_message_size,
        }
        section, message = f"printer:{args.name}", f"printer {args.name} -> {args.address}"
    elif action == "add-group":
        dmod.check_name(args.name)
        values = {"members": ", ".join(args.members), "server": args.server,
                  "notify": _notify_value(args.notify)}
        section, message = f"group:{args.name}", f"group {args.name}: {' '.join(args.members)}"
    elif action == "add-server":
        dmod.check_name(args.name)
        values = {
            "endpoint": args.endpoint, "tls": args.tls, "ca_file": args.ca_file, "username": args.username,
            "password_file": args.password_file, "password_env": args.password_env,
            "max_message_size": args.max_message_size, "helo": args.helo,
        }
        section, message = f"server:{args.name}", f"server {args.name} at {args.endpoint}"
    elif action == "set-mailbox":
        values = {
            "endpoint": args.endpoint, "username": args.username, "tls": args.tls, "ca_file": args.ca_file,
            "password_file": args.password_file, "password_env": args.password_env,
        }
        section, message = "mailbox", f"mailbox {args.username} at {args.endpoint}"
    elif action == "set-defaults":
        values = {"from": args.sender, "server": args.server, "notify": _notify_value(args.notify)}
        section, message = "defaults", "defaults"
    elif action == "remove":
        return _remove(args.name, user, site)
    else:
        raise AssertionError(action)

    with dmod.edit(user) as ini:
        if action in ("set-defaults",) or (action == "add-server" and args.default):
            if action == "add-server":
                ini.set_section(section, values)
                ini.set_key("defaults", "server", args.name)
            else:
                for key, value in values.items():
                    if value:
                        ini.set_key("defaults", key, value)
        else:
            ini.set_section(section, values)
        dmod.load(site, user, user_text=ini.text())  # refuse an edit that breaks the file
    print(f"{PROG}: saved {message} in {user}")
    return EXIT_OK


def _remove(text: str, user: Path, site: Path) -> int:
    kind, name = _kind_name(text)
    merged = dmod.load(site, user)
    if text == "mailbox":
        candidates = ["mailbox"]
    elif kind:
        candidates = [f"{kind}:{name}"]
    else:
        candidates = [f"{k}:{name}" for k in ("printer", "group", "server")]
    with dmod.edit(user) as ini:
        present = [c for c in candidates if c in ini.names()]
        if not present:
            elsewhere = [c for c in candidates if c in merged.origin]
            if elsewhere:
                raise DestinationError(f"{elsewhere[0]} is defined in {merged.origin[elsewhere[0]]}, "
                                       f"not in your {user}: ask its owner to remove it")
            raise DestinationError(f"no entry named {text!r}")
        if len(present) > 1:
            raise DestinationError(f"{text!r} names {' and '.join(present)}: write one of them")
        ini.remove_section(present[0])
        dmod.load(site, user, user_text=ini.text())
    print(f"{PROG}: removed {present[0]} from {user}")
    return EXIT_OK


def _list(d: dmod.Destinations) -> int:
    if not (d.printers or d.groups or d.servers or d.mailbox):
        print(f"no destinations (add one with: {PROG} destinations add-printer NAME ADDRESS)")
        return EXIT_OK
    for name, p in sorted(d.printers.items()):
        server = p.server or d.default_server or "-"
        print(f"printer  {name:<16} {p.address}  (server {server})")
    for name, g in sorted(d.groups.items()):
        print(f"group    {name:<16} {', '.join(g.members)}")
    for name, s in sorted(d.servers.items()):
        flag = "  (default)" if name == d.default_server else ""
        scheme = "smtps" if s.endpoint.implicit_tls else "smtp"
        print(f"server   {name:<16} {scheme}://{s.endpoint}  tls={s.tls}{flag}")
    if d.mailbox:
        scheme = "pop3s" if d.mailbox.endpoint.implicit_tls else "pop3"
        print(f"mailbox  {d.mailbox.username}@{d.mailbox.endpoint}  ({scheme}, tls={d.mailbox.tls})")
    return EXIT_OK


def _show(d: dmod.Destinations, text: str) -> int:
    kind, name = _kind_name(text)
    found: list[tuple[str, Any]] = []
    if text == "mailbox" and d.mailbox:
        found.append(("mailbox", d.mailbox))
    for k, table in (("printer", d.printers), ("group", d.groups), ("server", d.servers)):
        if (kind in (None, k)) and name in table:
            found.append((f"{k}:{name}", table[name]))
    if not found:
        raise DestinationError(f"no entry named {text!r}")
    for section, entry in found:
        print(f"[{section}]  (from {d.origin.get(section, '?')})")
        for field_name, value in vars(entry).items():
            if value is None or field_name == "name":
                continue
            if isinstance(value, tuple):
                value = ", ".join(value)
            print(f"  {field_name} = {value}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

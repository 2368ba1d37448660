"""The destination manager: printers, groups, SMTP servers and the status
mailbox a user prints to, kept in ``destinations.ini``.

Two files are read, the user's over the site's:

* site: ``/etc/phaserlink/destinations.ini`` (``$PHASERLINK_SITE_DESTINATIONS``
  overrides the path; the CUPS backend reads only this one);
* user: ``$XDG_CONFIG_HOME/phaserlink/destinations.ini`` (``~/.config/...``).

A section in the user file replaces the site's section of the same name as a
whole (a printer is one thing: mixing the site's address with the user's
server would print somewhere nobody asked for); ``[defaults]`` merges key by
key.

Edits go to the user file only, through :func:`edit`: an exclusive
``flock`` on ``destinations.ini.lock``, re-read under the lock, then a
temporary file, fsync, rename and directory fsync.  So two commands at once
both land (the original Destination Manager lost edits: last writer won), and
a crash leaves the old file or the new one, never half of one.  Edits keep the
rest of the file as it was, comments included: sections are replaced as
blocks of lines, not re-serialised.

Sections and keys (the sample is ``etc/destinations.ini``)::

    [defaults]      from, server, notify
    [printer:NAME]  address, server, copies, notify, type, title, from,
                    max_message_size
    [group:NAME]    members (printer names), server, notify
    [server:NAME]   endpoint (HOST[:PORT] or smtps://HOST[:PORT]), tls
                    (none, opportunistic, required), ca_file, username,
                    password_file, password_env, max_message_size, helo
    [mailbox]       endpoint (pop3://HOST[:PORT] or pop3s://HOST[:PORT]),
                    username, tls, ca_file, password_file, password_env
"""

from __future__ import annotations

import configparser
import fcntl
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from phaserlink.durable import write_atomic
from phaserlink.message import events
from phaserlink.message.formats import DOCUMENT_FORMATS as FORMATS  # what the appliance prints from
from phaserlink.values import parse_host_port, parse_positive_int, parse_size, split_list

SITE_PATH = Path("/etc/phaserlink/destinations.ini")
SITE_ENV = "PHASERLINK_SITE_DESTINATIONS"
FILE_NAME = "destinations.ini"
LOCK_SUFFIX = ".lock"

TLS_POLICIES = ("none", "opportunistic", "required")
SMTP_PORT = 25
SMTPS_PORT = 465
POP3_PORT = 110
POP3S_PORT = 995

SECTION_KEYS: dict[str, set[str]] = {
    "defaults": {"from", "server", "notify"},
    "printer": {"address", "server", "copies", "notify", "type", "title", "from", "max_message_size"},
    "group": {"members", "server", "notify"},
    "server": {"endpoint", "tls", "ca_file", "username", "password_file", "password_env",
               "max_message_size", "helo"},
    "mailbox": {"endpoint", "username", "tls", "ca_file", "password_file", "password_env"},
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")
_HEADER = re.compile(r"^\s*\[([^\]]+)\]")


class DestinationError(Exception):
    """A mistake in a destinations file or a request about destinations."""


# -- values -------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens and whether TLS starts at once."""

    host: str
    port: int
    implicit_tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Server:
    """An SMTP server to send through."""

    name: str  # the entry's name, or the HOST:PORT it was given as
    endpoint: Endpoint
    tls: str = "opportunistic"
    ca_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    max_message_size: int | None = None
    helo: str | None = None


@dataclass(frozen=True)
class Mailbox:
    """The POP3 mailbox the user's status mail arrives in."""

    endpoint: Endpoint
    username: str
    tls: str = "opportunistic"
    ca_file: Path | None = None
    password_file: Path | None = None
    password_env: str | None = None


@dataclass(frozen=True)
class Printer:
    name: str
    address: str
    server: str | None = None
    copies: int | None = None
    notify: tuple[str, ...] | None = None
    type: str | None = None
    title: str | None = None
    sender: str | None = None
    max_message_size: int | None = None


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[str, ...]
    server: str | None = None
    notify: tuple[str, ...] | None = None


@dataclass
class Destinations:
    """The merged view of the site and user files."""

    printers: dict[str, Printer] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    mailbox: Mailbox | None = None
    default_from: str | None = None
    default_server: str | None = None
    default_notify: tuple[str, ...] | None = None
    origin: dict[str, Path] = field(default_factory=dict)  # section -> file it came from

    def server(self, name: str) -> Server:
        try:
            return self.servers[name]
        except KeyError:
            raise DestinationError(f"no SMTP server named {name!r} (see: phaserlink destinations list)") from None


# -- parsing helpers ------------------------------------------------------------


def parse_endpoint(text: str, *, scheme: str = "smtp") -> Endpoint:
    """``HOST[:PORT]``, ``[v6]:PORT``, ``smtp://``/``smtps://`` (or
    ``pop3://``/``pop3s://`` for a mailbox) -> :class:`Endpoint`."""
    text = text.strip()
    plain, secure = (SMTP_PORT, SMTPS_PORT) if scheme == "smtp" else (POP3_PORT, POP3S_PORT)
    implicit = False
    if "://" in text:
        prefix, _, text = text.partition("://")
        if prefix == scheme + "s":
            implicit = True
        elif prefix != scheme:
            raise DestinationError(f"{prefix}:// is not {scheme}:// or {scheme}s://")
    try:
        host, port = parse_host_port(text.rstrip("/"), secure if implicit else plain)
    except ValueError as e:
        raise DestinationError(str(e)) from None
    return Endpoint(host, port, implicit)


def parse_notify(text: str) -> tuple[str, ...]:
    """``printed, failed`` -> the events (:mod:`phaserlink.message.events`;
    the old ``errors`` and ``trace`` are read too), ``()`` for ``none``."""
    try:
        return events.parse_events(text)
    except events.UnknownEvent as e:
        raise DestinationError(str(e)) from None


def check_address(text: str) -> str:
    text = text.strip()
    if not _ADDRESS.match(text):
        raise DestinationError(f"{text!r} is not a mail address (local@domain)")
    return text


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise DestinationError(f"{name!r} is not a name (letters, digits, _ . -)")
    return name


def check_format(text: str) -> str:
    text = text.lower()
    if text not in FORMATS:
        raise DestinationError(f"{text!r} is not one of {', '.join(FORMATS)}")
    return text


def is_address(dest: str) -> bool:
    return "@" in dest


# -- reading ----------------------------------------------------------------------


def site_path() -> Path:
    return Path(os.environ.get(SITE_ENV) or SITE_PATH)


def user_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "phaserlink" / FILE_NAME


def _read_parser(path: Path, text: str | None = None) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       default_section="\0none")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        if text is not None:
            parser.read_string(text, source=str(path))
        else:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DestinationError(f"{path}: cannot read: {e.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        raise DestinationError(f"{path}: not an ini file: {e}") from None
    return parser


def load(site: Path | None = None, user: Path | None = None, *, use_user: bool = True,
         user_text: str | None = None) -> Destinations:
    """The merged destinations; missing files are simply empty.

    *use_user* False reads the site file only (the CUPS backend: it runs as
    lp or root, whose home is not a user's).  *user_text* stands in for the
    user file's contents (to check an edit before it is written).
    """
    site = site if site is not None else site_path()
    user = user if user is not None else user_path()
    sections: dict[str, tuple[Path, dict[str, str]]] = {}
    defaults: dict[str, tuple[Path, str]] = {}
    for path in (site, user) if use_user else (site,):
        parser = _read_parser(path, user_text if path is user and user_text is not None else None)
        if parser is None:
            continue
        for name in parser.sections():
            values = {k: v.strip() for k, v in parser[name].items()}
            if name == "defaults":
                for k, v in values.items():
                    defaults[k] = (path, v)
            else:
                sections[name] = (path, values)
    result = Destinations()
    for key, (path, value) in defaults.items():
        _check_keys(path, "defaults", {key})
        try:
            if key == "from":
                result.default_from = check_address(value)
            elif key == "server":
                result.default_server = value
            elif key == "notify":
                result.default_notify = parse_notify(value)
        except DestinationError as e:
            raise DestinationError(f"{path}: [defaults] {key}: {e}") from None
    for name, (path, values) in sections.items():
        result.origin[name] = path
        kind, _, short = name.partition(":")
        if kind not in SECTION_KEYS or (kind == "mailbox") != (short == ""):
            raise DestinationError(
                f"{path}: [{name}]: unknown section (expected [defaults], [printer:NAME], [group:NAME], "
                "[server:NAME], [mailbox])")
        _check_keys(path, name, set(values), kind)
        try:
            if kind == "printer":
                result.printers[short] = _printer(check_name(short), values)
            elif kind == "group":
                result.groups[short] = _group(check_name(short), values)
            elif kind == "server":
                result.servers[short] = _server(check_name(short), values)
            elif kind == "mailbox":
                result.mailbox = _mailbox(values)
        except DestinationError as e:
            raise DestinationError(f"{path}: [{name}] {e}") from None
    clash = set(result.printers) & set(result.groups)
    if clash:
        raise DestinationError(f"{', '.join(sorted(clash))}: both a printer and a group")
    for group in result.groups.values():
        for member in group.members:
            if member not in result.printers:
                raise DestinationError(
                    f"{result.origin['group:' + group.name]}: [group:{group.name}] members: "
                    f"{member!r} is not a printer")
    return result


def _check_keys(path: Path, section: str, keys: set[str], kind: str | None = None) -> None:
    allowed = SECTION_KEYS[kind or section]
    unknown = keys - allowed
    if unknown:
        raise DestinationError(
            f"{path}: [{section}] {', '.join(sorted(unknown))}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _required(values: dict[str, str], key: str) -> str:
    value = values.get(key)
    if not value:
        raise DestinationError(f"{key}: is required")
    return value


def _keyed(key: str, convert, value: str):
    try:
        return convert(value)
    except DestinationError as e:
        raise DestinationError(f"{key}: {e}") from None
    except ValueError as e:
        raise DestinationError(f"{key}: {e}") from None


_positive = parse_positive_int  # the shared parser (phaserlink.values)


def _tls(values: dict[str, str]) -> str:
    tls = values.get("tls", "opportunistic").lower()
    if tls not in TLS_POLICIES:
        raise DestinationError(f"tls: {tls!r} is not one of {', '.join(TLS_POLICIES)}")
    return tls


def _path(values: dict[str, str], key: str) -> Path | None:
    value = values.get(key)
    return Path(os.path.expanduser(value)) if value else None


def _printer(name: str, values: dict[str, str]) -> Printer:
    get = values.get
    return Printer(
        name=name,
        address=_keyed("address", check_address, _required(values, "address")),
        server=get("server") or None,
        copies=_keyed("copies", _positive, get("copies")) if get("copies") else None,
        notify=_keyed("notify", parse_notify, get("notify")) if get("notify") else None,
        type=_keyed("type", check_format, get("type")) if get("type") else None,
        title=get("title") or None,
        sender=_keyed("from", check_address, get("from")) if get("from") else None,
        max_message_size=_keyed("max_message_size", parse_size, get("max_message_size"))
        if get("max_message_size") else None,
    )


def _group(name: str, values: dict[str, str]) -> Group:
    members = tuple(split_list(_required(values, "members")))
    return Group(
        name=name,
        members=members,
        server=values.get("server") or None,
        notify=_keyed("notify", parse_notify, values["notify"]) if values.get("notify") else None,
    )


def _server(name: str, values: dict[str, str]) -> Server:
    get = values.get
    return Server(
        name=name,
        endpoint=_keyed("endpoint", parse_endpoint, _required(values, "endpoint")),
        tls=_tls(values),
        ca_file=_path(values, "ca_file"),
        username=get("username") or None,
        password_file=_path(values, "password_file"),
        password_env=get("password_env") or None,
        max_message_size=_keyed("max_message_size", parse_size, get("max_message_size"))
        if get("max_message_size") else None,
        helo=get("helo") or None,
    )


def _mailbox(values: dict[str, str]) -> Mailbox:
    return Mailbox(
        endpoint=_keyed("endpoint", lambda t: parse_endpoint(t, scheme="pop3"), _required(values, "endpoint")),
        username=_required(values, "username"),
        tls=_tls(values),
        ca_file=_path(values, "ca_file"),
        password_file=_path(values, "password_file"),
        password_env=values.get("password_env") or None,
    )


# -- editing --------------------------------------------------------------------------


class IniText:
    """An ini file as blocks of lines, so one section can be replaced or
    removed while every other line, comments included, stays as written."""

    def __init__(self, text: str):
        self.preamble: list[str] = []
        self.blocks: list[tuple[str, list[str]]] = []  # (section name, lines incl. header)
        current = self.preamble
        for line in text.splitlines(keepends=True):
            m = _HEADER.match(line)
            if m:
                current = [line]
                self.blocks.append((m.group(1).strip(), current))
            else:
                current.append(line)

    def names(self) -> list[str]:
        return [name for name, _ in self.blocks]

    def set_section(self, name: str, values: dict[str, str]) -> None:
        lines = [f"[{name}]\n"] + [f"{k} = {v}\n" for k, v in values.items() if v is not None and v != ""]
        for i, (existing, _) in enumerate(self.blocks):
            if existing == name:
                self.blocks[i] = (name, lines + ["\n"])
                return
        if self.blocks and not self.blocks[-1][1][-1].strip() == "":
            self.blocks[-1][1].append("\n")
        elif not self.blocks and self.preamble and self.preamble[-1].strip():
            self.preamble.append("\n")
        self.blocks.append((name, lines + ["\n"]))

    def set_key(self, section: str, key: str, value: str) -> None:
        for name, lines in self.blocks:
            if name == section:
                for i, line in enumerate(lines[1:], 1):
                    if re.match(rf"^\s*{re.escape(key)}\s*[=:]", line):
                        lines[i] = f"{key} = {value}\n"
                        return
                at = len(lines)
                while at > 1 and not lines[at - 1].strip():
                    at -= 1
                lines.insert(at, f"{key} = {value}\n")
                return
        self.set_section(section, {key: value})

    def remove_section(self, name: str) -> bool:
        before = len(self.blocks)
        self.blocks = [(n, lines) for n, lines in self.blocks if n != name]
        return len(self.blocks) != before

    def text(self) -> str:
        return "".join(self.preamble) + "".join("".join(lines) for _, lines in self.blocks)


def atomic_write(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its mode (0600 for a new one: it
    may come to hold a password_env name, CA paths...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600
    write_atomic(path, text.encode("utf-8"), mode)


@contextmanager
def edit(path: Path | None = None) -> Iterator[IniText]:
    """Lock *path* (the user file), yield its text as :class:`IniText`,
    write it back atomically if the block ends without an exception."""
    path = path if path is not None else user_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            try:
                original = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                original = ""
            ini = IniText(original)
            yield ini
            new = ini.text()
            if new != original:
                atomic_write(path, new)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

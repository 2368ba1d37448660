"""site.ini -> typed, validated settings.

Every mistake in a site.ini becomes one :class:`ConfigError` that names the
file, the section, the key and why, so that ``twistd phaserlink`` can refuse to
start before it binds a single port.  The settings are frozen dataclasses: the
rest of the appliance never sees a raw string from the file.

Sections:

``[appliance]``
    hostname, spool, listen endpoints, TLS, limits, relay policy, smarthost.
``[printer:NAME]``
    one per printer: addresses, output, allowed senders, POP3 login, formats,
    notify policy, mailbox (local or a remote POP3 URL).
``[group:NAME]``
    an address that delivers into each member printer's mailbox.
``[user:NAME]``
    an SMTP AUTH login allowed to relay through the appliance.
"""

from __future__ import annotations

import configparser
import fnmatch
import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, TypeVar
from urllib.parse import unquote, urlsplit

from phaserlink.message import events, formats, job_options
from phaserlink.passwords import PasswordHash, PasswordHashError
from phaserlink.values import parse_duration, parse_host_port, parse_positive_int, parse_size, split_list
from phaserlink.values import split_host_port  # noqa: F401  (re-exported for older callers)

T = TypeVar("T")


class ConfigError(Exception):
    """A site.ini mistake, naming where it is and why."""

    def __init__(self, file: str, section: str | None, key: str | None, why: str):
        self.file = file
        self.section = section
        self.key = key
        self.why = why
        where = file
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
        super().__init__(f"{where}: {why}")


# -- value objects -----------------------------------------------------------

TLS_POLICIES = ("none", "opportunistic", "required")
NOTIFY_EVENTS = events.EVENTS  # the words of a printer's notify: phaserlink.message.events
FORMATS = formats.PRINTER_FORMATS  # named once, in phaserlink.message.formats
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_LOCAL_PART,
)


@dataclass(frozen=True)
class TLSFiles:
    """A PEM certificate (chain) and its private key, both checked readable."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class Smarthost:
    """Where the outbound queue hands all mail it sends."""

    host: str
    port: int
    tls: str  # one of TLS_POLICIES
    implicit_tls: bool
    ca_file: Path | None
    username: str | None
    password_file: Path | None


@dataclass(frozen=True)
class RemoteMailbox:
    """``mailbox = pop3://user@host:port`` (or pop3s://) for a printer."""

    host: str
    port: int
    username: str
    password_file: Path | None
    tls: str  # one of TLS_POLICIES
    implicit_tls: bool
    ca_file: Path | None


@dataclass(frozen=True)
class ApplianceConfig:
    hostname: str
    spool: Path
    smtp_listen: tuple[str, ...]
    pop3_listen: tuple[str, ...]
    tls: TLSFiles | None
    max_message_size: int
    max_recipients: int
    max_sessions: int
    max_line_length: int
    smtp_timeout: float
    pop3_timeout: float
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    smarthost: Smarthost | None
    status_sender: str
    queue_max_age: float
    queue_retry_min: float
    queue_retry_max: float
    postmaster: str | None = None  # postmaster@ mail is relayed here; None: kept in the local box
    postmaster_pop3_password: PasswordHash | None = None  # POP3 login "postmaster" to that box
    # Outbound mail without a smarthost, DKIM (docs/outbound.md)
    dns_servers: tuple[tuple[str, int], ...] = ()  # () = the system resolver
    mx_port: int = 25  # port of MX hosts (tests use another)
    outbound_tls: str = "may"  # may | verify | none, for MX hosts
    outbound_tls_ca: Path | None = None  # CAs for outbound_tls = verify (default: the system's)
    dkim_key: Path | None = None  # PEM RSA private key; signing needs all three dkim_* keys
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    # Sender verification (docs/trust.md)
    trusted_authserv_ids: tuple[str, ...] = ()  # upstream verifiers whose results we believe
    max_jobs_per_hour: int | None = None  # print jobs the whole site takes per hour
    max_conversions: int = 1  # LibreOffice/Chromium conversions at once (docs/convert.md)
    # Sender verification's worker processes (task authperf, docs/trust.md)
    verify_processes: int = 1  # 0: verify in the lookup threads of the SMTP process
    # Scaling out (issue 11, multibox; docs/scaling.md): remote mailboxes
    mailbox_sessions: int = 10  # POP3 sessions to remote mailboxes (Dovecot) at once, all printers together
    in_flow_delay: float = 0.0  # longest wait at MAIL FROM while the disk is behind; 0 (default): off (docs/smtp.md)


@dataclass(frozen=True)
class PrinterConfig:
    name: str
    addresses: tuple[str, ...]
    output: str  # file:PATH, lpd://host[:port]/queue, socket://host[:port], pull
    allowed_senders: tuple[str, ...]
    pop3_user: str
    pop3_password: PasswordHash | None
    pop3_apop_secret: bytes | None
    formats: tuple[str, ...]
    notify: tuple[str, ...]
    mailbox: RemoteMailbox | None  # None = the appliance's own store
    poll_interval: float
    partial_timeout: float
    delay_notice: float
    max_retry_time: float
    pjl: bool
    copies_max: int
    lpd_source_port: str = "auto"  # auto, privileged (721-731, needs root), any
    output_tls: str = "required"  # ipps://: required = verified TLS, none = TLS, certificate not checked
    output_ca: Path | None = None  # ipps://: CA file to verify the printer with; None = system CAs
    # Who may print (docs/trust.md)
    sender_auth: tuple[str, ...] = ("dmarc", "login")  # any one proves a sender authentic
    unauthenticated: str = "refuse"  # refuse | hold (a release mail to the From: address)
    hold_timeout: float = 86400.0  # a held job never released is canceled after this
    max_jobs_per_sender: tuple[int, float] | None = None  # (jobs, per seconds)
    max_pages_per_job: int | None = None
    # Job options (task "options", docs/options.md); parsed by _Loader.printer_options.
    subject_options: bool = False  # read [duplex] [copies=2] ... in a plain mail's Subject
    options_allowed: tuple[str, ...] = job_options.OPTION_NAMES  # what senders may set
    options_default: job_options.JobOptions = job_options.JobOptions()  # applied when the sender gave none
    # The conversion target (issue 10, ippcaps; docs/convert.md "What the printer takes").
    media: str = "a4"  # what pictures are fitted to when neither the job nor the IPP printer says

    def sender_allowed(self, sender: str) -> bool:
        return sender_matches(sender, self.allowed_senders)


@dataclass(frozen=True)
class GroupConfig:
    name: str
    address: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class UserConfig:
    name: str
    password: PasswordHash
    addresses: tuple[str, ...] = ()  # From: addresses this login proves (sender_auth = login)


@dataclass(frozen=True)
class AdminConfig:
    """An ``[admin:NAME]`` console user: a password hash and a role."""

    name: str
    password: PasswordHash
    role: str  # one of ADMIN_ROLES


@dataclass(frozen=True)
class ConsoleConfig:
    """The admin console (docs/console.md): where it listens (none: off),
    how long finished jobs stay in its history, and who may log in."""

    listen: tuple[str, ...] = ()
    history_days: float = 30.0
    admins: dict[str, AdminConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteConfig:
    path: Path
    appliance: ApplianceConfig
    printers: dict[str, PrinterConfig] = field(default_factory=dict)
    groups: dict[str, GroupConfig] = field(default_factory=dict)
    users: dict[str, UserConfig] = field(default_factory=dict)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)

    def printers_for_address(self, address: str) -> tuple[PrinterConfig, ...] | None:
        """The printers a mail to *address* goes to, or None if it is not ours."""
        return self._by_address.get(normalize_address(address))

    @cached_property
    def _by_address(self) -> dict[str, tuple[PrinterConfig, ...]]:
        """Every printer and group address -> its printers, made once: each
        RCPT walked all printers' addresses (500 printers at site scale,
        issue 11).  A printer's own address wins over a group's, as before."""
        index: dict[str, tuple[PrinterConfig, ...]] = {}
        for group in reversed(list(self.groups.values())):
            index[group.address] = tuple(self.printers[m] for m in group.members)
        for printer in reversed(list(self.printers.values())):
            for address in printer.addresses:
                index[address] = (printer,)
        return index

    def is_local_domain(self, address: str) -> bool:
        """True if *address* is in a domain one of our printers or groups uses."""
        domain = normalize_address(address).rpartition("@")[2]
        return domain in self._local_domains

    @cached_property
    def _local_domains(self) -> frozenset[str]:
        return self.local_domains()

    def local_domains(self) -> frozenset[str]:
        domains = {a.rpartition("@")[2] for p in self.printers.values() for a in p.addresses}
        domains |= {g.address.rpartition("@")[2] for g in self.groups.values()}
        domains.add(self.appliance.hostname.lower())
        return frozenset(domains)


# -- helpers shared with the rest of the package ----------------------------


def normalize_address(address: str) -> str:
    """Lower-case an address for comparison (RFC 5321 allows it for the domain;
    for printer mailboxes we decide local parts are case-insensitive too)."""
    return address.strip().strip("<>").lower()


def sender_matches(sender: str, patterns: Iterable[str]) -> bool:
    """Shell-style match of a sender address against allowed_senders."""
    sender = normalize_address(sender)
    return any(fnmatch.fnmatchcase(sender, pattern) for pattern in patterns)


_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# parse_size, parse_duration, split_list and split_host_port live in
# phaserlink.values (shared with the client) and are imported above.


def check_endpoint(description: str) -> str:
    """Parse a server endpoint string without listening, to catch mistakes."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:  # serverFromString raises many kinds
        raise ValueError(f"{description!r} is not a Twisted server endpoint: {e}") from None
    return description


# -- the loader ---------------------------------------------------------------

APPLIANCE_KEYS = {
    "hostname", "spool", "smtp_listen", "pop3_listen", "tls_certificate", "tls_key",
    "max_message_size", "max_recipients", "max_sessions", "max_line_length",
    "smtp_timeout", "pop3_timeout", "relay_networks", "smarthost", "smarthost_tls",
    "smarthost_ca", "smarthost_user", "smarthost_password_file", "status_sender",
    "queue_max_age", "queue_retry_min", "queue_retry_max",
    "postmaster", "postmaster_pop3_password",
    "max_conversions",
}
# Scaling out (issue 11, multibox; docs/scaling.md): how many remote-mailbox
# sessions one appliance opens at once, so a site sizes Dovecot's limits.
APPLIANCE_KEYS |= {"mailbox_sessions"}
# Inflow control (issue 11, bench/scale.py; docs/smtp.md).
APPLIANCE_KEYS |= {"in_flow_delay"}
# Outbound mail by MX, DKIM signing (docs/outbound.md); parsed by _Loader.outbound.
APPLIANCE_KEYS |= {"dns_servers", "mx_port", "outbound_tls", "outbound_tls_ca", "dkim_key", "dkim_selector",
                   "dkim_domain"}
PRINTER_KEYS = {
    "addresses", "output", "allowed_senders", "pop3_user", "pop3_password",
    "pop3_apop_secret_file", "formats", "notify", "mailbox", "mailbox_password_file",
    "mailbox_tls", "mailbox_ca", "poll_interval", "partial_timeout", "delay_notice",
    "max_retry_time", "pjl", "copies_max", "lpd_source_port",
    "output_tls", "output_ca",
}
GROUP_KEYS = {"address", "members"}
USER_KEYS = {"password"}
ADMIN_KEYS = {"password", "role"}
ADMIN_ROLES = ("viewer", "operator")
APPLIANCE_KEYS |= {"admin_listen", "history_days"}  # the console's (docs/console.md)
# Sender verification (docs/trust.md); parsed by _Loader.trust_* below.
SENDER_AUTH_RULES = ("dmarc", "dkim", "spf", "login", "none")
APPLIANCE_KEYS |= {"trusted_authserv_ids", "dns_servers", "max_jobs_per_hour"}
PRINTER_KEYS |= {"sender_auth", "unauthenticated", "hold_timeout", "max_jobs_per_sender", "max_pages_per_job"}
# Sender verification's worker processes (task authperf, docs/trust.md); parsed by _Loader.trust_appliance.
APPLIANCE_KEYS |= {"verify_processes"}
USER_KEYS |= {"addresses"}
# Job options (task "options", docs/options.md); parsed by _Loader.printer_options.
PRINTER_KEYS |= {"subject_options", "options_allowed", "options_default"}
# The conversion target (issue 10, ippcaps; docs/convert.md); parsed by _Loader.target_printer.
PRINTER_KEYS |= {"media"}


class _Section:
    """Typed access to one section; every failure names file, section, key."""

    def __init__(self, loader: "_Loader", name: str, allowed: set[str]):
        self.loader = loader
        self.name = name
        self.raw = loader.parser[name] if loader.parser.has_section(name) else {}
        for key in self.raw:
            if key not in allowed:
                self.error(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def error(self, key: str | None, why: str) -> ConfigError:
        raise ConfigError(self.loader.file, self.name, key, why)

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self.raw.get(key)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            self.error(key, "is required")
        return value  # type: ignore[return-value]

    def typed(self, key: str, default: str, convert: Callable[[str], T]) -> T:
        text = self.get(key, default)
        try:
            return convert(text)  # type: ignore[arg-type]
        except (ValueError, OSError) as e:
            self.error(key, str(e))
            raise  # unreachable

    def path(self, key: str, default: str | None = None) -> Path | None:
        text = self.get(key, default)
        if text is None:
            return None
        return self.loader.resolve(text)

    def readable_file(self, key: str) -> Path | None:
        path = self.path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            self.error(key, f"cannot read {path}: {e.strerror}")
        return path

    def boolean(self, key: str, default: bool) -> bool:
        text = self.get(key)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in ("yes", "true", "on", "1"):
            return True
        if lowered in ("no", "false", "off", "0"):
            return False
        self.error(key, f"{text!r} is not yes or no")
        raise AssertionError

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        text = (self.get(key) or default).lower()
        choices = tuple(choices)
        if text not in choices:
            self.error(key, f"{text!r} is not one of {', '.join(choices)}")
        return text

    def addresses(self, key: str, text: str | None = None) -> tuple[str, ...]:
        text = text if text is not None else self.require(key)
        result = []
        for item in split_list(text):
            if not _ADDRESS.match(item):
                self.error(key, f"{item!r} is not a mail address (local@domain)")
            if len(item.partition("@")[0]) > MAX_LOCAL_PART:
                self.error(key, f"{item!r}: local part longer than {MAX_LOCAL_PART}")
            result.append(normalize_address(item))
        if not result:
            self.error(key, "needs at least one address")
        return tuple(result)


class _Loader:
    def __init__(self, path: Path):
        self.path = path
        self.file = str(path)
        self.base = path.parent
        self.parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        self.parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            with open(path, encoding="utf-8") as f:
                self.parser.read_file(f)
        except OSError as e:
            raise ConfigError(self.file, None, None, f"cannot read: {e.strerror}") from None
        except configparser.Error as e:
            raise ConfigError(self.file, None, None, f"not an ini file: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(self.file, None, None, "is not UTF-8 text") from None

    def resolve(self, text: str) -> Path:
        """Relative paths are relative to the working directory, as twistd's
        --rundir is; the demo config relies on that to put var/ beside it."""
        return Path(os.path.expanduser(text))

    def load(self) -> SiteConfig:
        for name in self.parser.sections():
            kind = name.partition(":")[0]
            if name != "appliance" and kind not in ("printer", "group", "user", "admin"):
                raise ConfigError(
                    self.file, name, None,
                    "unknown section (expected [appliance], [printer:NAME], [group:NAME], [user:NAME], [admin:NAME])",
                )
            if kind != "appliance" and not _NAME.match(name.partition(":")[2]):
                raise ConfigError(self.file, name, None, "section name needs a NAME of letters, digits, _ . -")
        if not self.parser.has_section("appliance"):
            raise ConfigError(self.file, "appliance", None, "section is missing")
        appliance = self.appliance(_Section(self, "appliance", APPLIANCE_KEYS))
        appliance = self.outbound(_Section(self, "appliance", APPLIANCE_KEYS), appliance)
        appliance = self.trust_appliance(_Section(self, "appliance", APPLIANCE_KEYS), appliance)
        printers: dict[str, PrinterConfig] = {}
        groups: dict[str, GroupConfig] = {}
        users: dict[str, UserConfig] = {}
        seen: dict[str, str] = {}

        def claim(section: _Section, key: str, address: str) -> None:
            if address in seen:
                section.error(key, f"address {address} is already used by [{seen[address]}]")
            seen[address] = section.name

        for name in self.parser.sections():
            kind, _, short = name.partition(":")
            if kind == "printer":
                section = _Section(self, name, PRINTER_KEYS)
                printer = self.printer(section, short, appliance)
                printer = self.trust_printer(section, printer)
                printer = self.printer_options(section, printer)
                printer = self.target_printer(section, printer)
                for address in printer.addresses:
                    claim(section, "addresses", address)
                printers[short] = printer
        pop3_users: dict[str, str] = {}
        for printer in printers.values():
            if printer.pop3_user in pop3_users:
                raise ConfigError(
                    self.file, f"printer:{printer.name}", "pop3_user",
                    f"{printer.pop3_user!r} is already the login of [printer:{pop3_users[printer.pop3_user]}]",
                )
            pop3_users[printer.pop3_user] = printer.name
        for name in self.parser.sections():
            kind, _, short = name.partition(":")
            if kind == "group":
                section = _Section(self, name, GROUP_KEYS)
                address = section.addresses("address")
                if len(address) != 1:
                    section.error("address", "a group has exactly one address")
                claim(section, "address", address[0])
                members = tuple(split_list(section.require("members")))
                for member in members:
                    if member not in printers:
                        section.error("members", f"{member!r} is not a [printer:NAME] in this file")
                groups[short] = GroupConfig(short, address[0], members)
            elif kind == "user":
                section = _Section(self, name, USER_KEYS)
                users[short] = UserConfig(short, self.password(section, "password", required=True))  # type: ignore[arg-type]
                users[short] = self.trust_user(section, users[short])
        return SiteConfig(self.path, appliance, printers, groups, users, self.console())

    def console(self) -> ConsoleConfig:
        """``admin_listen``, ``history_days`` and the ``[admin:NAME]`` users."""
        s = _Section(self, "appliance", APPLIANCE_KEYS)
        listen = tuple(check_endpoint_in(s, "admin_listen", ""))
        history_days = s.typed("history_days", "30", _positive_days)
        admins: dict[str, AdminConfig] = {}
        for name in self.parser.sections():
            kind, _, short = name.partition(":")
            if kind == "admin":
                section = _Section(self, name, ADMIN_KEYS)
                password = self.password(section, "password", required=True)
                role = section.choice("role", "viewer", ADMIN_ROLES)
                admins[short] = AdminConfig(short, password, role)  # type: ignore[arg-type]
        if listen and not admins:
            s.error("admin_listen", "the console needs at least one [admin:NAME] section with a password hash")
        return ConsoleConfig(listen, history_days, admins)

    def password(self, section: _Section, key: str, required: bool = False) -> PasswordHash | None:
        text = section.require(key) if required else section.get(key)
        if text is None:
            return None
        try:
            return PasswordHash.parse(text)
        except PasswordHashError as e:
            section.error(key, str(e))
            raise

    def appliance(self, s: _Section) -> ApplianceConfig:
        hostname = s.get("hostname", "localhost")
        spool = s.path("spool", "var")
        assert spool is not None
        self.check_spool(s, spool)
        smtp_listen = tuple(check_endpoint_in(s, "smtp_listen", "tcp:25"))
        pop3_listen = tuple(check_endpoint_in(s, "pop3_listen", "tcp:110"))
        cert = s.readable_file("tls_certificate")
        key = s.readable_file("tls_key")
        tls = None
        if cert or key:
            if not (cert and key):
                s.error("tls_key" if cert else "tls_certificate", "tls_certificate and tls_key go together")
            assert cert and key
            tls = TLSFiles(cert, key)
            try:
                from phaserlink.tls import load_server_certificate

                load_server_certificate(tls)
            except Exception as e:
                s.error("tls_certificate", f"cannot load certificate and key: {e}")
        networks = []
        for item in split_list(s.get("relay_networks", "127.0.0.0/8 ::1/128") or ""):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                s.error("relay_networks", f"{item!r} is not a network (e.g. 192.0.2.0/24)")
        smarthost = self.smarthost(s)
        status_sender = s.addresses("status_sender", s.get("status_sender", f"postmaster@{hostname}"))[0]
        return ApplianceConfig(
            hostname=hostname or "localhost",
            spool=spool,
            smtp_listen=smtp_listen,
            pop3_listen=pop3_listen,
            tls=tls,
            max_message_size=s.typed("max_message_size", "50M", parse_size),
            max_recipients=s.typed("max_recipients", "100", _positive_int),
            max_sessions=s.typed("max_sessions", "500", _positive_int),
            max_line_length=s.typed("max_line_length", "1000", _positive_int),
            smtp_timeout=s.typed("smtp_timeout", "5m", parse_duration),
            pop3_timeout=s.typed("pop3_timeout", "10m", parse_duration),
            relay_networks=tuple(networks),
            smarthost=smarthost,
            status_sender=status_sender,
            queue_max_age=s.typed("queue_max_age", "5d", parse_duration),
            queue_retry_min=s.typed("queue_retry_min", "1m", parse_duration),
            queue_retry_max=s.typed("queue_retry_max", "1h", parse_duration),
            postmaster=s.addresses("postmaster")[0] if s.get("postmaster") else None,
            postmaster_pop3_password=self.password(s, "postmaster_pop3_password"),
            max_conversions=s.typed("max_conversions", "1", _positive_int),
            mailbox_sessions=s.typed("mailbox_sessions", "10", _positive_int),  # multibox (docs/scaling.md)
            in_flow_delay=s.typed("in_flow_delay", "0", parse_duration),
        )

    def outbound(self, s: _Section, appliance: ApplianceConfig) -> ApplianceConfig:
        """MX delivery and DKIM keys (docs/outbound.md); the key is loaded
        here so a bad one stops the start with its key's name."""
        from dataclasses import replace

        from phaserlink.values import parse_dns_server, parse_port

        servers = []  # one parser for MX delivery and sender verification
        for item in split_list(s.get("dns_servers") or ""):
            try:
                servers.append(parse_dns_server(item))
            except ValueError as e:
                s.error("dns_servers", f"{e}; use IP[:PORT] ...")
        selector, domain = s.get("dkim_selector"), s.get("dkim_domain")
        key = s.readable_file("dkim_key")
        given = [k for k, v in (("dkim_key", key), ("dkim_selector", selector), ("dkim_domain", domain)) if v]
        if given and len(given) < 3:
            missing = [k for k in ("dkim_key", "dkim_selector", "dkim_domain") if k not in given]
            s.error(missing[0], f"DKIM signing needs dkim_key, dkim_selector and dkim_domain ({', '.join(missing)} missing)")
        if key is not None:
            from phaserlink.smtp_relay.dkim_sign import load_key

            try:
                load_key(key)
            except ValueError as e:
                s.error("dkim_key", f"{key}: {e}")
        if selector is not None and not re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", selector):
            s.error("dkim_selector", f"{selector!r} is not a DKIM selector (letters, digits, '-', '_', '.')")
        from phaserlink.smtp_relay.mx import OUTBOUND_TLS

        return replace(
            appliance, dns_servers=tuple(servers),
            mx_port=s.typed("mx_port", "25", parse_port), outbound_tls=s.choice("outbound_tls", "may", OUTBOUND_TLS),
            outbound_tls_ca=s.readable_file("outbound_tls_ca"), dkim_key=key, dkim_selector=selector,
            dkim_domain=domain.lower().rstrip(".") if domain else None,
        )

    def check_spool(self, s: _Section, spool: Path) -> None:
        try:
            spool.mkdir(parents=True, exist_ok=True)
            probe = spool / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            s.error("spool", f"{spool} is not a writable directory: {e.strerror}")

    def smarthost(self, s: _Section) -> Smarthost | None:
        text = s.get("smarthost")
        if text is None:
            return None
        implicit = text.startswith("smtps://")
        try:
            host, port = parse_host_port(text.removeprefix("smtps://").removeprefix("smtp://"),
                                         465 if implicit else 25)
        except ValueError as e:
            s.error("smarthost", f"{e}; use HOST[:PORT] or smtps://HOST[:PORT]")
        user = s.get("smarthost_user")
        password_file = s.readable_file("smarthost_password_file")
        if user and not password_file:
            s.error("smarthost_password_file", "smarthost_user needs a password file")
        return Smarthost(
            host=host,
            port=port,
            tls=s.choice("smarthost_tls", "opportunistic", TLS_POLICIES),
            implicit_tls=implicit,
            ca_file=s.readable_file("smarthost_ca"),
            username=user,
            password_file=password_file,
        )

    def printer(self, s: _Section, name: str, appliance: ApplianceConfig) -> PrinterConfig:
        addresses = s.addresses("addresses", s.get("addresses", f"{name}@{appliance.hostname}"))
        output = s.get("output", "pull") or "pull"
        self.check_output(s, output)
        senders = tuple(p.lower() for p in split_list(s.require("allowed_senders")))
        formats = tuple(split_list((s.get("formats", "postscript") or "").lower()))
        for f in formats:
            if f not in FORMATS:
                s.error("formats", f"{f!r} is not one of {', '.join(FORMATS)}")
        try:  # old words (errors, trace) are read too; the result is events.EVENTS names
            notify = events.parse_events(s.get("notify") or events.DEFAULT_POLICY)
        except events.UnknownEvent as e:
            s.error("notify", str(e))
        apop_file = s.readable_file("pop3_apop_secret_file")
        apop = apop_file.read_bytes().strip() if apop_file else None
        return PrinterConfig(
            name=name,
            addresses=addresses,
            output=output,
            allowed_senders=senders,
            pop3_user=s.get("pop3_user", name) or name,
            pop3_password=self.password(s, "pop3_password"),
            pop3_apop_secret=apop,
            formats=formats,
            notify=notify,
            mailbox=self.remote_mailbox(s),
            poll_interval=s.typed("poll_interval", "60s", parse_duration),
            partial_timeout=s.typed("partial_timeout", "1h", parse_duration),
            delay_notice=s.typed("delay_notice", "4h", parse_duration),
            max_retry_time=s.typed("max_retry_time", "5d", parse_duration),
            pjl=s.boolean("pjl", False),
            copies_max=s.typed("copies_max", "10", _positive_int),
            lpd_source_port=s.choice("lpd_source_port", "auto", ("auto", "privileged", "any")),
            output_tls=self.output_tls(s, output),
            output_ca=s.readable_file("output_ca"),
        )

    def output_tls(self, s: _Section, output: str) -> str:
        """ipps:// verifies by default; ipp:// is plain HTTP (TLS there would be
        HTTP Upgrade, which printers rarely offer): ``required`` on it is a mistake."""
        scheme = urlsplit(output).scheme
        policy = s.choice("output_tls", "required" if scheme == "ipps" else "none", ("required", "none"))
        if scheme == "ipp" and policy == "required":
            s.error("output_tls", f"{output!r} is plain IPP; use ipps://... for TLS")
        return policy

    # -- sender verification (docs/trust.md) --------------------------------

    def trust_appliance(self, s: _Section, appliance: ApplianceConfig) -> ApplianceConfig:
        # dns_servers is parsed once, with the outbound keys (outbound()).
        ids = tuple(i.lower() for i in split_list(s.get("trusted_authserv_ids") or ""))
        for ident in ids:
            if not re.match(r"^[a-z0-9.-]+$", ident):
                s.error("trusted_authserv_ids", f"{ident!r} is not an authserv-id (a host name)")
            if ident == appliance.hostname.lower():
                s.error("trusted_authserv_ids", f"{ident!r} is this appliance's own hostname: "
                        "results carrying it from outside are forged and removed")
        per_hour = s.get("max_jobs_per_hour")
        # task authperf: where DKIM/DMARC/SPF run (0 = threads of this process)
        from phaserlink.limits import MAX_VERIFY_PROCESSES

        processes = s.get("verify_processes", "1") or "1"
        if not re.fullmatch(r"[0-9]+", processes.strip()) or int(processes) > MAX_VERIFY_PROCESSES:
            s.error("verify_processes", f"{processes!r} is not a whole number from 0 to {MAX_VERIFY_PROCESSES}")
        appliance = replace(appliance, verify_processes=int(processes))
        return replace(appliance, trusted_authserv_ids=ids,
                       max_jobs_per_hour=None if per_hour in (None, "none") else
                       s.typed("max_jobs_per_hour", "", _positive_int))

    def trust_printer(self, s: _Section, printer: PrinterConfig) -> PrinterConfig:
        rules = tuple(split_list((s.get("sender_auth") or "dmarc, login").lower()))
        for rule in rules:
            if rule not in SENDER_AUTH_RULES:
                s.error("sender_auth", f"{rule!r} is not one of {', '.join(SENDER_AUTH_RULES)}")
        if not rules:
            s.error("sender_auth", f"needs one or more of {', '.join(SENDER_AUTH_RULES)}")
        if "none" in rules and len(rules) > 1:
            s.error("sender_auth", "none (no verification) cannot be combined with other rules")
        rate = s.get("max_jobs_per_sender")
        per_sender = None
        if rate not in (None, "none"):
            count, slash, window = (rate or "").partition("/")
            try:
                per_sender = (parse_positive_int(count.strip()), parse_duration(window.strip() if slash else "1h"))
            except ValueError as e:
                s.error("max_jobs_per_sender", f"{rate!r}: {e}; use JOBS/DURATION, e.g. 20/1h")
            if per_sender is not None and per_sender[1] <= 0:
                s.error("max_jobs_per_sender", f"{rate!r}: the window must be longer than 0")
        pages = s.get("max_pages_per_job")
        if (s.get("unauthenticated") or "refuse").lower() == "hold" and rules in (("none",), ("spf",)):
            s.error("unauthenticated", "hold needs a sender_auth rule decided at the end of DATA "
                    "(not none, not spf alone)")
        return replace(
            printer,
            sender_auth=rules,
            unauthenticated=s.choice("unauthenticated", "refuse", ("refuse", "hold")),
            hold_timeout=s.typed("hold_timeout", "24h", parse_duration),
            max_jobs_per_sender=per_sender,
            max_pages_per_job=None if pages in (None, "none") else s.typed("max_pages_per_job", "", _positive_int),
        )

    # -- job options (task "options", docs/options.md) ---------------------

    def printer_options(self, s: _Section, printer: PrinterConfig) -> PrinterConfig:
        allowed = s.typed("options_allowed", "all", job_options.parse_option_names)
        defaults = s.typed("options_default", "", job_options.parse_defaults)
        if defaults.copies and defaults.copies > printer.copies_max:
            s.error("options_default", f"copies={defaults.copies} is more than copies_max ({printer.copies_max})")
        return replace(printer, subject_options=s.boolean("subject_options", False),
                       options_allowed=allowed, options_default=defaults)
    def target_printer(self, s: _Section, printer: PrinterConfig) -> PrinterConfig:
        """``media`` (what pictures are fitted to), and no ``formats`` on an
        IPP printer: then the formats are what the printer says it takes
        (phaserlink/printer/target.py)."""
        from phaserlink.message.job_options import media_name, media_size

        media = (s.get("media") or "a4").lower()
        try:
            media_size(media)
            media = media_name(media)
        except ValueError as e:
            s.error("media", str(e))
        formats = printer.formats
        if s.get("formats") is None and urlsplit(printer.output).scheme in ("ipp", "ipps"):
            formats = ()
        return replace(printer, media=media, formats=formats)

    def trust_user(self, s: _Section, user: UserConfig) -> UserConfig:
        text = s.get("addresses")
        return replace(user, addresses=s.addresses("addresses", text) if text else ())

    def check_output(self, s: _Section, output: str) -> None:
        if output == "pull":
            return
        if output.startswith("file:"):
            if not output[5:]:
                s.error("output", "file: needs a directory, e.g. file:var/printed/NAME")
            return
        url = urlsplit(output)
        if url.scheme == "lpd":
            if not url.hostname or not url.path.strip("/"):
                s.error("output", f"{output!r}: use lpd://HOST[:PORT]/QUEUE")
        elif url.scheme == "socket":
            if not url.hostname:
                s.error("output", f"{output!r}: use socket://HOST[:PORT]")
        elif url.scheme in ("ipp", "ipps"):
            if not url.hostname or url.query or url.fragment:
                s.error("output", f"{output!r}: use {url.scheme}://HOST[:PORT]/PATH")
        else:
            s.error("output", f"{output!r}: use file:DIR, lpd://HOST[:PORT]/QUEUE, socket://HOST[:PORT], "
                              "ipp[s]://HOST[:PORT]/PATH or pull")
        try:
            url.port
        except ValueError:
            s.error("output", f"{output!r}: bad port")

    def remote_mailbox(self, s: _Section) -> RemoteMailbox | None:
        text = s.get("mailbox", "local")
        if text == "local":
            return None
        url = urlsplit(text or "")
        if url.scheme not in ("pop3", "pop3s") or not url.hostname or not url.username:
            s.error("mailbox", f"{text!r}: use local, pop3://USER@HOST[:PORT] or pop3s://USER@HOST[:PORT]")
        try:
            port = url.port or (995 if url.scheme == "pop3s" else 110)
        except ValueError:
            s.error("mailbox", f"{text!r}: bad port")
            raise
        password_file = s.readable_file("mailbox_password_file")
        if password_file is None:
            s.error("mailbox_password_file", "a remote mailbox needs a password file")
        return RemoteMailbox(
            host=url.hostname or "",
            port=port,
            username=unquote(url.username or ""),
            password_file=password_file,
            tls=s.choice("mailbox_tls", "opportunistic", TLS_POLICIES),
            implicit_tls=url.scheme == "pop3s",
            ca_file=s.readable_file("mailbox_ca"),
        )


def check_endpoint_in(s: _Section, key: str, default: str) -> list[str]:
    """A listen key holds one or more endpoint strings separated by spaces."""
    values = (s.get(key, default) or default).split()
    for value in values:
        try:
            check_endpoint(value)
        except ValueError as e:
            s.error(key, str(e))
    return values


_positive_int = parse_positive_int  # the shared parser (phaserlink.values)


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of days") from None
    if not days > 0:
        raise ValueError(f"{text!r}: the history must be kept for more than 0 days")
    return days


def load(path: str | os.PathLike[str]) -> SiteConfig:
    """Read and validate *path*; raise :class:`ConfigError` on any mistake."""
    return _Loader(Path(path)).load()

"""Send a print job: resolve the destination, wrap the data in a job message,
split it if it is too big for the way, and hand the messages to SMTP.

Used by ``phaserlink send`` and by the CUPS backend, which differ only in how
they report (:mod:`phaserlink.client.progress`) and what exit code a result
becomes.  Everything streams through files in a private work directory: a
job is never held in memory.

One job per file per printer: a group send is one job for each member (each
with its own job id and outcome), as the original Print Redirector did.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from phaserlink.client.destinations import (
    DestinationError, Destinations, Endpoint, Server, is_address, check_address, parse_endpoint,
)
from phaserlink.client.progress import Progress
from phaserlink.client.secrets_source import get_password

# Limits live in phaserlink/client/limits.py (one place per side); the names stay importable here.
from phaserlink.client.limits import (  # noqa: E402
    SEND_LIMIT as DEFAULT_LIMIT,
    MIN_LIMIT,
    SEND_COPY_CHUNK as COPY_CHUNK,
    HEAD_BYTES,
    PROBE_TIMEOUT,
    JOURNAL_KEEP,
)

"""Message size limit when neither the user nor the server names one."""
RELAY_HEADROOM = 64 * 1024
"""Bytes kept free under the server's SIZE for the Received (and other trace)
headers the relays on the way add; a fragment that fits the first server
exactly would be refused by the next one."""
RELAY_HEADROOM_FRACTION = 0.05
"""...or this fraction of the limit, whichever is bigger."""
"""A limit below this cannot carry a fragment's headers and some data."""

EXIT_OK = 0
EXIT_FAILED = 1  # refused for good (5xx), or the job did not print
EXIT_USAGE = 2  # bad arguments or destinations file (argparse uses 2 too)
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: try again later (4xx, connection refused, timeout)


class JobError(Exception):
    """A job that cannot even be attempted (bad input, unknown destination)."""


@dataclass(frozen=True)
class Target:
    """One printer address a job goes to, with everything needed to send."""

    label: str  # printer name, or the address when given plainly
    address: str
    server: Server
    sender: str
    copies: int = 1
    notify: tuple[str, ...] | None = None
    title: str | None = None
    type: str | None = None
    max_message_size: int | None = None


@dataclass
class Fragment:
    path: Path
    message_id: str | None
    size: int  # bytes on disk (LF line ends)


@dataclass
class JobResult:
    """What happened to one job at one target."""

    target: Target
    job_id: str
    document: str
    fragments: list[Fragment] = field(default_factory=list)
    message_id: str | None = None  # the job message's own (status reports name it)
    sent: int = 0  # fragments accepted by the server
    error: str | None = None
    reply_code: int | None = None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.sent == len(self.fragments)

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_OK
        return EXIT_FAILED if self.permanent else EXIT_TEMPFAIL


def worst_exit(results: list[JobResult]) -> int:
    """Any permanent failure wins, then any temporary one."""
    codes = {r.exit_code for r in results}
    for code in (EXIT_FAILED, EXIT_TEMPFAIL):
        if code in codes:
            return code
    return EXIT_OK


# -- who, where ---------------------------------------------------------------------


def default_sender(login: str | None = None) -> str:
    """``login@hostname``, the last resort for the sender address."""
    login = login or getpass.getuser()
    host = socket.getfqdn() or socket.gethostname() or "localhost"
    if "." not in host:
        host = socket.gethostname() or "localhost"
    return f"{login}@{host}"


def server_from_text(text: str, dests: Destinations, *, tls: str | None = None,
                     ca_file: Path | None = None, username: str | None = None,
                     password_file: Path | None = None) -> Server:
    """``--server NAME`` (an entry) or ``HOST:PORT`` / ``smtps://HOST:PORT``."""
    if text in dests.servers:
        server = dests.servers[text]
    else:
        if ":" not in text and "://" not in text:
            raise DestinationError(
                f"no SMTP server named {text!r}; give HOST:PORT or add one with "
                "'phaserlink destinations add-server'")
        server = Server(name=text, endpoint=parse_endpoint(text))
    changes: dict[str, Any] = {}
    if tls:
        changes["tls"] = tls
    if ca_file:
        changes["ca_file"] = ca_file
    if username:
        changes["username"] = username
    if password_file:
        changes["password_file"] = password_file
    if changes:
        from dataclasses import replace

        server = replace(server, **changes)
    return server


def tls_setting(server: Server) -> str:
    """Where the user sets this server's TLS policy, for the refusal to log
    in without TLS (docs/tls.md): its destinations.ini section, or the
    command line's ``--tls`` for a ``--server HOST:PORT``."""
    if ":" in server.name or "/" in server.name:
        return "--tls"
    return f"[server:{server.name}] tls"


def resolve(
    dests: Destinations,
    dest: str,
    *,
    server: Server | None = None,
    sender: str | None = None,
    login: str | None = None,
) -> list[Target]:
    """The targets of *dest*: a printer, each member of a group, or a plain
    address.  *server* (from ``--server``) overrides the entries' servers;
    *sender* (``--from``) overrides every configured sender."""

    def pick_server(name: str | None) -> Server:
        if server is not None:
            return server
        name = name or dests.default_server
        if name is None:
            raise DestinationError(
                f"no SMTP server for {dest}: give --server HOST:PORT, or set one with "
                "'phaserlink destinations add-server NAME ENDPOINT --default'")
        return dests.server(name)

    def who(printer_sender: str | None) -> str:
        return sender or printer_sender or dests.default_from or default_sender(login)

    if dest in dests.printers:
        members = [(dests.printers[dest], None, None)]
    elif dest in dests.groups:
        group = dests.groups[dest]
        members = [(dests.printers[m], group.server, group.notify) for m in group.members]
    elif is_address(dest):
        check_address(dest)
        return [Target(label=dest, address=dest, server=pick_server(None), sender=who(None),
                       notify=dests.default_notify)]
    else:
        raise DestinationError(f"{dest!r} is not a printer, a group or a mail address "
                               "(see: phaserlink destinations list)")
    targets = []
    for printer, group_server, group_notify in members:
        targets.append(Target(
            label=printer.name,
            address=printer.address,
            server=pick_server(printer.server or group_server),
            sender=who(printer.sender),
            copies=printer.copies or 1,
            notify=printer.notify or group_notify or dests.default_notify,
            title=printer.title,
            type=printer.type,
            max_message_size=printer.max_message_size,
        ))
    return targets


# -- the job message -------------------------------------------------------------------


def new_job_id() -> str:
    """Unique without coordination: time (sortable) and 48 random bits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)


def spool_stdin(stream: IO[bytes], directory: Path) -> Path:
    """Copy standard input to a file: the job is streamed twice (to detect
    the format, to encode it) and stdin can be read only once."""
    path = directory / "stdin.data"
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out, COPY_CHUNK)
    return path


def detect(data_path: Path, given: str | None, filename: str | None = None) -> str:
    """The job's format: *given* (``--type``), else sniffed from its head;
    a zip or OLE2 file (.docx, .doc, .xls...) is the Office document its
    *filename* says, as the appliance reads it (formats.detect_document)."""
    if given:
        return given
    from phaserlink.message.formats import detect_document

    with open(data_path, "rb") as f:
        head = f.read(HEAD_BYTES)
    found = detect_document(head, None, filename)
    if found is None:
        if not head:
            raise JobError(f"{data_path}: empty file, nothing to print")
        raise JobError(f"{filename or data_path}: cannot tell the format (not PostScript, PDF, PCL, text, "
                       "a picture or an Office document); give it with --type")
    return found


def notify_events(notify: tuple[str, ...]) -> tuple[str, ...]:
    """The user's words for status mail (``--notify``, destinations.ini; old
    words such as ``errors`` and ``trace`` too) -> the events the message's
    X-PhaserLink-Notify carries: :func:`phaserlink.message.events.parse_events`."""
    from phaserlink.message.events import parse_events

    return parse_events(notify)


def build_message(
    target: Target,
    data_path: Path,
    out_dir: Path,
    *,
    job_id: str,
    format: str,
    filename: str,
    title: str | None,
    copies: int | None,
    notify: tuple[str, ...] | None,
    progress: Progress | None = None,
    options: str | None = None,
) -> Path:
    """Write the job message (one MIME message, base64 body) to *out_dir*."""
    from phaserlink.message import build

    wanted = notify if notify is not None else target.notify
    domain = target.sender.rpartition("@")[2] or "localhost"
    path = out_dir / f"{job_id}.{target.label.replace('@', '_').replace('/', '_')}.eml"
    progress = progress or Progress()
    progress.start(f"{target.label} (encoding)", data_path.stat().st_size)
    with open(path, "wb") as out:
        build.write_job_message(
            out,
            data_path,
            sender=target.sender,
            recipient=target.address,
            title=title or target.title or filename,
            format=format,
            filename=filename,
            copies=copies or target.copies,
            notify=None if wanted is None else notify_events(wanted),
            options=options,
            job_id=job_id,
            message_id=build.make_message_id(domain),
            on_read=progress.advance,
        )
    progress.finish()
    return path


def wire_size(path: Path) -> int:
    """Bytes the message takes on the wire: each LF becomes CRLF (our
    messages are written with LF and are base64: no dot-stuffing to add)."""
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK * 16):
            size += len(chunk) + chunk.count(b"\n") - chunk.count(b"\r\n")
    return size


def limit_from_server(advertised: int | None) -> int:
    """The message size to aim for below a server's SIZE (see RELAY_HEADROOM)."""
    if not advertised:
        return DEFAULT_LIMIT
    headroom = max(RELAY_HEADROOM, int(advertised * RELAY_HEADROOM_FRACTION))
    return max(MIN_LIMIT, advertised - headroom)


WIRE_LINE = 78
"""A base64 line on the wire: 76 characters and CRLF (77 bytes on disk)."""
SPLIT_SLACK = 2048
"""Bytes kept back for the fragment header's shorter lines (more CRs per byte)."""


def disk_limit(wire_limit: int) -> int:
    """split_message counts bytes on disk (LF ends); each line gains a CR on
    the wire, so aim lower to keep every fragment within *wire_limit*."""
    return max(MIN_LIMIT // 2, wire_limit * (WIRE_LINE - 1) // WIRE_LINE - SPLIT_SLACK)


def needs_split(message_wire_size: int, limit: int) -> bool:
    return message_wire_size > limit


def split(message: Path, limit: int, out_dir: Path, job_id: str) -> list[Fragment]:
    """The job as one message, or message/partial fragments of at most
    *limit* bytes on the wire."""
    size = wire_size(message)
    if not needs_split(size, limit):
        return [Fragment(message, read_message_id(message), message.stat().st_size)]
    from phaserlink.message import partial

    parts_dir = out_dir / f"{message.name}.parts"
    parts_dir.mkdir(exist_ok=True)
    paths = partial.split_message(message, disk_limit(limit), parts_dir, id=None)
    return [Fragment(p, read_message_id(p), p.stat().st_size) for p in paths]


def read_message_id(path: Path) -> str | None:
    """The Message-ID header of a message file (headers only are read)."""
    with open(path, "rb") as f:
        current = None
        for raw in f:
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if not line:
                break
            if line[:1] in (" ", "\t") and current is not None:
                current += " " + line.strip()
                continue
            if current is not None and current.lower().startswith("message-id:"):
                break
            current = line
        if current is not None and current.lower().startswith("message-id:"):
            return current.split(":", 1)[1].strip()
    return None


# -- SMTP ----------------------------------------------------------------------------


class _CountingReader:
    """A message file that tells the progress reporter what was read."""

    def __init__(self, f: IO[bytes], advance: Callable[[int], None]):
        self._f = f
        self._advance = advance

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            self._advance(len(data))
        return data

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, *args: Any) -> int:
        return self._f.seek(*args)

    def fileno(self) -> int:
        return self._f.fileno()


def helo_name(server: Server) -> str:
    return server.helo or socket.gethostname() or "localhost"


class PasswordCache:
    """Ask (or read) each server's password once per command."""

    def __init__(self, **options: Any):
        self.options = options
        self.known: dict[str, str] = {}

    def __call__(self, server: Server) -> str | None:
        if not server.username:
            return None
        key = f"{server.username}@{server.endpoint}"
        if key not in self.known:
            self.known[key] = get_password(
                key, password_file=server.password_file, password_env=server.password_env, **self.options)
        return self.known[key]


class SizeLimits:
    """The limit to split at, per server, asked of each server once."""

    def __init__(self, reactor: Any, explicit: int | None = None):
        self.reactor = reactor
        self.explicit = explicit
        self.cache: dict[Endpoint, int] = {}

    async def __call__(self, target: Target) -> int:
        if self.explicit:
            return self.explicit
        if target.max_message_size:
            return target.max_message_size
        if target.server.max_message_size:
            return target.server.max_message_size
        endpoint = target.server.endpoint
        if endpoint not in self.cache:
            from phaserlink.net import smtp_client

            try:
                info = await smtp_client.probe(
                    self.reactor, endpoint.host, endpoint.port, helo=helo_name(target.server),
                    tls=target.server.tls, implicit_tls=endpoint.implicit_tls,
                    ca_file=target.server.ca_file, timeout=PROBE_TIMEOUT)
                advertised = info.size_limit
            except smtp_client.SMTPError:
                advertised = None  # the send itself will report the problem
            self.cache[endpoint] = limit_from_server(advertised)
        return self.cache[endpoint]



async def send_fragments(
    reactor: Any,
    result: JobResult,
    *,
    password: str | None,
    progress: Progress,
    timeout: float | None = None,
) -> JobResult:
    """Send each fragment in turn; stop at the first refusal (the rest would
    be refused too, and the printer side times out an incomplete set)."""
    from phaserlink.net import smtp_client

    target = result.target
    server = target.server
    count = len(result.fragments)
    # One bar for the whole job: each fragment alone may be quick, the job not.
    label = target.label if count == 1 else f"{target.label} ({count} fragments)"
    progress.start(label, sum(fragment.size for fragment in result.fragments))
    extra = {"timeout": timeout} if timeout else {}
    try:
        for index, fragment in enumerate(result.fragments, 1):
            try:
                with open(fragment.path, "rb") as f:
                    await smtp_client.send(
                        reactor, server.endpoint.host, server.endpoint.port, target.sender, [target.address],
                        _CountingReader(f, progress.advance), helo=helo_name(server), tls=server.tls,
                        implicit_tls=server.endpoint.implicit_tls, ca_file=server.ca_file,
                        username=server.username, password=password, size=wire_size(fragment.path),
                        tls_setting=tls_setting(server), **extra)
            except smtp_client.SMTPError as e:
                result.error = describe_smtp_error(e, server)
                result.reply_code = e.code
                result.permanent = bool(e.permanent)
                return result
            result.sent = index
    finally:
        progress.finish()
    return result


def describe_smtp_error(e: Any, server: Server) -> str:
    """The server's own words, with where it happened."""
    if e.code is not None:
        enhanced = f"{e.enhanced} " if e.enhanced and not e.text.startswith(e.enhanced) else ""
        return f"{server.endpoint} refused ({e.stage}): {e.code} {enhanced}{e.text}"
    text = e.text or str(e)
    return text if str(server.endpoint) in text else f"{server.endpoint}: {text}"


async def send_job(
    reactor: Any,
    target: Target,
    data_path: Path,
    work_dir: Path,
    *,
    limits: SizeLimits,
    passwords: PasswordCache,
    progress: Progress,
    filename: str,
    format: str | None = None,
    title: str | None = None,
    copies: int | None = None,
    notify: tuple[str, ...] | None = None,
    job_id: str | None = None,
    options: str | None = None,
) -> JobResult:
    """Build, split and send one job to one target."""
    job_id = job_id or new_job_id()
    result = JobResult(target=target, job_id=job_id, document=filename)
    try:
        fmt = detect(data_path, format or target.type, filename)
        password = passwords(target.server)
        message = build_message(target, data_path, work_dir, job_id=job_id, format=fmt, filename=filename,
                                progress=progress,
                                title=title, copies=copies, notify=notify, options=options)
        result.message_id = read_message_id(message)
        limit = await limits(target)
        result.fragments = split(message, limit, work_dir, job_id)
    except (JobError, OSError, ValueError) as e:
        result.error = str(e)
        result.permanent = True
        return result
    except Exception as e:  # PasswordUnavailable and friends
        result.error = str(e)
        result.permanent = True
        return result
    await send_fragments(reactor, result, password=password, progress=progress)
    if result.ok:
        remember(result)
    return result


JOURNAL_NAME = "jobs"
"""``$XDG_STATE_HOME/phaserlink/jobs``: one line per sent job, ``job-id TAB
Message-ID TAB address TAB unix-time``, so ``phaserlink status JOB`` can find
the status mail of a job by the Message-ID the appliance quotes."""


def journal_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "phaserlink" / JOURNAL_NAME


def remember(result: JobResult) -> None:
    """Append the job to the journal (best effort: a read-only home must not
    fail a job that was sent)."""
    if not result.message_id:
        return
    line = f"{result.job_id}\t{result.message_id}\t{result.target.address}\t{int(time.time())}\n"
    try:
        path = journal_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        pass


def read_journal() -> dict[str, str]:
    """Message-ID -> client job id, newest last."""
    try:
        lines = journal_path().read_text(encoding="utf-8").splitlines()[-JOURNAL_KEEP:]
    except OSError:
        return {}
    table = {}
    for line in lines:
        parts = line.split("\t")
        if len(parts) >= 2:
            table[parts[1]] = parts[0]
    return table


def report_lines(result: JobResult) -> list[str]:
    """What the user reads: the job id, each Message-ID sent, and on failure
    the server's reply and which fragments had already gone."""
    t = result.target
    where = t.address if t.label == t.address else f"{t.label} <{t.address}>"
    count = len(result.fragments)
    lines = []
    if result.ok:
        what = "1 message" if count == 1 else f"{count} fragments (message/partial)"
        lines.append(f"job {result.job_id}: {result.document} -> {where}: sent as {what}")
    else:
        lines.append(f"job {result.job_id}: {result.document} -> {where}: FAILED: {result.error}")
    for index, fragment in enumerate(result.fragments[: result.sent], 1):
        tag = f" fragment {index}/{count}" if count > 1 else ""
        lines.append(f"  sent{tag}: Message-ID {fragment.message_id}")
    if not result.ok and count > 1:
        if result.sent:
            lines.append(f"  fragments 1-{result.sent} of {count} were already sent; "
                         f"fragments {result.sent + 1}-{count} were not")
        else:
            lines.append(f"  none of the {count} fragments was sent")
    return lines


def make_work_dir(base: str | None = None) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="phaserlink-", dir=base))


def remove_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def user_login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())

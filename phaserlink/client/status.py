"""``phaserlink status``: the jobs' fates, read from status mail in the
user's POP3 mailbox.

Each message is retrieved to a temporary file and given to
:func:`phaserlink.message.report.parse_status_report`; what is not a status
report is left alone (never deleted, never marked), and its UIDL is
remembered in a small cache file so that the next look (and every poll of
``send --wait``) does not download it again.  Messages bigger than
:data:`MAX_STATUS_SIZE` are not status mail and are not downloaded at all.

Status mail is kept by default (a mail client may want it too); ``--delete``
removes the status mail of jobs that reached a final state, after they were
shown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from phaserlink.client import destinations as dmod
from phaserlink.client.runner import run
from phaserlink.client.secrets_source import get_password
from phaserlink.client.sending import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL
from phaserlink.message import fields

# Limits live in phaserlink/client/limits.py (one place per side); the names stay importable here.
from phaserlink.client.limits import (  # noqa: E402
    MAX_STATUS_SIZE,
    POLL_INTERVAL,
    POP3_TIMEOUT,
    CACHE_LIMIT,
)

"""A status report is text plus a few header fields; bigger mail is not one."""
"""Seconds between mailbox checks while ``send --wait`` waits."""
FINAL_STATES = ("completed", "aborted", "canceled")
MAILBOX_TLS_SETTING = "[mailbox] tls"
"""Where the status mailbox's TLS policy is set, named when a login without
TLS is refused (docs/tls.md)."""
"""UIDLs of non-status mail remembered per mailbox (oldest forgotten first)."""


@dataclass(frozen=True)
class JobStatus:
    """One status report, as shown to the user."""

    job_id: str
    printer: str
    state: str
    reasons: tuple[str, ...]
    pages: int | None
    when: str
    uidl: str
    order: int  # position in the mailbox, oldest first
    printer_job: str = ""  # the appliance's own job id
    message_id: str | None = None  # the job message the report is about

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def from_report(report: Any, uidl: str, order: int, journal: dict[str, str] | None = None) -> JobStatus:
    """Our view of a parsed report.  The job is named by the id ``phaserlink
    send`` printed when the report quotes a Message-ID from our journal,
    else by the appliance's job id."""
    reasons = getattr(report, "reasons", None) or getattr(report, "state_reasons", None) or ()
    if isinstance(reasons, str):
        reasons = tuple(r.strip() for r in reasons.split(",") if r.strip())
    printer_job = _text(getattr(report, "job_id", ""))
    message_id = getattr(report, "original_message_id", None)
    extra = getattr(report, "extra", None) or {}
    client_job = (journal or {}).get(message_id or "") or extra.get(fields.SENDER_JOB_ID) or None
    return JobStatus(
        job_id=client_job or printer_job,
        printer_job=printer_job,
        message_id=message_id,
        printer=_text(getattr(report, "printer", "")),
        state=_text(getattr(report, "state", "")),
        reasons=tuple(reasons),
        pages=getattr(report, "pages", None),
        when=_text(getattr(report, "date", None) or getattr(report, "when", None)),
        uidl=uidl,
        order=order,
    )


# -- the cache of mail that is not status mail ------------------------------------------


def cache_path(mailbox: dmod.Mailbox) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = f"{mailbox.username}@{mailbox.endpoint.host}_{mailbox.endpoint.port}".replace("/", "_")
    return Path(base) / "phaserlink" / f"not-status.{name}"


def read_cache(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").split()
    except OSError:
        return []


def write_cache(path: Path, uidls: list[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        dmod.atomic_write(path, "".join(u + "\n" for u in uidls[-CACHE_LIMIT:]))
    except OSError:
        pass  # a cache only saves work


# -- reading the mailbox --------------------------------------------------------------


async def fetch(
    reactor: Any,
    mailbox: dmod.Mailbox,
    password: str,
    *,
    delete_final: bool = False,
    only: set[str] | None = None,
) -> list[JobStatus]:
    """Every status report in the mailbox, oldest first; *only*: those
    whose job id (ours or the appliance's) or Message-ID is in the set."""
    from phaserlink.client.sending import read_journal

    from phaserlink.message.report import parse_status_report
    from phaserlink.net import pop3_client

    cache_file = cache_path(mailbox)
    not_status = read_cache(cache_file)
    known = set(not_status)
    journal = read_journal()
    session = await pop3_client.connect(
        reactor, mailbox.endpoint.host, mailbox.endpoint.port, username=mailbox.username, password=password,
        tls=mailbox.tls, implicit_tls=mailbox.endpoint.implicit_tls, ca_file=mailbox.ca_file,
        timeout=POP3_TIMEOUT, tls_setting=MAILBOX_TLS_SETTING)
    found: list[JobStatus] = []
    try:
        listing = await session.list_uidl()
        with tempfile.TemporaryDirectory(prefix="phaserlink-status-") as tmp:
            for order, (uidl, size) in enumerate(listing):
                if uidl in known or size > MAX_STATUS_SIZE:
                    continue
                path = Path(tmp) / "message"
                with open(path, "wb") as f:
                    await session.retrieve(uidl, f)
                report = parse_status_report(path)
                if report is None:
                    not_status.append(uidl)
                    known.add(uidl)
                    continue
                status = from_report(report, uidl, order, journal)
                if only is None or {status.job_id, status.printer_job, status.message_id} & only:
                    found.append(status)
        if delete_final:
            finished = {s.job_id for s in latest(found) if s.final}
            for status in found:
                if status.job_id in finished:
                    await session.delete(status.uidl)
        await session.quit()
    except BaseException:
        session.abort()
        raise
    listed = {uidl for uidl, _ in listing}
    write_cache(cache_file, [u for u in not_status if u in listed])
    return found


def latest(statuses: list[JobStatus]) -> list[JobStatus]:
    """Each job's newest report (a final state beats a later non-final one:
    a late "received" must not hide "completed")."""
    best: dict[str, JobStatus] = {}
    for status in sorted(statuses, key=lambda s: s.order):
        current = best.get(status.job_id)
        if current is None or not current.final or status.final:
            best[status.job_id] = status
    return sorted(best.values(), key=lambda s: s.order)


def format_table(statuses: list[JobStatus]) -> list[str]:
    rows = [("JOB", "PRINTER", "STATE", "PAGES", "WHEN", "REASONS")]
    for s in statuses:
        rows.append((s.job_id, s.printer, s.state, "" if s.pages is None else str(s.pages), s.when,
                     ", ".join(s.reasons)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(cell.ljust(widths[i]) if i < 5 else cell for i, cell in enumerate(row)).rstrip()
            for row in rows]


def mailbox_password(mailbox: dmod.Mailbox, password_file: Path | None = None) -> str:
    return get_password(f"{mailbox.username}@{mailbox.endpoint}",
                        password_file=password_file or mailbox.password_file, password_env=mailbox.password_env)


def _require_mailbox(dests: dmod.Destinations) -> dmod.Mailbox:
    if dests.mailbox is None:
        raise dmod.DestinationError(
            "no [mailbox] for status mail: add one with 'phaserlink destinations set-mailbox "
            "pop3://HOST:PORT --username LOGIN'")
    return dests.mailbox


def run_status(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    from phaserlink.net.pop3_client import POP3Error

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    mailbox = _require_mailbox(dmod.load())
    password = mailbox_password(mailbox, args.password_file)

    async def go(reactor: Any) -> list[JobStatus]:
        return await fetch(reactor, mailbox, password, delete_final=args.delete,
                           only={args.job} if args.job else None)

    try:
        found = run(go)
    except POP3Error as e:
        print(f"phaserlink: {mailbox.endpoint}: {e}", file=stderr)
        return EXIT_TEMPFAIL
    shown = found if args.all else latest(found)
    if not shown:
        print(f"no status mail{' for job ' + args.job if args.job else ''} in {mailbox.username}@"
              f"{mailbox.endpoint}", file=stdout)
        return EXIT_FAILED if args.job else EXIT_OK
    for line in format_table(shown):
        print(line, file=stdout)
    return EXIT_OK


async def wait_for(
    reactor: Any,
    mailbox: dmod.Mailbox,
    password: str,
    job_ids: list[str],
    *,
    message_ids: list[str] | None = None,
    timeout: float,
    interval: float = POLL_INTERVAL,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Poll until every job has a final state: 0 if all completed, 1 if any
    did not, 75 if time ran out first."""
    from twisted.internet.task import deferLater

    from phaserlink.net.pop3_client import POP3CleartextRefused, POP3Error

    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    wanted = pending | set(message_ids or ())
    by_message_id = dict(zip(message_ids or (), job_ids)) if message_ids and len(message_ids) == len(job_ids) else {}
    failed = False
    while True:
        try:
            found = await fetch(reactor, mailbox, password, only=wanted)
        except POP3CleartextRefused as e:
            # Asking again changes nothing until the user changes the
            # configuration (docs/tls.md): say so once and stop waiting.
            print(f"phaserlink: status mailbox: {e}; not waiting for the status mail", file=stderr)
            return EXIT_TEMPFAIL
        except POP3Error as e:
            print(f"phaserlink: status mailbox: {e} (will retry)", file=stderr)
            found = []
        for status in latest(found):
            job = status.job_id if status.job_id in pending else by_message_id.get(status.message_id or "")
            if status.final and job in pending:
                pending.discard(job)
                reasons = f" ({', '.join(status.reasons)})" if status.reasons else ""
                pages = f", {status.pages} pages" if status.pages is not None else ""
                print(f"job {job}: {status.state} on {status.printer}{pages}{reasons}",
                      file=stdout if status.state == "completed" else stderr)
                failed |= status.state != "completed"
        if not pending:
            return EXIT_FAILED if failed else EXIT_OK
        if time.monotonic() >= deadline:
            print(f"phaserlink: no final status after {timeout:g}s for job {', '.join(sorted(pending))}",
                  file=stderr)
            return EXIT_TEMPFAIL
        await deferLater(reactor, min(interval, max(0.0, deadline - time.monotonic())), lambda: None)

"""The CUPS backend ``phaserlink``: every program on the machine can print
by email through a CUPS queue whose device URI is ``phaserlink://DEST``.

Conventions (backend(7)):

* no arguments: print the discovery line and exit 0;
* ``job-id user title copies options [file]``: send the job (the file, or
  standard input copied to a temporary file in ``$TMPDIR``) as
  ``phaserlink send`` would, with the title, the user and the copies of the
  CUPS job; progress and state go to stderr as ``INFO:``/``STATE:``/
  ``ATTR:``/``ERROR:`` lines;
* exit 0 sent; 1 (CUPS_BACKEND_FAILED) refused for good (a 5xx reply, data
  we cannot send); 4 (CUPS_BACKEND_STOP) the queue is misconfigured (bad
  URI, unknown destination, no server): no job on it can succeed until an
  admin acts; 6 (CUPS_BACKEND_RETRY) temporary (4xx, connection refused,
  timeout): CUPS retries the job later.

The URI::

    phaserlink://DEST[?server=HOST:PORT&from=ADDRESS&tls=POLICY&ca_file=PEM
                      &max_message_size=SIZE&notify=EVENTS]

DEST is a printer or group in the site-wide destinations file
(``/etc/phaserlink/destinations.ini``, or ``$PHASERLINK_SITE_DESTINATIONS``;
the backend runs as lp or root, so no user's file is read), or a plain
address (``printer@host``, ``@`` may be written ``%40``) with ``server=``
in the URI: then no file is needed at all.  The sender is ``from=``, else
the site file's, else the CUPS job's user at this host's name.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence, TextIO
from urllib.parse import parse_qs, unquote

from phaserlink.client import destinations as dmod
from phaserlink.client import sending
from phaserlink.client.progress import CupsProgress
from phaserlink.values import parse_size

SCHEME = "phaserlink"
DISCOVERY_LINE = 'network phaserlink "Unknown" "PhaserLink (print by email)"'

CUPS_BACKEND_OK = 0
CUPS_BACKEND_FAILED = 1
CUPS_BACKEND_STOP = 4
CUPS_BACKEND_RETRY = 6

STATE_CONNECTING = "connecting-to-device"
URI_KEYS = {"server", "from", "tls", "ca_file", "max_message_size", "notify"}


class BackendConfigError(Exception):
    """The queue's URI or the site file cannot work: stop the queue."""


def parse_uri(uri: str) -> tuple[str, dict[str, str]]:
    """``phaserlink://DEST?k=v`` -> (DEST, {k: v})."""
    prefix = SCHEME + "://"
    if not uri.startswith(prefix):
        raise BackendConfigError(f"device URI {uri!r} does not start with {prefix}")
    rest = uri[len(prefix):]
    dest, _, query = rest.partition("?")
    dest = unquote(dest.rstrip("/"))
    if not dest:
        raise BackendConfigError(f"device URI {uri!r} names no destination")
    options: dict[str, str] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in URI_KEYS:
            raise BackendConfigError(f"device URI option {key!r} is unknown (known: {', '.join(sorted(URI_KEYS))})")
        options[key] = values[-1]
    return dest, options


def targets_for(dest: str, options: dict[str, str], user: str) -> tuple[list[sending.Target], int | None]:
    try:
        dests = dmod.load(use_user=False)
        server = None
        if "server" in options:
            server = sending.server_from_text(options["server"], dests, tls=options.get("tls"),
                                              ca_file=Path(options["ca_file"]) if options.get("ca_file") else None)
        sender = dmod.check_address(options["from"]) if options.get("from") else None
        targets = sending.resolve(dests, dest, server=server, sender=sender, login=_login(user))
        if "notify" in options:
            notify = dmod.parse_notify(options["notify"])
            targets = [replace(t, notify=notify) for t in targets]
        limit = parse_size(options["max_message_size"]) if options.get("max_message_size") else None
    except (dmod.DestinationError, ValueError) as e:
        raise BackendConfigError(str(e)) from None
    return targets, limit


def _login(user: str) -> str:
    """The CUPS job's user as the local part of a sender address."""
    cleaned = "".join(c for c in user if c.isalnum() or c in "._-+")
    return cleaned or "lp"


def main(argv: Sequence[str] | None = None, *, stdin: Any = None, stderr: TextIO | None = None,
         environ: dict[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    err = stderr or sys.stderr
    env = os.environ if environ is None else environ
    if not argv:
        print(DISCOVERY_LINE)
        sys.stdout.flush()
        return CUPS_BACKEND_OK
    if len(argv) not in (5, 6):
        print("Usage: phaserlink job-id user title copies options [file]", file=err)
        return CUPS_BACKEND_FAILED
    job_id, user, title, copies_text, cups_options = argv[:5]
    from phaserlink.message.job_options import from_cups_options

    options = from_cups_options(cups_options).header_value() or None
    try:
        copies = max(1, int(copies_text))
    except ValueError:
        copies = 1

    def say(line: str) -> None:
        print(line, file=err, flush=True)

    try:
        dest, uri_options = parse_uri(env.get("DEVICE_URI", ""))
        targets, limit = targets_for(dest, uri_options, user)
    except BackendConfigError as e:
        say(f"ERROR: {e}")
        return CUPS_BACKEND_STOP

    work = sending.make_work_dir(env.get("TMPDIR") or None)
    try:
        if len(argv) == 6:
            data_path = Path(argv[5])
            filename = title or data_path.name
        else:
            data_path = sending.spool_stdin(stdin if stdin is not None else sys.stdin.buffer, work)
            filename = title or f"job-{job_id}"
        from phaserlink.client.runner import run

        async def go(reactor: Any) -> list[sending.JobResult]:
            limits = sending.SizeLimits(reactor, limit)
            passwords = sending.PasswordCache(interactive=False)
            results = []
            for target in targets:
                say(f"STATE: +{STATE_CONNECTING}")
                say(f"INFO: Sending job {job_id} to {target.address} via {target.server.endpoint}")
                result = await sending.send_job(
                    reactor, target, data_path, work, limits=limits, passwords=passwords,
                    progress=CupsProgress(err), filename=filename, title=title or None, copies=copies,
                    options=options)
                say(f"STATE: -{STATE_CONNECTING}")
                for line in sending.report_lines(result):
                    say(("DEBUG: " if result.ok else "ERROR: ") + line.strip())
                if not result.ok:
                    alert = (result.error or "").replace('"', "'").replace("\n", " ")
                    say(f'ATTR: printer-alert-description="{alert}"')
                else:
                    say(f"INFO: Sent job {job_id} as PhaserLink job {result.job_id} to {target.address}")
                results.append(result)
            return results

        results = run(go)
    finally:
        sending.remove_work_dir(work)
    code = sending.worst_exit(results)
    if code == sending.EXIT_OK:
        return CUPS_BACKEND_OK
    if code == sending.EXIT_FAILED:
        return CUPS_BACKEND_FAILED
    return CUPS_BACKEND_RETRY


if __name__ == "__main__":
    sys.exit(main())

"""``phaserlink-admin``: the console's JSON API from a shell, in the habits
of ``lpstat``, ``cancel`` and ``postqueue`` (docs/console.md).

Credentials never come from the command line (other users see it in
``ps``): ``--credentials FILE`` or ``$PHASERLINK_ADMIN_CREDENTIALS`` names a
file whose first line is ``USER:PASSWORD``; else ``$PHASERLINK_ADMIN_USER``
and ``$PHASERLINK_ADMIN_PASSWORD``.  ``--url`` (or ``$PHASERLINK_ADMIN_URL``)
is where ``admin_listen`` serves, ``http://127.0.0.1:8631`` by default.

Exit codes: 0 done; 1 refused (no such job or printer, the state does not
allow it, not permitted); 2 usage (a bad command line, no credentials);
75 (EX_TEMPFAIL) the console cannot be reached or failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Sequence

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 75

DEFAULT_URL = "http://127.0.0.1:8631"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    CLI_TIMEOUT as TIMEOUT,
)


class Unreachable(Exception):
    pass


class Refused(Exception):
    def __init__(self, code: int, message: str, body: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.body = body or {}


class UsageError(Exception):
    pass


def read_credentials(path: str | None, environ=os.environ) -> tuple[str, str]:
    path = path or environ.get("PHASERLINK_ADMIN_CREDENTIALS")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                line = f.readline().strip()
        except OSError as e:
            raise UsageError(f"cannot read credentials file {path}: {e.strerror}") from None
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise UsageError(f"{path}: the first line must be USER:PASSWORD")
        return user, password
    user, password = environ.get("PHASERLINK_ADMIN_USER"), environ.get("PHASERLINK_ADMIN_PASSWORD")
    if user and password is not None:
        return user, password
    raise UsageError("no credentials: use --credentials FILE (a line USER:PASSWORD), "
                     "or set PHASERLINK_ADMIN_USER and PHASERLINK_ADMIN_PASSWORD")


class Client:
    """The API over urllib (no Twisted needed for a one-shot command)."""

    def __init__(self, url: str, user: str, password: str, timeout: float = TIMEOUT):
        self.base = url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.timeout = timeout

    def call(self, method: str, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        url = f"{self.base}/api/v1/{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = b"{}" if method == "POST" else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read() or b"{}")
            except ValueError:
                body = {}
            message = body.get("error") or e.reason
            if e.code >= 500:
                raise Unreachable(f"{self.base}: {e.code} {message}") from None
            raise Refused(e.code, str(message), body) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach the console at {self.base}: {reason}") from None
        except ValueError:
            raise Unreachable(f"{self.base} did not answer JSON: is it a PhaserLink console?") from None


# -- output --------------------------------------------------------------------


def _table(rows: list[list[str]], out) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def _reasons(view: dict[str, Any]) -> str:
    return ",".join(view.get("state_reasons") or [])


def show_printers(printers: list[dict[str, Any]], out) -> None:
    rows = [["PRINTER", "STATE", "REASONS", "WAITING", "OUTPUT"]]
    rows += [[p["name"], p["state"], _reasons(p), str(p["jobs_waiting"]), p["output"]] for p in printers]
    _table(rows, out)


def show_jobs(jobs: list[dict[str, Any]], out) -> None:
    rows = [["JOB", "PRINTER", "STATE", "REASONS", "SENDER", "SIZE", "RECEIVED", "TITLE"]]
    rows += [[j["id"], j["printer"], j["state"], _reasons(j), j.get("sender") or "-",
              str(j["size"]) if j.get("size") is not None else "-", j.get("created") or "-",
              j.get("title") or ""] for j in jobs]
    _table(rows, out)


def show_job(job: dict[str, Any], out) -> None:
    fragments = job.get("fragments")
    for label, value in (("job", job["id"]), ("printer", job["printer"]), ("state", job["state"]),
                         ("reasons", _reasons(job)), ("sender", job.get("sender")), ("title", job.get("title")),
                         ("size", job.get("size")), ("pages", job.get("pages")),
                         ("fragments", f"{fragments['received']} of {fragments['total']}" if fragments else None),
                         ("auth", job.get("auth")), ("received", job.get("created")), ("detail", job.get("detail"))):
        if value not in (None, ""):
            out.write(f"{label + ':':11}{value}\n")
    if job.get("timeline"):
        out.write("timeline:\n")
        for e in job["timeline"]:
            reasons = f" ({','.join(e['state_reasons'])})" if e.get("state_reasons") else ""
            detail = f": {e['detail']}" if e.get("detail") else ""
            out.write(f"  {e['at']}  {e['state']}{reasons} by {e['by']}{detail}\n")


def show_queue(messages: list[dict[str, Any]], out) -> None:
    if not messages:
        out.write("Mail queue is empty\n")
        return
    rows = [["ID", "SENDER", "RECIPIENTS", "ATTEMPTS", "NEXT TRY", "LAST REPLY"]]
    rows += [[m["id"], m.get("sender") or "<>", ",".join(m["recipients"]), str(m["attempts"]),
              m.get("next_attempt") or "-", m.get("last_reply") or ""] for m in messages]
    _table(rows, out)


# -- commands ---------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phaserlink-admin",
                                     description="See and drive a PhaserLink appliance through its console API.")
    parser.add_argument("--url", default=os.environ.get("PHASERLINK_ADMIN_URL", DEFAULT_URL),
                        help=f"the console's address (default {DEFAULT_URL} or $PHASERLINK_ADMIN_URL)")
    parser.add_argument("--credentials", metavar="FILE",
                        help="a file whose first line is USER:PASSWORD (or $PHASERLINK_ADMIN_CREDENTIALS)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON, for scripts")
    # The same options after the command too (`phaserlink-admin show 7 --json`,
    # as with lpstat/postqueue habits): SUPPRESS keeps a command that does not
    # repeat them from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--credentials", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    command("printers", help="printers and their state (lpstat -p)")
    jobs = command("jobs", help="jobs, newest first (lpstat -o)")
    jobs.add_argument("--printer")
    jobs.add_argument("--state", choices=("pending", "pending-held", "processing", "completed", "aborted", "canceled"))
    jobs.add_argument("--sender")
    jobs.add_argument("--since", help="an ISO 8601 UTC time, or a duration back from now (2h)")
    jobs.add_argument("--limit", type=int, default=50, help="jobs to show (default 50)")
    command("show", help="one job with its timeline").add_argument("id")
    for name, text in (("cancel", "cancel jobs (never printed after)"), ("hold", "hold pending jobs"),
                       ("release", "release held jobs"), ("retry", "try jobs waiting for their printer now")):
        command(name, help=text).add_argument("ids", nargs="+", metavar="ID")
    command("pause", help="stop sending to a printer (mail is still taken)").add_argument("printer")
    command("resume", help="start sending to a paused printer again").add_argument("printer")
    queue = command("queue", help="the outbound mail queue (postqueue -p); retry or delete a message")
    queue.add_argument("action", nargs="?", choices=("retry", "delete"))
    queue.add_argument("ids", nargs="*", metavar="ID")
    return parser


def run(args: argparse.Namespace, client: Client, out, err) -> int:
    def emit(data, show) -> None:
        if args.json:
            out.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
        else:
            show(data, out)

    command = args.command
    if command == "printers":
        emit(client.call("GET", "printers")["printers"], show_printers)
    elif command == "jobs":
        jobs: list[dict[str, Any]] = []
        cursor = None
        while len(jobs) < args.limit:
            page = client.call("GET", "jobs", {"printer": args.printer, "state": args.state, "sender": args.sender,
                                               "since": args.since, "cursor": cursor,
                                               "limit": str(min(args.limit - len(jobs), 500))})
            jobs += page["jobs"]
            cursor = page.get("next")
            if not cursor:
                break
        emit(jobs, show_jobs)
    elif command == "show":
        emit(client.call("GET", f"jobs/{urllib.parse.quote(args.id, safe='')}"), show_job)
    elif command in ("cancel", "hold", "release", "retry"):
        return _each(args, client, [f"jobs/{urllib.parse.quote(i, safe='')}/{command}" for i in args.ids],
                     args.ids, out, err)
    elif command in ("pause", "resume"):
        return _each(args, client, [f"printers/{urllib.parse.quote(args.printer, safe='')}/{command}"],
                     [args.printer], out, err)
    elif command == "queue":
        if args.action is None:
            if args.ids:
                raise UsageError("queue takes IDs only after retry or delete")
            emit(client.call("GET", "queue")["messages"], show_queue)
        else:
            if not args.ids:
                raise UsageError(f"queue {args.action} needs at least one ID")
            return _each(args, client, [f"queue/{urllib.parse.quote(i, safe='')}/{args.action}" for i in args.ids],
                         args.ids, out, err)
    return EXIT_OK


def _each(args, client: Client, paths: list[str], names: list[str], out, err) -> int:
    """One POST per id; go on after a refusal (as cancel(1) does), exit 1 if any."""
    status = EXIT_OK
    results = []
    for path, name in zip(paths, names):
        try:
            result = client.call("POST", path)
        except Refused as e:
            err.write(f"phaserlink-admin: {name}: {e}\n")
            status = EXIT_REFUSED
            results.append({"id": name, "error": str(e), "status": e.code, **e.body})
            continue
        results.append(result)
        if not args.json:
            state = result.get("state")
            reasons = _reasons(result)
            out.write(f"{name}: {state}{' (' + reasons + ')' if reasons else ''}\n" if state else f"{name}: done\n")
    if args.json:
        out.write(json.dumps(results if len(results) != 1 else results[0], indent=1, sort_keys=True) + "\n")
    return status


def main(argv: Sequence[str] | None = None, out=None, err=None, environ=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    try:
        user, password = read_credentials(args.credentials, environ if environ is not None else os.environ)
        return run(args, Client(args.url, user, password), out, err)
    except UsageError as e:
        err.write(f"phaserlink-admin: {e}\n")
        return EXIT_USAGE
    except Refused as e:
        err.write(f"phaserlink-admin: {e}\n")
        return EXIT_REFUSED
    except Unreachable as e:
        err.write(f"phaserlink-admin: {e}\n")
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())

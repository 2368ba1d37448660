"""The JSON API under ``/api/v1/`` (docs/console.md).

A resource turns a request into one call on
:class:`~phaserlink.printer.control.IPrinterControl` or
:class:`~phaserlink.printer.control.IQueueControl` and the result into
JSON; it holds no policy of its own beyond who may call what:

- HTTP Basic on every call (401 without, or with a wrong password); over
  plain HTTP only from loopback (403), so a password never crosses a
  network in clear.
- GET for a viewer or an operator; POST (an operation) for an operator
  only (403).
- A POST must not look like a form (``application/x-www-form-urlencoded``,
  ``multipart/form-data``, ``text/plain``): a browser holding Basic
  credentials could otherwise be made to post one from another site.

Answers: 200 with the new state, 404 for an unknown id, 409 when the
state does not allow the operation (with the job or printer as it is).
"""

from __future__ import annotations

import calendar
import time
from typing import Any

from twisted.logger import Logger
from twisted.web import resource

from phaserlink.admin.auth import Admin, Authenticator, is_loopback
from phaserlink.admin.web import HTTPError, answer, client_host, json_error, write_json
from phaserlink.printer import control as C
from phaserlink.printer.jobs import STATES
from phaserlink.values import parse_duration

log = Logger()

REALM = b'Basic realm="PhaserLink console", charset="UTF-8"'
FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data", b"text/plain")
JOB_OPERATIONS = ("cancel", "hold", "release", "retry")
PRINTER_OPERATIONS = ("pause", "resume")
QUEUE_OPERATIONS = ("retry", "delete")


def parse_since(text: str, now: float) -> float:
    """``since`` is an ISO 8601 UTC time (``2026-12-01T10:00:00Z``, or a
    date), or a duration back from now (``2h``, ``3d``)."""
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%MZ", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text, pattern)))
        except ValueError:
            continue
    try:
        return now - parse_duration(text)
    except ValueError:
        raise HTTPError(400, f"since={text!r}: use an ISO 8601 UTC time such as 2026-12-01T10:00:00Z, "
                             f"or a duration such as 2h") from None


async def authenticate(request, auth: Authenticator, tls: bool) -> Admin:
    """The Admin behind HTTP Basic, or an HTTPError (401/403)."""
    host = client_host(request)
    if not (request.isSecure() or is_loopback(host)):
        raise HTTPError(403, "the console takes logins over TLS only (or from this machine)")
    header = request.getHeader(b"authorization")
    if not header or not header.lower().startswith(b"basic "):
        raise HTTPError(401, "log in with HTTP Basic (an [admin:NAME] user)", headers={b"www-authenticate": REALM})
    name = request.getUser().decode("utf-8", "replace")
    password = request.getPassword().decode("utf-8", "replace")
    admin = await auth.check(name, password, host)
    if admin is None:
        raise HTTPError(401, "wrong user name or password", headers={b"www-authenticate": REALM})
    return admin


class ApiResource(resource.Resource):
    """``/api/v1/...``: everything below is routed here."""

    isLeaf = True

    def __init__(self, printers, queue, auth: Authenticator, *, tls: bool = False, reactor=None,
                 on_operation=lambda op: None):
        super().__init__()
        self.printers = printers  # IPrinterControl
        self.queue = queue  # IQueueControl or None
        self.auth = auth
        self.tls = tls
        self.on_operation = on_operation
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor

    def render(self, request) -> int:
        return answer(request, lambda: self._handle(request), json_error)

    async def _handle(self, request) -> None:
        method = request.method
        if method not in (b"GET", b"HEAD", b"POST"):
            raise HTTPError(405, "use GET or POST")
        admin = await authenticate(request, self.auth, self.tls)
        path = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if method == b"POST":
            if not admin.may_operate:
                raise HTTPError(403, f"{admin.name} is a viewer: operations need the operator role")
            ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
            if ctype in FORM_TYPES:
                raise HTTPError(403, "an API POST is not a form post (send Content-Type: application/json)")
            code, body = await self._post(path, admin)
            self.on_operation(path[-1])
        else:
            code, body = await self._get(path, request)
        write_json(request, code, body)

    # -- reading ---------------------------------------------------------------

    async def _get(self, path: list[str], request) -> tuple[int, Any]:
        match path:
            case ["printers"]:
                return 200, {"printers": self.printers.printers()}
            case ["printers", name]:
                return 200, self._printer(name)
            case ["jobs"]:
                return 200, await self._jobs(request)
            case ["jobs", job_id]:
                try:
                    return 200, await self.printers.job(job_id)
                except C.UnknownJob:
                    raise HTTPError(404, f"no job {job_id}") from None
            case ["queue"]:
                return 200, {"messages": self._queue().messages(), "next": None}
        raise HTTPError(404, "no such API path (see docs/console.md)")

    def _printer(self, name: str) -> dict[str, Any]:
        try:
            return self.printers.printer(name)
        except C.UnknownPrinter:
            raise HTTPError(404, f"no printer {name}") from None

    async def _jobs(self, request) -> dict[str, Any]:
        args = {k.decode(): v[-1].decode("utf-8", "replace") for k, v in request.args.items() if v}
        state = args.get("state") or None
        if state is not None and state not in STATES:
            raise HTTPError(400, f"state={state!r}: one of {', '.join(STATES)}")
        printer = args.get("printer") or None
        if printer is not None:
            self._printer(printer)
        since = parse_since(args["since"], self.reactor.seconds()) if args.get("since") else None
        try:
            limit = int(args.get("limit") or C.DEFAULT_PAGE)
        except ValueError:
            raise HTTPError(400, "limit must be a whole number") from None
        if not 1 <= limit <= C.MAX_PAGE:
            raise HTTPError(400, f"limit must be 1 to {C.MAX_PAGE}")
        flt = C.JobFilter(printer=printer, state=state, sender=args.get("sender") or None, since=since)
        try:
            # ?cursor= (what the CLI sends), or ?next= with the list's own "next" value
            # (the name a script reading {"jobs": [...], "next": CURSOR} reaches for).
            jobs, nxt = await self.printers.jobs(flt, args.get("cursor") or args.get("next") or None, limit)
        except ValueError as e:
            raise HTTPError(400, str(e)) from None
        return {"jobs": jobs, "next": nxt}

    def _queue(self):
        if self.queue is None:
            raise HTTPError(404, "this appliance has no outbound queue")
        return self.queue

    # -- operations ---------------------------------------------------------------

    async def _post(self, path: list[str], admin: Admin) -> tuple[int, Any]:
        try:
            match path:
                case ["jobs", job_id, op] if op in JOB_OPERATIONS:
                    log.info("console: {who} asks to {op} job {job}", who=admin.name, op=op, job=job_id)
                    return 200, await getattr(self.printers, op)(job_id, admin.name)
                case ["printers", name, op] if op in PRINTER_OPERATIONS:
                    log.info("console: {who} asks to {op} printer {printer}", who=admin.name, op=op, printer=name)
                    return 200, await getattr(self.printers, op)(name, admin.name)
                case ["queue", queue_id, op] if op in QUEUE_OPERATIONS:
                    log.info("console: {who} asks to {op} queued message {id}", who=admin.name, op=op, id=queue_id)
                    result = await getattr(self._queue(), op)(queue_id, admin.name)
                    return 200, result if result is not None else {"id": queue_id, "deleted": True}
        except C.UnknownJob:
            raise HTTPError(404, f"no job {path[1]}") from None
        except C.UnknownPrinter:
            raise HTTPError(404, f"no printer {path[1]}") from None
        except C.NotAllowed as e:
            key = {"printers": "printer", "queue": "message"}.get(path[0], "job")
            raise HTTPError(409, e.why, {key: e.view} if e.view is not None else {}) from None
        except KeyError:
            raise HTTPError(404, f"no queued message {path[1]}") from None
        raise HTTPError(404, "no such operation (see docs/console.md)")

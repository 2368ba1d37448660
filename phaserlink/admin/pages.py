"""The console's web page (docs/console.md), server-rendered with
twisted.web.template: every value goes through its flattener, so it is
escaped by construction; there is no JavaScript at all (the page reloads
itself with a meta refresh while a job on it is still moving).

- ``/``: printers (pause/resume), jobs with filters, one row per job with a
  form button for each operation its state allows; the outbound queue.
- ``/jobs/ID``: one job with its timeline.
- ``/login``, ``/logout``: a form login that sets a session cookie
  (HttpOnly, SameSite=Strict, Secure under TLS).  Every form POST carries
  the session's CSRF token (the login form a token of its own, in a
  cookie), and a POST without it is refused (403).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.template import Tag, flattenString, tags

from phaserlink.admin.auth import SESSION_COOKIE, Authenticator, Session, Sessions, csrf_ok, is_loopback
from phaserlink.admin.web import HTTPError, answer, client_host
from phaserlink.printer import control as C
from phaserlink.printer.jobs import STATES, TERMINAL_STATES

log = Logger()

LOGIN_COOKIE = b"phaserlink_login"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    REFRESH_SECONDS,
    PAGE_JOBS,
)

OP_LABELS = {"cancel": "Cancel", "hold": "Hold", "release": "Release", "retry": "Retry",
             "pause": "Pause", "resume": "Resume", "delete": "Delete"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f6f6f4}
header{background:#233;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.5em;align-items:center}
header h1{font-size:1.15em;margin:0;flex:1}
header a{color:#fff}
main{padding:0 1em 2em;max-width:72em}
h2{font-size:1.05em;margin:1.4em 0 .4em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .5em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#eee;font-weight:600}
td.id{font-family:ui-monospace,monospace;white-space:nowrap}
form.inline{display:inline;margin:0}
button{font:inherit;padding:.2em .7em;margin:.1em;border:1px solid #678;border-radius:3px;background:#fff;cursor:pointer}
button.cancel,button.delete{border-color:#a33;color:#a33}
.state{white-space:nowrap;font-weight:600}
.s-completed{color:#276b2c}.s-aborted,.s-canceled{color:#a33}.s-processing{color:#1f5fa8}
.s-pending-held,.s-stopped{color:#8a5a00}
.reasons{color:#555;font-size:.9em}
.msg{background:#fff3cd;border:1px solid #e0c56e;padding:.5em 1em;margin:1em 0}
.filters{display:flex;flex-wrap:wrap;gap:.5em;align-items:end;margin:.5em 0}
.filters label{display:flex;flex-direction:column;font-size:.9em}
pre{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:.5em}
.login{max-width:22em;margin:3em auto;background:#fff;padding:1.5em;border:1px solid #ddd}
.login label{display:block;margin:.6em 0}.login input{width:100%;font:inherit;padding:.3em;box-sizing:border-box}
@media (max-width:40em){th.wide,td.wide{display:none}main{padding:0 .4em 2em}}
"""


def _page(title: str, body: list[Any], *, admin=None, csrf: str | None = None, refresh: bool = False) -> Tag:
    head = tags.head(
        tags.meta(charset="utf-8"),
        tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
        tags.title(f"{title} - PhaserLink console"),
        tags.style(STYLE),
    )
    if refresh:
        head(tags.meta(**{"http-equiv": "refresh", "content": str(REFRESH_SECONDS)}))
    bar = Tag("header")(tags.h1(tags.a("PhaserLink console", href="/")))
    if admin is not None:
        bar(tags.span(f"{admin.name} ({admin.role})"),
            tags.form(tags.input(type="hidden", name="csrf", value=csrf or ""),
                      tags.button("Log out", type="submit"), method="post", action="/logout", **{"class": "inline"}))
    return tags.html(head, tags.body(bar, Tag("main")(*body)), lang="en")


def _op_form(action: str, op: str, csrf: str, back: str) -> Tag:
    return tags.form(
        tags.input(type="hidden", name="csrf", value=csrf),
        tags.input(type="hidden", name="back", value=back),
        tags.button(OP_LABELS[op], type="submit", name="op", value=op, **{"class": op}),
        method="post", action=action, **{"class": "inline"})


def _state(state: str, reasons: list[str]) -> list[Tag]:
    return [tags.span(state, **{"class": f"state s-{state}"}),
            tags.br(), tags.span(", ".join(reasons), **{"class": "reasons"})]


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _render(tree: Tag) -> "defer.Deferred[bytes]":
    return flattenString(None, tree).addCallback(lambda b: b"<!DOCTYPE html>\n" + b)


class ConsolePage(resource.Resource):
    """Everything that is not /api, /metrics or /healthz."""

    isLeaf = True

    def __init__(self, printers, queue, auth: Authenticator, sessions: Sessions, *, tls: bool = False,
                 on_operation=lambda op: None):
        super().__init__()
        self.printers = printers
        self.queue = queue
        self.auth = auth
        self.sessions = sessions
        self.tls = tls
        self.on_operation = on_operation

    # -- plumbing --------------------------------------------------------------

    def render(self, request) -> int:
        return answer(request, lambda: self._handle(request), self._error)

    def _error(self, request, error: HTTPError) -> None:
        for name, value in error.headers.items():
            request.setHeader(name, value)
        request.setResponseCode(error.code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        session = self._session(request)
        tree = _page("Error", [tags.div(tags.p(error.message), tags.p(tags.a("Back to the console", href="/")),
                                        **{"class": "msg"})],
                     admin=session.admin if session else None, csrf=session.csrf if session else None)
        flattenString(None, tree).addCallback(lambda b: request.write(b"<!DOCTYPE html>\n" + b))

    def _session(self, request) -> Session | None:
        token = request.getCookie(SESSION_COOKIE)
        return self.sessions.get(token.decode("ascii", "replace") if token else None)

    def _field(self, request, name: str) -> str | None:
        values = request.args.get(name.encode())
        return values[-1].decode("utf-8", "replace") if values else None

    def _cookie(self, request, name: bytes, value: bytes, *, max_age: int | None = None) -> None:
        request.addCookie(name, value, path=b"/", httpOnly=True, secure=request.isSecure(),
                          sameSite=b"strict", max_age=str(max_age).encode() if max_age is not None else None)

    def _html(self, request, code: int = 200):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")

    def _redirect(self, request, where: str) -> None:
        if not where.startswith("/") or where.startswith("//"):
            where = "/"
        request.setResponseCode(303)
        request.setHeader(b"location", where.encode())

    async def _handle(self, request) -> None:
        path = [p.decode("utf-8", "replace") for p in request.postpath if p]
        session = self._session(request)
        if request.method == b"POST":
            await self._post(request, path, session)
            return
        if request.method not in (b"GET", b"HEAD"):
            raise HTTPError(405, "use GET or POST")
        if session is None:
            if path not in ([], ["login"]):
                self._redirect(request, "/")
                return
            await self._login_form(request)
            return
        match path:
            case [] | ["jobs"]:
                tree = await self._console(request, session)
            case ["jobs", job_id]:
                tree = await self._job(session, job_id)
            case _:
                raise HTTPError(404, "no such page")
        self._html(request)
        request.write(await _render(tree))

    # -- login --------------------------------------------------------------------

    async def _login_form(self, request, message: str | None = None, code: int = 200) -> None:
        token = secrets.token_urlsafe(24)
        self._cookie(request, LOGIN_COOKIE, token.encode())
        body: list[Any] = []
        if message:
            body.append(tags.div(message, **{"class": "msg"}))
        body.append(tags.form(
            tags.h2("Log in"),
            tags.input(type="hidden", name="csrf", value=token),
            tags.label("User", tags.input(name="name", autocomplete="username", required="")),
            tags.label("Password", tags.input(name="password", type="password",
                                              autocomplete="current-password", required="")),
            tags.button("Log in", type="submit", id="login"),
            method="post", action="/login", **{"class": "login"}))
        self._html(request, code)
        request.write(await _render(_page("Log in", body)))

    async def _login(self, request) -> None:
        host = client_host(request)
        if not (request.isSecure() or is_loopback(host)):
            raise HTTPError(403, "the console takes logins over TLS only (or from this machine)")
        expected = request.getCookie(LOGIN_COOKIE)
        if expected is None or not csrf_ok(expected.decode("ascii", "replace"), self._field(request, "csrf")):
            raise HTTPError(403, "the login form was not sent from this console (CSRF token missing); reload and try again")
        name, password = self._field(request, "name") or "", self._field(request, "password") or ""
        admin = await self.auth.check(name, password, host)
        if admin is None:
            await self._login_form(request, "Wrong user name or password.", 401)
            return
        session = self.sessions.new(admin)
        self._cookie(request, SESSION_COOKIE, session.token.encode())
        self._cookie(request, LOGIN_COOKIE, b"", max_age=0)
        log.info("console: {who} logged in from {host}", who=admin.name, host=host)
        self._redirect(request, "/")

    # -- posts ------------------------------------------------------------------------

    async def _post(self, request, path: list[str], session: Session | None) -> None:
        if path == ["login"]:
            await self._login(request)
            return
        if session is None:
            raise HTTPError(403, "log in first")
        if not csrf_ok(session.csrf, self._field(request, "csrf")):
            raise HTTPError(403, "this form was not sent from this console (CSRF token missing or wrong)")
        if path == ["logout"]:
            self.sessions.end(session.token)
            self._cookie(request, SESSION_COOKIE, b"", max_age=0)
            self._redirect(request, "/")
            return
        admin = session.admin
        if not admin.may_operate:
            raise HTTPError(403, f"{admin.name} is a viewer: operations need the operator role")
        op = self._field(request, "op") or (path[2] if len(path) == 3 else "")
        back = self._field(request, "back") or "/"
        try:
            match path[:2]:
                case ["jobs", job_id] if op in ("cancel", "hold", "release", "retry"):
                    await getattr(self.printers, op)(job_id, admin.name)
                case ["printers", name] if op in ("pause", "resume"):
                    await getattr(self.printers, op)(name, admin.name)
                case ["queue", queue_id] if op in ("retry", "delete") and self.queue is not None:
                    await getattr(self.queue, op)(queue_id, admin.name)
                case _:
                    raise HTTPError(404, "no such operation")
        except (C.UnknownJob, C.UnknownPrinter, KeyError):
            raise HTTPError(404, f"{path[1]} is not known (any more)") from None
        except C.NotAllowed as e:
            raise HTTPError(409, f"Not done: {e.why}") from None
        self.on_operation(op)
        self._redirect(request, back)

    # -- the console ----------------------------------------------------------------------

    async def _console(self, request, session: Session) -> Tag:
        csrf = session.csrf
        printer = self._field(request, "printer") or None
        state = self._field(request, "state") or None
        sender = self._field(request, "sender") or None
        printers = self.printers.printers()
        names = [p["name"] for p in printers]
        if printer not in names:
            printer = None
        if state not in STATES:
            state = None
        jobs, nxt = await self.printers.jobs(C.JobFilter(printer=printer, state=state, sender=sender),
                                            self._field(request, "cursor") or None, PAGE_JOBS)
        here = "/" + (("?" + urlencode({k: v for k, v in (("printer", printer), ("state", state),
                                                           ("sender", sender)) if v})) if printer or state or sender else "")
        operate = session.admin.may_operate
        body: list[Any] = [tags.h2("Printers"), self._printer_table(printers, csrf, here, operate)]
        body += [tags.h2("Jobs"), self._filters(names, printer, state, sender),
                 self._job_table(jobs, csrf, here, operate)]
        if nxt:
            params = {k: v for k, v in (("printer", printer), ("state", state), ("sender", sender)) if v}
            params["cursor"] = nxt
            body.append(tags.p(tags.a("Older jobs", href="/?" + urlencode(params))))
        if self.queue is not None:
            body += [tags.h2("Outbound queue"), self._queue_table(self.queue.messages(), csrf, here, operate)]
        moving = any(j["state"] not in TERMINAL_STATES for j in jobs)
        return _page("Console", body, admin=session.admin, csrf=csrf, refresh=moving)

    def _printer_table(self, printers: list[dict], csrf: str, back: str, operate: bool) -> Tag:
        rows = []
        for p in printers:
            op = "resume" if C.PAUSED in p["state_reasons"] else "pause"
            action = tags.td(_op_form(f"/printers/{quote(p['name'])}/{op}", op, csrf, back) if operate else "")
            rows.append(tags.tr(tags.td(p["name"]), tags.td(*_state(p["state"], p["state_reasons"])),
                                tags.td(str(p["jobs_waiting"])),
                                tags.td(p["output"], **{"class": "wide"}),
                                tags.td(p.get("last_error") or "", **{"class": "wide"}), action,
                                id=f"printer-{p['name']}"))
        return tags.div(tags.table(
            tags.tr(tags.th("Printer"), tags.th("State"), tags.th("Waiting"), tags.th("Output", **{"class": "wide"}),
                    tags.th("Last error", **{"class": "wide"}), tags.th("")), *rows), **{"class": "scroll"})

    def _filters(self, names: list[str], printer, state, sender) -> Tag:
        def select(name: str, values: list[str], current) -> Tag:
            options = [tags.option("any", value="")]
            for v in values:
                option = tags.option(v, value=v)
                if v == current:
                    option(selected="selected")
                options.append(option)
            return tags.label(name.capitalize(), tags.select(*options, name=name))

        return tags.form(select("printer", names, printer), select("state", list(STATES), state),
                         tags.label("Sender", tags.input(name="sender", value=sender or "", type="email")),
                         tags.button("Show", type="submit"), method="get", action="/", **{"class": "filters"})

    def _job_table(self, jobs: list[dict], csrf: str, back: str, operate: bool) -> Tag:
        rows = []
        for j in jobs:
            forms = [_op_form(f"/jobs/{quote(j['id'])}/{op}", op, csrf, back)
                     for op in C.allowed_operations(j)] if operate else []
            rows.append(tags.tr(
                tags.td(tags.a(j["id"], href=f"/jobs/{quote(j['id'])}"), **{"class": "id"}),
                tags.td(j["printer"]), tags.td(*_state(j["state"], j["state_reasons"])),
                tags.td(j.get("sender") or "", **{"class": "wide"}), tags.td(j.get("title") or ""),
                tags.td(_size(j.get("size")), **{"class": "wide"}),
                tags.td(j.get("created") or "", **{"class": "wide"}), tags.td(*forms),
                id=f"job-{j['id']}"))
        if not rows:
            rows.append(tags.tr(tags.td("No jobs.", colspan="8")))
        return tags.div(tags.table(
            tags.tr(tags.th("Job"), tags.th("Printer"), tags.th("State"), tags.th("Sender", **{"class": "wide"}),
                    tags.th("Title"), tags.th("Size", **{"class": "wide"}), tags.th("Received", **{"class": "wide"}),
                    tags.th("")), *rows), **{"class": "scroll"})

    def _queue_table(self, messages: list[dict], csrf: str, back: str, operate: bool) -> Tag:
        rows = []
        for m in messages:
            forms = [_op_form(f"/queue/{quote(m['id'])}/{op}", op, csrf, back) for op in ("retry", "delete")] \
                if operate else []
            rows.append(tags.tr(tags.td(m["id"], **{"class": "id"}), tags.td(", ".join(m["recipients"])),
                                tags.td(str(m["attempts"])), tags.td(m.get("next_attempt") or "", **{"class": "wide"}),
                                tags.td(m.get("last_reply") or ""), tags.td(*forms)))
        if not rows:
            rows.append(tags.tr(tags.td("The outbound queue is empty.", colspan="6")))
        return tags.div(tags.table(
            tags.tr(tags.th("Message"), tags.th("To"), tags.th("Attempts"), tags.th("Next try", **{"class": "wide"}),
                    tags.th("Last reply"), tags.th("")), *rows), **{"class": "scroll"})

    async def _job(self, session: Session, job_id: str) -> Tag:
        try:
            job = await self.printers.job(job_id)
        except C.UnknownJob:
            raise HTTPError(404, f"no job {job_id}") from None
        back = f"/jobs/{quote(job_id)}"
        forms = [_op_form(f"{back}/{op}", op, session.csrf, back) for op in C.allowed_operations(job)] \
            if session.admin.may_operate else []
        fragments = job.get("fragments")
        facts = [("Printer", job["printer"]), ("Sender", job.get("sender") or ""), ("Title", job.get("title") or ""),
                 ("Size", _size(job.get("size"))), ("Pages", "" if job.get("pages") is None else str(job["pages"])),
                 ("Fragments", f"{fragments['received']} of {fragments['total'] if fragments['total'] is not None else '?'}"
                  if fragments else ""),
                 ("Authentication", str(job["auth"]) if job.get("auth") else ""),
                 ("Received", job.get("created") or ""), ("Detail", job.get("detail") or "")]
        body: list[Any] = [
            tags.h2(f"Job {job_id}"),
            tags.p(*_state(job["state"], job["state_reasons"]), id="job-state"),
            tags.p(*forms),
            tags.div(tags.table(*[tags.tr(tags.th(k), tags.td(v)) for k, v in facts if v]), **{"class": "scroll"}),
            tags.h2("Timeline"),
            tags.div(tags.table(
                tags.tr(tags.th("At"), tags.th("State"), tags.th("By"), tags.th("Detail")),
                *[tags.tr(tags.td(e["at"] or ""), tags.td(*_state(e["state"], e["state_reasons"])),
                          tags.td(e["by"]), tags.td(e.get("detail") or "")) for e in job["timeline"]],
                id="timeline"), **{"class": "scroll"}),
            tags.h2("Status mail sent"),
            *([tags.div(tags.p(tags.strong(m["event"]), " ", m["at"] or ""), tags.pre(m["text"]),
                        **{"class": "mail"}) for m in job.get("mails") or []]
              or [tags.p("None (the printer's notify policy asked for none, or none was due yet).")]),
        ]
        return _page(f"Job {job_id}", body, admin=session.admin, csrf=session.csrf,
                     refresh=job["state"] not in TERMINAL_STATES)

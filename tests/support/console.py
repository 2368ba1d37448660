"""Test helpers for the console: an in-memory IPrinterControl, and an
HTTP exchange with a twisted.web Site over a StringTransport."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from phaserlink.printer import control as C


@implementer(C.IPrinterControl)
class FakeControl:
    """Jobs and printers in dicts; operations follow the same state rules
    as the real ones (phaserlink.printer.operations)."""

    def __init__(self, printers=("demo",)):
        self._printers = {n: {"name": n, "state": "idle", "state_reasons": [], "jobs_waiting": 0,
                              "output": f"file:var/printed/{n}", "last_error": None} for n in printers}
        self._jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []

    def add_job(self, job_id: str, state: str = "pending", reasons=("job-queued",), printer: str = "demo",
                sender: str = "alice@example.com", title: str = "report", created: float | None = None) -> dict:
        now = created if created is not None else time.time()
        job = {"id": job_id, "printer": printer, "sender": sender, "title": title, "state": state,
               "state_reasons": list(reasons), "size": 1234, "pages": None, "fragments": None, "auth": None,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "_t": now, "changed": None,
               "ended": None, "detail": "",
               "timeline": [{"at": "2026-12-01T00:00:00Z", "state": state, "state_reasons": list(reasons),
                             "by": "system", "detail": ""}]}
        self._jobs[job_id] = job
        return job

    def _public(self, job: dict, timeline: bool = True) -> dict:
        view = {k: v for k, v in job.items() if not k.startswith("_")}
        if not timeline:
            view.pop("timeline")
        return view

    def printers(self):
        return [dict(p) for p in self._printers.values()]

    def printer(self, name):
        if name not in self._printers:
            raise C.UnknownPrinter(name)
        return dict(self._printers[name])

    def jobs(self, filter, cursor, limit):
        jobs = sorted(self._jobs.values(), key=lambda j: (j["_t"], j["id"]), reverse=True)
        jobs = [j for j in jobs if (filter.printer in (None, j["printer"]) and filter.state in (None, j["state"])
                                    and filter.sender in (None, j["sender"]))]
        start = int(cursor) if cursor else 0
        page = jobs[start:start + limit]
        nxt = str(start + limit) if start + limit < len(jobs) else None
        return defer.succeed(([self._public(j, False) for j in page], nxt))

    def job(self, job_id):
        if job_id not in self._jobs:
            return defer.fail(C.UnknownJob(job_id))
        return defer.succeed(self._public(self._jobs[job_id]))

    def _op(self, op: str, job_id: str, by: str, new_state: str, reasons: list[str]):
        if job_id not in self._jobs:
            raise C.UnknownJob(job_id)
        job = self._jobs[job_id]
        if op not in C.allowed_operations(job):
            raise C.NotAllowed(f"job {job_id} is {job['state']}", self._public(job))
        self.calls.append((op, job_id, by))
        job["state"], job["state_reasons"] = new_state, reasons
        job["timeline"].append({"at": "2026-12-01T00:00:01Z", "state": new_state, "state_reasons": reasons,
                                "by": by, "detail": ""})
        return self._public(job)

    async def cancel(self, job_id, by):
        return self._op("cancel", job_id, by, "canceled", [C.JOB_CANCELED_BY_OPERATOR])

    async def hold(self, job_id, by):
        return self._op("hold", job_id, by, "pending-held", [C.JOB_HOLD_UNTIL_SPECIFIED])

    async def release(self, job_id, by):
        return self._op("release", job_id, by, "pending", ["job-queued"])

    async def retry(self, job_id, by):
        return self._op("retry", job_id, by, "pending", ["job-queued"])

    async def pause(self, name, by):
        p = self.printer(name)
        if C.PAUSED in p["state_reasons"]:
            raise C.NotAllowed(f"printer {name} is already paused", p)
        self.calls.append(("pause", name, by))
        self._printers[name].update(state="stopped", state_reasons=[C.PAUSED])
        return self.printer(name)

    async def resume(self, name, by):
        p = self.printer(name)
        if C.PAUSED not in p["state_reasons"]:
            raise C.NotAllowed(f"printer {name} is not paused", p)
        self.calls.append(("resume", name, by))
        self._printers[name].update(state="idle", state_reasons=[])
        return self.printer(name)


@dataclass
class Response:
    code: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self):
        import json

        return json.loads(self.body)


def exchange(site, clock, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"",
             peer: str = "127.0.0.1", settle: float = 5.0) -> Response:
    """One HTTP/1.0 request to *site*; advance *clock* by *settle* so that
    late answers (a failed login's delay) arrive."""
    address = IPv4Address("TCP", peer, 40000)
    protocol = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address, hostAddress=IPv4Address("TCP", "127.0.0.1", 8631))
    protocol.makeConnection(transport)
    lines = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1:8631"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    for _ in range(int(settle * 10)):
        clock.advance(0.1)
    raw = transport.value()
    if not raw:
        return Response(0, {}, b"")  # not answered (yet)
    head, _, content = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, list[str]] = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        parsed.setdefault(k.strip().lower(), []).append(v.strip())
    return Response(int(status.split()[1]), parsed, content)


def basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

"""Talking to a running appliance's console over real HTTP (urllib), for
the appliance tests: the API with Basic auth, and the page's form login."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from support.appliance import Appliance, password_hash
from support.peers import free_port, wait_for_port

OPERATOR = ("olga", "olga-secret")
VIEWER = ("vic", "vic-secret")


def console_config(app: Appliance) -> int:
    """Give *app* a console on a free port with an operator and a viewer."""
    port = free_port()
    app.appliance_extra += f"admin_listen = tcp:{port}:interface=127.0.0.1\n"
    app.sections += (f"[admin:{OPERATOR[0]}]\npassword = {password_hash(OPERATOR[1])}\nrole = operator\n\n"
                     f"[admin:{VIEWER[0]}]\npassword = {password_hash(VIEWER[1])}\nrole = viewer\n\n")
    app.admin_port = port  # type: ignore[attr-defined]
    return port


@dataclass
class Answer:
    code: int
    body: bytes
    headers: dict = field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


def call(port: int, method: str, path: str, auth=OPERATOR, content_type: str | None = "application/json",
         timeout: float = 30) -> Answer:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = None
    if method == "POST":
        data = b"{}"
        if content_type:
            headers["Content-Type"] = content_type
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Answer(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read(), dict(e.headers))


def job(port: int, job_id: str) -> dict:
    answer = call(port, "GET", f"/api/v1/jobs/{job_id}")
    assert answer.code == 200, answer.body
    return answer.json()


def jobs(port: int, **filters) -> list[dict]:
    query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
    answer = call(port, "GET", f"/api/v1/jobs?{query}")
    assert answer.code == 200, answer.body
    return answer.json()["jobs"]


def admin_cli(port: int, *args: str, creds=OPERATOR, tmp=None) -> subprocess.CompletedProcess:
    """``phaserlink-admin`` as a user runs it (credentials in the environment)."""
    env = {"PATH": "/usr/bin:/bin", "PHASERLINK_ADMIN_USER": creds[0], "PHASERLINK_ADMIN_PASSWORD": creds[1]}
    import os

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "phaserlink.admin.cli", "--url", f"http://127.0.0.1:{port}", *args],
                          capture_output=True, text=True, env=env, timeout=60)


class Browserless:
    """The page's form login with a cookie jar (what a browser does, minus JS)."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  _NoRedirect())

    def get(self, path: str) -> Answer:
        try:
            with self.opener.open(self.base + path, timeout=30) as r:
                return Answer(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.read(), dict(e.headers))

    def post(self, path: str, fields: dict[str, str]) -> Answer:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(urllib.request.Request(self.base + path, data=data), timeout=30) as r:
                return Answer(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.read(), dict(e.headers))

    def login(self, user: str, password: str) -> str:
        form = self.get("/")
        token = re.search(rb'name="csrf" value="([^"]+)"', form.body).group(1).decode()
        answer = self.post("/login", {"name": user, "password": password, "csrf": token})
        assert answer.code == 303, answer.body
        page = self.get("/")
        return re.search(rb'name="csrf" value="([^"]+)"', page.body).group(1).decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wait_console(app: Appliance, timeout: float = 20) -> None:
    wait_for_port(app.admin_port, timeout=timeout)  # type: ignore[attr-defined]

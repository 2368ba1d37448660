"""The console's JSON API, page and /metrics on a fake printer side
(IPrinterControl), driven over HTTP bytes on a fake transport."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from phaserlink.admin.auth import AdminAccount
from phaserlink.admin.service import build_site
from phaserlink.passwords import PasswordHash, hash_password
from support.console import FakeControl, basic, exchange

JSON = {"Content-Type": "application/json"}


def account(name: str, password: str, role: str) -> AdminAccount:
    return AdminAccount(name, PasswordHash.parse(hash_password(password, iterations=1000)), role)


@pytest.fixture
def console():
    clock = task.Clock()
    control = FakeControl(("demo", "office"))
    accounts = {"olga": account("olga", "op-secret", "operator"), "vic": account("vic", "view-secret", "viewer")}
    site, metrics = build_site(control, None, accounts, clock, printer_names=["demo", "office"])

    class Console:
        pass

    c = Console()
    c.clock, c.control, c.site, c.metrics = clock, control, site, metrics
    c.get = lambda path, auth=("olga", "op-secret"), **kw: exchange(
        site, clock, "GET", path, headers=basic(*auth) if auth else {}, **kw)
    c.post = lambda path, auth=("olga", "op-secret"), headers=JSON, **kw: exchange(
        site, clock, "POST", path, headers={**(basic(*auth) if auth else {}), **(headers or {})}, **kw)
    return c


def test_no_credentials_is_401_with_a_basic_challenge(console):
    r = console.get("/api/v1/jobs", auth=None)
    assert r.code == 401
    assert r.header("www-authenticate").startswith("Basic realm=")


def test_wrong_password_is_401_late_and_counted(console):
    r = console.get("/api/v1/jobs", auth=("olga", "wrong"), settle=0.5)
    assert r.body == b""  # not answered yet: a failure waits FAILURE_DELAY
    r = console.get("/api/v1/jobs", auth=("olga", "wrong"))
    assert r.code == 401
    families = {f.name: f for f in text_string_to_metric_families(console.metrics.render().decode())}
    assert families["phaserlink_console_failed_logins"].samples[0].value == 2


def test_jobs_list_names_and_pagination(console):
    for i in range(5):
        console.control.add_job(f"j{i}", created=1000.0 + i)
    r = console.get("/api/v1/jobs?limit=2")
    assert r.code == 200
    body = r.json()
    assert [j["id"] for j in body["jobs"]] == ["j4", "j3"]
    assert set(body["jobs"][0]) >= {"id", "printer", "sender", "title", "state", "state_reasons", "size",
                                    "pages", "fragments", "auth", "created"}
    second = console.get(f"/api/v1/jobs?limit=2&cursor={body['next']}").json()
    assert [j["id"] for j in second["jobs"]] == ["j2", "j1"]


def test_job_has_timeline_and_unknown_is_404(console):
    console.control.add_job("j1")
    r = console.get("/api/v1/jobs/j1")
    assert r.json()["timeline"][0].keys() >= {"at", "state", "state_reasons", "by"}
    assert console.get("/api/v1/jobs/nope").code == 404
    assert console.post("/api/v1/jobs/nope/cancel").code == 404


def test_cancel_200_then_409(console):
    console.control.add_job("j1")
    r = console.post("/api/v1/jobs/j1/cancel")
    assert r.code == 200 and r.json()["state"] == "canceled"
    assert console.control.calls == [("cancel", "j1", "olga")]
    again = console.post("/api/v1/jobs/j1/cancel")
    assert again.code == 409
    assert again.json()["job"]["state"] == "canceled"


def test_viewer_may_read_not_cancel(console):
    console.control.add_job("j1")
    assert console.get("/api/v1/jobs/j1", auth=("vic", "view-secret")).code == 200
    r = console.post("/api/v1/jobs/j1/cancel", auth=("vic", "view-secret"))
    assert r.code == 403
    assert console.control.calls == []


def test_a_form_post_to_the_api_is_refused(console):
    """A browser holding Basic credentials must not be made to cancel by
    another site's form."""
    console.control.add_job("j1")
    r = console.post("/api/v1/jobs/j1/cancel", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.code == 403
    assert console.control.calls == []


def test_login_from_another_address_without_tls_is_refused(console):
    r = console.get("/api/v1/printers", peer="192.0.2.7")
    assert r.code == 403
    assert b"TLS" in r.body


def test_pause_resume_printer(console):
    r = console.post("/api/v1/printers/demo/pause")
    assert r.json() == {**r.json(), "state": "stopped", "state_reasons": ["paused"]}
    assert console.post("/api/v1/printers/demo/pause").code == 409
    assert console.post("/api/v1/printers/demo/resume").json()["state"] == "idle"
    assert console.post("/api/v1/printers/nope/pause").code == 404


def test_bad_filter_is_400(console):
    assert console.get("/api/v1/jobs?state=lost").code == 400
    assert console.get("/api/v1/jobs?since=yesterday-ish").code == 400
    assert console.get("/api/v1/jobs?printer=nope").code == 404


def test_healthz_needs_no_login(console):
    r = console.get("/healthz", auth=None)
    assert (r.code, r.body) == (200, b"ok\n")


def test_metrics_parse_and_jobs_total(console):
    console.metrics.job_finished({"printer": "demo", "state": "canceled", "created": 1.0, "ended": 2.0,
                                  "size": 10}, "pending")
    r = console.get("/metrics")
    assert r.code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(r.body.decode()) for s in f.samples}
    assert samples[("phaserlink_jobs_total", (("printer", "demo"), ("state", "canceled")))] == 1
    assert samples[("phaserlink_jobs_total", (("printer", "office"), ("state", "completed")))] == 0
    assert samples[("phaserlink_jobs_waiting", (("printer", "demo"),))] == 0
    assert console.get("/metrics", auth=None).code == 401


# -- the page ------------------------------------------------------------------


def _cookies(response) -> dict[str, str]:
    jar = {}
    for line in response.headers.get("set-cookie", []):
        name, _, rest = line.partition("=")
        jar[name] = rest.split(";")[0]
    return jar


def _login(console, user="olga", password="op-secret") -> dict[str, str]:
    form = exchange(console.site, console.clock, "GET", "/")
    assert b'action="/login"' in form.body
    login_token = re.search(rb'name="csrf" value="([^"]+)"', form.body).group(1).decode()
    jar = _cookies(form)
    body = f"name={user}&password={password}&csrf={login_token}".encode()
    r = exchange(console.site, console.clock, "POST", "/login", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())})
    assert r.code == 303, r.body
    cookie = [c for c in r.headers["set-cookie"] if c.startswith("phaserlink_console=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    jar.update(_cookies(r))
    return {"Cookie": f"phaserlink_console={jar['phaserlink_console']}"}


def test_page_login_cancel_with_csrf(console):
    console.control.add_job("j1", title="<script>alert(1)</script>")
    cookie = _login(console)
    page = exchange(console.site, console.clock, "GET", "/", headers=cookie)
    assert page.code == 200
    assert b"<script>alert(1)</script>" not in page.body  # escaped by construction
    assert b"&lt;script&gt;" in page.body
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page.body).group(1).decode()
    form = {"Content-Type": "application/x-www-form-urlencoded", **cookie}
    refused = exchange(console.site, console.clock, "POST", "/jobs/j1/cancel", body=b"op=cancel", headers=form)
    assert refused.code == 403
    assert console.control.calls == []
    done = exchange(console.site, console.clock, "POST", "/jobs/j1/cancel",
                    body=f"op=cancel&csrf={csrf}&back=/".encode(), headers=form)
    assert done.code == 303
    assert console.control.calls == [("cancel", "j1", "olga")]


def test_page_login_without_its_token_is_refused(console):
    r = exchange(console.site, console.clock, "POST", "/login", body=b"name=olga&password=op-secret",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.code == 403


def test_page_viewer_sees_no_buttons(console):
    console.control.add_job("j1")
    cookie = _login(console, "vic", "view-secret")
    page = exchange(console.site, console.clock, "GET", "/", headers=cookie)
    assert b"j1" in page.body
    assert b'value="cancel"' not in page.body


# -- configuration --------------------------------------------------------------


def _site_ini(tmp_path, extra: str) -> str:
    path = tmp_path / "site.ini"
    path.write_text(f"[appliance]\nspool = {tmp_path}/var\n" + extra)
    return str(path)


def test_config_console_keys(tmp_path):
    from phaserlink import config

    h = hash_password("x", iterations=1000)
    site = config.load(_site_ini(tmp_path, f"admin_listen = tcp:0:interface=127.0.0.1\nhistory_days = 7\n"
                                           f"[admin:olga]\npassword = {h}\nrole = operator\n"))
    assert site.console.listen == ("tcp:0:interface=127.0.0.1",)
    assert site.console.history_days == 7
    assert site.console.admins["olga"].role == "operator"
    assert config.load(_site_ini(tmp_path, "")).console.listen == ()


@pytest.mark.parametrize("extra, where, why", [
    ("admin_listen = tcp:0\n", "[appliance] admin_listen", "at least one [admin:NAME]"),
    ("admin_listen = nonsense:0\n", "[appliance] admin_listen", "not a Twisted server endpoint"),
    ("history_days = 0\n", "[appliance] history_days", "more than 0 days"),
    ("[admin:olga]\nrole = operator\n", "[admin:olga] password", "is required"),
    ("[admin:olga]\npassword = HASH\nrole = boss\n", "[admin:olga] role", "not one of viewer, operator"),
])
def test_config_console_errors_name_the_key(tmp_path, extra, where, why):
    from phaserlink import config

    extra = extra.replace("HASH", hash_password("x", iterations=1000))
    with pytest.raises(config.ConfigError) as e:
        config.load(_site_ini(tmp_path, extra))
    assert where in str(e.value) and why in str(e.value)

"""Issue 9 acceptance: names a script relies on, on the console's API
over a fake printer side (the appliance-level cases are in
test_accept9_sender_hold.py and test_console_appliance.py)."""

from __future__ import annotations

from test_console_api import console  # noqa: F401  (the fixture)


def test_the_next_cursor_pages_whichever_name_the_script_sends_it_under(console):  # noqa: F811
    for i in range(5):
        console.control.add_job(f"j{i}", created=1000.0 + i)
    first = console.get("/api/v1/jobs?limit=2").json()
    assert set(first) == {"jobs", "next"} and [j["id"] for j in first["jobs"]] == ["j4", "j3"]
    by_next = console.get(f"/api/v1/jobs?limit=2&next={first['next']}").json()
    by_cursor = console.get(f"/api/v1/jobs?limit=2&cursor={first['next']}").json()
    assert [j["id"] for j in by_next["jobs"]] == [j["id"] for j in by_cursor["jobs"]] == ["j2", "j1"]
    last = console.get(f"/api/v1/jobs?limit=2&next={by_next['next']}").json()
    assert [j["id"] for j in last["jobs"]] == ["j0"] and last["next"] is None


def test_printer_and_job_views_have_the_issues_names(console):  # noqa: F811
    console.control.add_job("j1")
    [printer] = [p for p in console.get("/api/v1/printers").json()["printers"] if p["name"] == "demo"]
    assert {"name", "state", "state_reasons", "jobs_waiting", "output"} <= set(printer)
    assert printer["state"] in ("idle", "processing", "stopped")
    assert console.get("/api/v1/printers/nope").code == 404
    job = console.get("/api/v1/jobs/j1").json()
    assert {"id", "printer", "sender", "title", "state", "state_reasons", "size", "pages", "fragments", "auth",
            "created", "timeline"} <= set(job)
    assert all({"at", "state", "state_reasons", "by"} <= set(e) for e in job["timeline"])
    assert console.post("/api/v1/jobs/nope/cancel").code == 404
    assert console.post("/api/v1/printers/nope/pause").code == 404

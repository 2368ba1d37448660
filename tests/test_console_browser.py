"""The console page in a real browser: Debian's headless Chromium driven
by Selenium through Debian's chromedriver (nothing is downloaded at run
time).  Log in, see the job, press Cancel, see it canceled, and the
printer gets nothing."""

from __future__ import annotations

import os

import pytest

from support.console_http import OPERATOR, call, console_config, job, wait_console
from support.e2e import MARKER, postscript, printer_section, wait_until
from support.peers import require_program
from test_console_appliance import only_job
from test_e2e_crash import send

pytestmark = pytest.mark.timeout(120)

#: Set to a path to keep a screenshot of the console (docs/console.png).
SCREENSHOT_ENV = "PHASERLINK_CONSOLE_SCREENSHOT"


@pytest.fixture
def browser():
    chromium = require_program("chromium")
    driver_path = require_program("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def canceled_row(browser, job_id: str):
    """The job's row once it says canceled, else None (the page may be
    reloading under us: a stale row is no row yet)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        for row in browser.find_elements(By.ID, f"job-{job_id}"):
            if "canceled" in row.text:
                return row
    except StaleElementReferenceException:
        pass
    return None


def test_log_in_cancel_in_the_browser_prints_nothing(appliance, tmp_path, browser):
    from selenium.webdriver.common.by import By

    out = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out}") + printer_section(
        "office", f"file:{tmp_path / 'office'}")
    port = console_config(appliance)
    appliance.start()
    wait_console(appliance)
    assert call(port, "POST", "/api/v1/printers/demo/pause").code == 200
    send(appliance, "demo", postscript(marker=MARKER, seed=b"browser"))
    waiting = only_job(port, "demo", "pending")

    base = f"http://127.0.0.1:{port}/"
    browser.get(base)
    browser.find_element(By.NAME, "name").send_keys(OPERATOR[0])
    browser.find_element(By.NAME, "password").send_keys(OPERATOR[1])
    browser.find_element(By.ID, "login").click()
    row = wait_until(lambda: browser.find_elements(By.ID, f"job-{waiting['id']}"), 15, "the job's row")[0]
    assert "pending" in row.text
    cookie = browser.get_cookie("phaserlink_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    if os.environ.get(SCREENSHOT_ENV):
        browser.save_screenshot(os.environ[SCREENSHOT_ENV])

    row.find_element(By.CSS_SELECTOR, "button.cancel").click()
    # The click posts a form; until the next page has loaded the old row is
    # still there (saying pending), so wait for the row that says canceled.
    row = wait_until(lambda: canceled_row(browser, waiting["id"]), 15, "the page after cancel")
    assert row.find_elements(By.CSS_SELECTOR, "button") == []  # nothing more to do with it
    assert job(port, waiting["id"])["state"] == "canceled"

    browser.find_element(By.LINK_TEXT, waiting["id"]).click()
    timeline = browser.find_element(By.ID, "timeline").text
    assert "canceled" in timeline and OPERATOR[0] in timeline

    assert call(port, "POST", "/api/v1/printers/demo/resume").code == 200
    nxt = postscript(marker=MARKER, seed=b"after-cancel")
    send(appliance, "demo", nxt)
    wait_until(lambda: out.exists() and len(list(out.iterdir())) == 1, 30, "the next job printed", appliance.log)
    [printed] = list(out.iterdir())
    assert printed.read_bytes() == nxt  # and never the canceled job

"""The page in a real headless browser: Debian's chromium, driven through chromium-driver.

Skipped, saying why, where they are missing (`apt-get install chromium chromium-driver`;
.ci/run installs them). Each test starts its own browser with a fresh profile in its
tmp_path, and the page from a real ``tuned web`` on a real daemon.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from gates import Gate
from test_web import PY, WAIT, submit, wait_event
from webpage import WebProcess, start_web

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)
# Reports loss 1/i, then waits at the gate GATE<i> before the next report.
STEPS = """import fcntl, sys
from tuned_client import tune
for i in range(1, 4):
    tune.report({"loss": 1.0 / i, "accuracy": i / 4})
    with open(sys.argv[1] + str(i)) as gate: fcntl.flock(gate, fcntl.LOCK_SH)
"""


def chrome_options(profile: Path) -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900",
    ):  # fmt: skip
        options.add_argument(arg)
    return options


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drv = webdriver.Chrome(service=Service(str(DRIVER)), options=chrome_options(tmp_path / "p"))
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture
def web(daemon: RunningDaemon) -> Iterator[WebProcess]:
    w = start_web(daemon)
    yield w
    w.stop()


def until(drv: Any, script: str, timeout: float = 60) -> Any:
    """Wait for the page's own state (a JS expression) to become truthy."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(f"return {script}")
    )


def test_the_page_loads_only_with_the_token(browser: Any, web: WebProcess) -> None:
    bare = f"http://127.0.0.1:{web.port}/"
    browser.get(bare)
    assert "open the URL with the token" in browser.find_element("tag name", "body").text
    browser.get(bare + "?token=" + "x" * len(web.token))  # refused once the page tries it
    until(browser, "document.body.textContent.includes('open the URL with the token')")
    browser.get(web.url)
    until(browser, "document.getElementById('conn').textContent === 'live'")
    assert browser.current_url == bare  # the token left the address bar
    assert browser.title == "tuned"
    browser.get(bare)  # the token the page kept from the first visit (localStorage)
    until(browser, "document.getElementById('conn').textContent === 'live'")


def test_a_running_experiments_curve_grows_as_trials_report(
    browser: Any, web: WebProcess, daemon: RunningDaemon, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gates = {step: Gate(tmp_path / f"gate{step}") for step in (1, 2, 3)}
    exp = submit(
        daemon, "--name", "growing", "--metric", "loss", "--mode", "min", "--grid", "w=1,2",
        "--", PY, "-c", STEPS, str(gate), "{w}",
    )  # fmt: skip
    exp_id = exp["experiment_id"]
    browser.get(web.url)
    row = f"document.querySelector('tr[data-exp=\"{exp_id}\"]')"
    until(browser, f"{row} && {row}.textContent.includes('growing')")
    browser.execute_script(f"{row}.click()")
    until(browser, "window.tunedStats.curvePoints === 2")  # one report from each trial
    assert browser.execute_script("return window.tunedStats.curveSeries") == 2
    assert browser.find_element("id", "metric").get_attribute("value") == "loss"
    for step in (1, 2):
        gates[step].open()
        until(browser, f"window.tunedStats.curvePoints === {2 * (step + 1)}")
    best = browser.find_element("id", "exp-best").text
    assert "loss=0.33333 (min)" in best
    table = browser.find_element("id", "trials").text
    assert "accuracy" in table and "0.75" in table
    gates[3].open()
    wait_event(daemon, exp_id, "experiment_finished")
    until(browser, "document.getElementById('exp-summary').textContent.startsWith('finished')")


def test_a_cancel_from_the_page_ends_the_trial(
    browser: Any, web: WebProcess, daemon: RunningDaemon, tmp_path: Path
) -> None:
    never = Gate(tmp_path / "never")  # the trial runs until cancelled
    exp = submit(daemon, "--", PY, "-c", WAIT, str(never))
    exp_id, trial = exp["experiment_id"], exp["trial_ids"][0]
    wait_event(daemon, exp_id, "trial_started")
    browser.get(web.url)
    browser.execute_script(f"location.hash = '#/exp/{exp_id}/{trial}'")
    until(browser, "document.getElementById('trial-stdout').textContent.includes('hello')")
    button = browser.find_element("id", "trial-cancel")
    until(browser, "!document.getElementById('trial-cancel').disabled")
    button.click()
    browser.switch_to.alert.accept()
    ended = wait_event(daemon, exp_id, "trial_finished")
    assert ended["trial_id"] == trial and ended["status"] == "ERROR"
    until(
        browser,
        f"document.querySelector('tr[data-trial=\"{trial}\"]').textContent.includes('ERROR')",
    )
    assert browser.find_element("id", "notice").text == f"cancelled {trial}"

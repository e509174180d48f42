"""The page (``tuned web``): how fast a big experiment renders, and what open pages cost.

1. An experiment of 1,000 trials that report 100 results each runs to its end;
   then ``tuned web`` starts and headless chromium opens the experiment's view.
   The figure is the page's own clock (``performance.now()`` from navigation
   start) when its table and learning curves are first drawn: cold (the web
   process reads the 1,000 result files on that first visit) and warm.
2. Trivial-trial throughput alone, and with the web process and 10 pages open
   (ten chromium tabs on the overview, which every new experiment and result
   updates), paired as in ``bench.subscribers``: the loss is the median of the
   crowded runs against the mean of the alone runs around each.

Needs Debian's chromium and chromium-driver (``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .daemon import BenchDaemon, bench_daemon
from .figures import Figure
from .throughput import TRIAL_CPU, _clients

_FILL = """
import math, sys
from tuned_client import tune
RESULTS = int(sys.argv[2])  # captured with the function: a trial has its own argv
def curve(config):
    for i in range(1, RESULTS + 1):
        tune.report({"loss": math.exp(-config["lr"] * i) + config["lr"], "acc": 1 - 1 / i})
tuner = tune.Tuner(
    tune.with_resources(curve, {"cpu": 0.25}),
    param_space={"lr": tune.grid_search([i / 1000 for i in range(1, int(sys.argv[1]) + 1)])},
    tune_config=tune.TuneConfig(metric="loss", mode="min"),
    run_config=tune.RunConfig(verbose=0, name="big"),
)
print(tuner.fit().num_errors)
"""


@contextmanager
def web(d: BenchDaemon) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuned", "web", "--socket", str(d.socket)],
        env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        url = next(line.strip() for line in proc.stdout if "http://" in line)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tuned-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900",
    ):  # fmt: skip
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _until(drv: Any, script: str, timeout: float = 120) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.02).until(
        lambda x: x.execute_script(f"return {script}")
    )


def render_ms(trials: int, results: int) -> tuple[float, float, int]:
    """(cold ms, warm ms, points drawn) for the experiment's view."""
    with bench_daemon("--num-cpus", "2") as d:
        out = subprocess.run(
            [sys.executable, "-c", _FILL, str(trials), str(results)],
            env=d.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == "0", out
        exp_id = _experiment_id(d)
        with web(d) as url, chromium() as drv:
            drv.get(url)  # the token; the overview
            times = []
            for _ in range(2):
                drv.get("about:blank")
                drv.get(url.split("?")[0] + f"#/exp/{exp_id}")
                times.append(_until(drv, "window.tunedStats.rendered"))
            points = int(drv.execute_script("return window.tunedStats.curvePoints"))
    return times[0], times[1], points


def _experiment_id(d: BenchDaemon) -> str:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "tuned", "ls", "--json"],
        env=d.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(json.loads(out.stdout)[0]["experiment_id"])


def throughput_loss(n: int, pages: int = 10, rounds: int = 3) -> tuple[float, list[float], float]:
    crowded: list[float] = []
    with bench_daemon("--num-cpus", "2") as d:
        _clients(d, 200, 1)  # warm up
        alone = [n / _clients(d, n, 1)]
        for _ in range(rounds):
            with web(d) as url, chromium() as drv:
                drv.get(url)
                for _ in range(pages - 1):
                    drv.switch_to.new_window("tab")
                    drv.get(url.split("?")[0])
                for handle in drv.window_handles:
                    drv.switch_to.window(handle)
                    _until(drv, "document.getElementById('conn').textContent === 'live'")
                crowded.append(n / _clients(d, n, 1))
            alone.append(n / _clients(d, n, 1))
    losses = [
        (1 - c / ((a + b) / 2)) * 100 for c, a, b in zip(crowded, alone, alone[1:], strict=False)
    ]
    return max(0.0, statistics.median(losses)), losses, statistics.mean(alone)


def measure(trials: int = 1_000, results: int = 100, n: int = 1_000) -> list[Figure]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        note = "needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        return [Figure("page render, 1,000 trials x 100 results", 1000, None, "ms", note=note)]
    t0 = time.perf_counter()
    cold, warm, points = render_ms(trials, results)
    loss, losses, alone = throughput_loss(n)
    return [
        Figure(
            f"page render, {trials:,} trials x {results} results",
            1000,
            cold,
            "ms",
            note=f"first visit (the web process reads {trials:,} result files), "
            f"{warm:.0f} ms warm; {points:,} points drawn; headless chromium",
        ),
        Figure(
            "throughput loss with tuned web and 10 pages open",
            5,
            loss,
            "%",
            note=f"median of {len(losses)} paired runs of {n:,} trials "
            f"({', '.join(f'{x:.1f}' for x in losses)} %); {alone:.0f} /s alone; "
            f"{TRIAL_CPU:g} CPU; {time.perf_counter() - t0:.0f} s in all",
        ),
    ]


def main() -> None:
    for fig in measure():
        print(fig.line(), f"({fig.note})" if fig.note else "")


if __name__ == "__main__":
    main()

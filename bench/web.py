"""The page (``tuned web``): how fast a big experiment renders, and what open pages cost.

1. An experiment of 1,000 trials that report 100 results each runs to its end;
   then ``tuned web`` starts, and headless chromium opens the printed URL (the
   overview) and then the experiment's view, as a user would. The figure is the
   page's own clock (``performance.now()`` from navigation start) at the first
   animation frame after the one that drew its table and every curve: the first
   visit, then the median of three more (the web process has the curves by then).
   The web process reads the newest experiments' result files in the background
   from its start (``tuned.web.curves``); the note says how long after its start
   the first visit came, so a visit that waited for that reading shows it.
2. What the web process and 10 open pages cost the daemon: two identical
   daemons run the same trivial-trial sweep at the same moment, one followed
   by ``tuned web`` with ten chromium tabs on its overview (which every new
   experiment and result updates), the other by nothing. When the first sweep
   ends, each daemon's trials done so far and CPU time spent give the
   throughput loss and the daemon's CPU per trial, followed against alone; the
   figures are medians over rounds, the followed daemon alternating. Side by
   side, whatever else the machine runs slows both alike: run one after the
   other on this shared 2-core box, alone and crowded runs of the same sweep
   differed by up to 40% either way. Chromium's and the web process's own CPU
   competes with both daemons alike too, so it is given on its own (share of a
   core over the same window): a browser on the same machine takes that much
   from whatever else runs there. Headless chromium draws every tab as if it
   were in view; a browser's background tabs draw nothing.

Needs Debian's chromium and chromium-driver (``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from tuned_client import protocol as p
from tuned_client.connection import Connection

from .daemon import BenchDaemon, bench_daemon
from .figures import Figure
from .throughput import _CLIENT, TRIAL_CPU, _clients

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
def web(d: BenchDaemon) -> Iterator[tuple[str, psutil.Process]]:
    """``tuned web`` on the daemon: its URL and its process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuned", "web", "--socket", str(d.socket)],
        env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        url = next(line.strip() for line in proc.stdout if "http://" in line)
        yield url, psutil.Process(proc.pid)
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


def _cpu(procs: list[psutil.Process], children: bool = True) -> float:
    """CPU seconds of these processes (and all their children)."""
    total = 0.0
    for root in procs:
        try:
            tree = [root, *root.children(recursive=True)] if children else [root]
        except psutil.Error:
            continue
        for proc in tree:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    return total


def render_ms(trials: int, results: int, visits: int = 4) -> dict[str, Any]:
    """The experiment's view: each visit's ms to drawn, and the first one's details."""
    with bench_daemon("--num-cpus", "2") as d:
        out = subprocess.run(
            [sys.executable, "-c", _FILL, str(trials), str(results)],
            env=d.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == "0", out
        exp_id = _experiment_id(d)
        with web(d) as (url, _), chromium() as drv:
            started = time.monotonic()
            drv.get(url)  # the token; the overview
            times, first = [], {}
            for _ in range(visits):
                drv.get("about:blank")
                after = time.monotonic() - started
                drv.get(url.split("?")[0] + f"#/exp/{exp_id}")
                times.append(_until(drv, "window.tunedStats.rendered"))
                if not first:
                    first = drv.execute_script("return window.tunedStats")
                    first["after_start_s"] = after
    return {"times": times, **first}


def _experiment_id(d: BenchDaemon) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tuned", "ls", "--json"],
        env=d.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(json.loads(out.stdout)[0]["experiment_id"])


def _quiet(procs: list[psutil.Process], timeout: float = 30) -> None:
    """Wait until these processes (the web process reading at start-up, the tabs loading)
    settle under 10% of a core."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu = _cpu(procs)
        time.sleep(0.5)
        if _cpu(procs) - cpu < 0.05:
            return


def _start(d: BenchDaemon, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLIENT, str(n), str(TRIAL_CPU)],
        env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _done(d: BenchDaemon) -> int:
    """Trials ended so far in the daemon's running experiment (the newest one)."""
    with Connection.open(d.socket, autostart=False, client="bench") as conn:
        status = conn.request(p.GetStatus())
    newest = max(status.experiments, key=lambda e: e.started_at)
    return int(newest.counts.get("TERMINATED", 0) + newest.counts.get("ERROR", 0))


def _race(followed: BenchDaemon, other: BenchDaemon, n: int) -> list[tuple[int, float]]:
    """Both daemons run an n-trial sweep at once; for each (followed first): trials done
    and the daemon's CPU seconds when the first sweep ends."""
    pair = (followed, other)
    daemons = [psutil.Process(d.pid) for d in pair]
    cpu = [_cpu([proc], children=False) for proc in daemons]  # the daemon, not its trials
    clients = [_start(d, n) for d in pair]
    while all(c.poll() is None for c in clients):
        time.sleep(0.005)
    spent = [_cpu([proc], children=False) - c for proc, c in zip(daemons, cpu, strict=True)]
    done = [n if c.poll() is not None else _done(d) for c, d in zip(clients, pair, strict=True)]
    for c in clients:
        out, err = c.communicate()
        if c.returncode != 0:
            raise RuntimeError(f"a client failed:\n{out}\n{err}")
    return list(zip(done, spent, strict=True))


def throughput_loss(n: int, pages: int = 10, rounds: int = 6) -> dict[str, Any]:
    """Rounds of two sweeps side by side, one daemon followed by tuned web and pages."""
    losses: list[float] = []  # % fewer trials done by the followed daemon
    cpus: list[float] = []  # % more daemon CPU per trial
    rates: list[float] = []  # trials/s of the daemon alone
    web_cpu, browser_cpu, seconds = 0.0, 0.0, 0.0
    with bench_daemon("--num-cpus", "2") as a, bench_daemon("--num-cpus", "2") as b:
        for d in (a, b):
            _clients(d, 200, 1)  # warm up
        for r in range(rounds):
            followed, other = (a, b) if r % 2 == 0 else (b, a)
            with web(followed) as (url, proc), chromium() as drv:
                drv.get(url)
                for _ in range(pages - 1):
                    drv.switch_to.new_window("tab")
                    drv.get(url.split("?")[0])
                for handle in drv.window_handles:
                    drv.switch_to.window(handle)
                    _until(drv, "document.getElementById('conn').textContent === 'live'")
                browser = [psutil.Process(drv.service.process.pid)]  # chromedriver, chromium
                _quiet([proc, *browser])
                before = (_cpu([proc]), _cpu(browser), time.perf_counter())
                (done_f, cpu_f), (done_o, cpu_o) = _race(followed, other, n)
                window = time.perf_counter() - before[2]
                web_cpu += _cpu([proc]) - before[0]
                browser_cpu += _cpu(browser) - before[1]
            seconds += window
            losses.append((1 - done_f / done_o) * 100)
            cpus.append(((cpu_f / done_f) / (cpu_o / done_o) - 1) * 100)
            rates.append(done_o / window)
    return {
        "losses": losses,
        "cpus": cpus,
        "rate": statistics.median(rates),
        "web_core": web_cpu / seconds * 100,
        "browser_core": browser_cpu / seconds * 100,
    }


def measure(trials: int = 1_000, results: int = 100, n: int = 1_000) -> list[Figure]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        note = "needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        return [Figure("page render, 1,000 trials x 100 results", 1000, None, "ms", note=note)]
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    page = render_ms(trials, results)
    cost = throughput_loss(n)
    load = max(load, os.getloadavg()[0])
    first, *later = page["times"]
    rounds = len(cost["losses"])
    return [
        Figure(
            f"page render, {trials:,} trials x {results} results",
            1000,
            first,
            "ms",
            note=f"first visit, {page['after_start_s']:.1f} s after `tuned web` started "
            f"(snapshot of {page['snapshotBytes'] / 1e6:.1f} MB in at {page['snapshotAt']:.0f} ms, "
            f"drawn in {page['drawMs']:.0f} ms); later visits {statistics.median(later):.0f} ms "
            f"(median of {len(later)}); {page['curvePoints']:,} points drawn; headless chromium",
        ),
        Figure(
            "throughput loss with tuned web and 10 pages open",
            5,
            max(0.0, statistics.median(cost["losses"])),
            "%",
            note=f"median of {rounds} rounds of two daemons side by side, {n:,} trivial "
            f"trials of {TRIAL_CPU:g} CPU each ({', '.join(f'{x:+.1f}' for x in cost['losses'])} "
            f"%); {cost['rate']:.0f} /s alone beside the other; meanwhile tuned web took "
            f"{cost['web_core']:.1f} % of a core and chromium's 10 tabs "
            f"{cost['browser_core']:.1f} %",
        ),
        Figure(
            "daemon CPU per trial with tuned web and 10 pages open, vs alone",
            5,
            max(0.0, statistics.median(cost["cpus"])),
            "%",
            note=f"same rounds ({', '.join(f'{x:+.1f}' for x in cost['cpus'])} %); "
            f"load average up to {load:.1f} on {os.cpu_count()} CPUs; "
            f"{time.perf_counter() - t0:.0f} s in all",
        ),
    ]


def main() -> None:
    for fig in measure():
        ratio = f" = {fig.ratio()} x the goal" if fig.ratio() else ""
        print(f"{fig.line()}{ratio}", f"({fig.note})" if fig.note else "")


if __name__ == "__main__":
    main()

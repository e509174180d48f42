"""The page (``tuned web``): how fast a big experiment renders, and what open pages cost.

1. An experiment of 1,000 trials that report 100 results each runs to its end;
   then ``tuned web`` starts, and headless chromium opens the printed URL (the
   overview) and then the experiment's view, as a user would. The figure is the
   page's own clock (``performance.now()`` from navigation start) at the first
   animation frame after the one that drew its table and every curve. The figure
   is the first visit, the median over three fresh web processes (and browsers);
   the note gives the two later visits of each too (the web process has the
   curves by then). The web process reads the newest experiments' result files in the background
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

Before and after in one run: ``python -m bench.web --before main`` (or
``TUNED_BENCH_WEB_BEFORE=main python -m bench --only web``) also runs the web
process and its page from that git ref's tree (``git archive``), against the
same daemons: the render is measured for each, and the throughput rounds
alternate the two. The ref's page must keep ``window.tunedStats.rendered``.

Needs Debian's chromium and chromium-driver (``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from pathlib import Path
from typing import Any

import psutil
from tuned_client import protocol as p
from tuned_client.connection import Connection

from .daemon import REPO, BenchDaemon, bench_daemon
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
def source_tree(ref: str) -> Iterator[Path]:
    """The ``tuned`` and ``tuned_client`` packages of a git ref, in a temp folder."""
    tmp = Path(tempfile.mkdtemp(prefix="tuned-bench-tree-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "tuned", "client/tuned_client"],
            capture_output=True, check=True,
        )  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def web(d: BenchDaemon, tree: Path | None = None) -> Iterator[tuple[str, psutil.Process]]:
    """``tuned web`` on the daemon (from ``tree``'s code if given): its URL and process."""
    env = d.env()
    if tree is not None:  # run in the tree: ``-m`` puts the working folder first on sys.path
        env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "client")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuned", "web", "--socket", str(d.socket)],
        env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
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


def _visits(d: BenchDaemon, tree: Path | None, exp_id: str, visits: int) -> dict[str, Any]:
    """A fresh web process and browser: each visit's ms to drawn, the first one's details."""
    with web(d, tree) as (url, _), chromium() as drv:
        started = time.monotonic()
        drv.get(url)  # the token; the overview
        times: list[float] = []
        first: dict[str, Any] = {}
        for _ in range(visits):
            drv.get("about:blank")
            after = time.monotonic() - started
            drv.get(url.split("?")[0] + f"#/exp/{exp_id}")
            times.append(_until(drv, "window.tunedStats.rendered"))
            if not first:
                first = drv.execute_script("return window.tunedStats")
                first["after_start_s"] = after
    return {"times": times, **first}


def render_ms(
    trials: int, results: int, trees: list[Path | None], visits: int = 3, repeats: int = 3
) -> list[dict[str, Any]]:
    """The experiment's view, for each tree's web process on the same daemon, ``repeats``
    fresh web processes each: the first visits' ms to drawn (the median one's details)
    and the later visits'."""
    out: list[dict[str, Any]] = []
    with bench_daemon("--num-cpus", "2") as d:
        fill = subprocess.run(
            [sys.executable, "-c", _FILL, str(trials), str(results)],
            env=d.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert fill.stdout.strip() == "0", fill
        exp_id = _experiment_id(d)
        visited: list[list[dict[str, Any]]] = [[] for _ in trees]
        for _ in range(repeats):  # the trees in turn: a load that comes and goes hits both
            for i, tree in enumerate(trees):
                visited[i].append(_visits(d, tree, exp_id, visits))
    for runs in visited:
        runs.sort(key=lambda run: float(run["times"][0]))
        middle = runs[len(runs) // 2]  # the median first visit, with its details
        later = [t for run in runs for t in run["times"][1:]]
        out.append({**middle, "firsts": [run["times"][0] for run in runs], "later": later})
    return out


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


def throughput_loss(
    n: int, trees: list[Path | None], pages: int = 10, rounds: int = 6
) -> list[dict[str, Any]]:
    """Rounds of two sweeps side by side, one daemon followed by tuned web and pages;
    with several trees, each takes two rounds in turn (each daemon followed once)."""
    runs = [
        {"losses": [], "cpus": [], "rates": [], "web": 0.0, "browser": 0.0, "seconds": 0.0}
        for _ in trees
    ]  # losses: % fewer trials done by the followed daemon; cpus: % more daemon CPU per
    # trial; rates: trials/s of the daemon alone
    with bench_daemon("--num-cpus", "2") as a, bench_daemon("--num-cpus", "2") as b:
        for d in (a, b):
            _clients(d, 200, 1)  # warm up
        for r in range(rounds * len(trees)):
            followed, other = (a, b) if r % 2 == 0 else (b, a)
            i = (r // 2) % len(trees)
            run = runs[i]
            with web(followed, trees[i]) as (url, proc), chromium() as drv:
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
                run["web"] += _cpu([proc]) - before[0]
                run["browser"] += _cpu(browser) - before[1]
            run["seconds"] += window
            run["losses"].append((1 - done_f / done_o) * 100)
            run["cpus"].append(((cpu_f / done_f) / (cpu_o / done_o) - 1) * 100)
            run["rates"].append(done_o / window)
    return [
        {
            "losses": run["losses"],
            "cpus": run["cpus"],
            "rate": statistics.median(run["rates"]),
            "web_core": run["web"] / run["seconds"] * 100,
            "browser_core": run["browser"] / run["seconds"] * 100,
        }
        for run in runs
    ]


def _figures(
    label: str, trials: int, results: int, n: int, page: dict[str, Any], cost: dict[str, Any]
) -> list[Figure]:
    first, later = statistics.median(page["firsts"]), page["later"]
    rounds = len(cost["losses"])
    drawn = (
        f"script ran at {page['scriptAt']:.0f} ms, stream open at {page['openAt']:.0f} ms, "
        f"snapshot of {page['snapshotBytes'] / 1e6:.1f} MB in at {page['snapshotAt']:.0f} ms, "
        f"parsed and folded in {page['applyMs']:.0f} ms, drawn in {page['drawMs']:.0f} ms "
        f"(table {page['tableMs']:.0f}, curves {page['curvesMs']:.0f}), the charts' strokes "
        f"done at {page.get('scriptDoneAt', 0):.0f} ms; "
        if "drawMs" in page
        else ""
    )
    return [
        Figure(
            f"page render, {trials:,} trials x {results} results{label}",
            1000,
            first,
            "ms",
            note=f"first visit, median of {len(page['firsts'])} web processes "
            f"({', '.join(f'{x:.0f}' for x in page['firsts'])} ms); the median one "
            f"{page['after_start_s']:.1f} s after `tuned web` started ({drawn}later visits "
            f"{statistics.median(later):.0f} ms, median of {len(later)}); "
            f"{page.get('curvePoints', 0):,} points drawn; headless chromium",
        ),
        Figure(
            f"throughput loss with tuned web and 10 pages open{label}",
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
            f"daemon CPU per trial with tuned web and 10 pages open, vs alone{label}",
            5,
            max(0.0, statistics.median(cost["cpus"])),
            "%",
            note=f"same rounds ({', '.join(f'{x:+.1f}' for x in cost['cpus'])} %)",
        ),
    ]


def measure(
    trials: int = 1_000, results: int = 100, n: int = 1_000, before: str = ""
) -> list[Figure]:
    """The figures of this tree's web process, and first those of ``before`` (a git ref)
    measured in the same run, named with "(before: REF)"."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        note = "needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        return [Figure("page render, 1,000 trials x 100 results", 1000, None, "ms", note=note)]
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        trees: list[Path | None] = [stack.enter_context(source_tree(before))] if before else []
        trees.append(None)
        pages = render_ms(trials, results, trees)
        costs = throughput_loss(n, trees)
    load = max(load, os.getloadavg()[0])
    labels = [f" (before: {before})"] if before else []
    labels.append("")
    figures = [
        fig
        for label, page, cost in zip(labels, pages, costs, strict=True)
        for fig in _figures(label, trials, results, n, page, cost)
    ]
    last = figures[-1]
    figures[-1] = dataclasses.replace(
        last,
        note=f"{last.note}; load average up to {load:.1f} on {os.cpu_count()} CPUs; "
        f"{time.perf_counter() - t0:.0f} s in all",
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.web")
    parser.add_argument("--before", default="", help="a git ref whose web process to measure too")
    parser.add_argument("--quick", action="store_true", help="500 trials a sweep, not 1,000")
    args = parser.parse_args()
    for fig in measure(n=500 if args.quick else 1_000, before=args.before):
        ratio = f" = {fig.ratio()} x the goal" if fig.ratio() else ""
        print(f"{fig.line()}{ratio}", f"({fig.note})" if fig.note else "")


if __name__ == "__main__":
    main()

"""The cost of results on disk: 8 trials reporting 1,000 results/s in all.

Eight trials of a quarter CPU each report at 125 results/s apiece (paced by
the clock) for a while; once all eight have written results, the daemon's own
CPU time (psutil ``cpu_times``, user + system, children not included) and the
rows in their ``result.json`` files are read at the start and the end of a
window. The figure is the daemon's CPU time over the window as a share of one
core; the same window with the eight trials running but not reporting is the
baseline (the daemon's sampling of running trials, which costs the same either
way), given in the note.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import psutil

from .clients import finish_script, start_script, wait_for
from .daemon import BenchDaemon, bench_daemon
from .figures import Figure

TRIALS = 8
RATE = 1_000  # results per second, all trials together

_CLIENT = """
import sys, time
from tuned_client import tune
def reporter(config):
    rate, seconds = config["rate"], config["seconds"]
    start = time.monotonic()
    if not rate:
        time.sleep(seconds)
        return
    i = 0
    while time.monotonic() - start < seconds:
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        tune.report({"loss": 1.0 / (i + 1), "i": i})
        i += 1
n, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
results = tune.Tuner(
    tune.with_resources(reporter, {"cpu": 0.25}),
    param_space={"i": tune.grid_search(list(range(n))), "rate": rate, "seconds": seconds},
    run_config=tune.RunConfig(verbose=0),
).fit()
assert results.num_errors == 0, results.errors
"""


def _rows(storage: Path) -> int:
    rows = 0
    for path in storage.glob("*/*/result.json"):
        with contextlib.suppress(OSError):
            rows += path.read_bytes().count(b"\n")
    return rows


def _window(d: BenchDaemon, per_trial: float, window: float) -> tuple[float, float]:
    """(daemon CPU share of one core, results/s) over ``window`` seconds mid-run."""
    client = start_script(d, _CLIENT, str(TRIALS), str(per_trial), str(window + 4))
    proc = psutil.Process(d.pid)
    try:
        if per_trial:
            wait_for(
                lambda: len(list(d.storage.glob("*/*/result.json"))) >= TRIALS,
                60,
                "every trial's first result",
            )
        else:
            wait_for(lambda: len(list(d.storage.glob("*/*/stdout"))) >= TRIALS, 60, "the trials")
        time.sleep(0.5)
        cpu0, rows0, t0 = proc.cpu_times(), _rows(d.storage), time.perf_counter()
        time.sleep(window)
        cpu1, rows1, t1 = proc.cpu_times(), _rows(d.storage), time.perf_counter()
    finally:
        finish_script(client)
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return used / (t1 - t0) * 100, (rows1 - rows0) / (t1 - t0)


def measure(window: float = 6.0) -> list[Figure]:
    with bench_daemon("--num-cpus", "2") as d:
        base, _ = _window(d, 0, window)
    with bench_daemon("--num-cpus", "2") as d:
        share, rate = _window(d, RATE / TRIALS, window)
    return [
        Figure(
            f"daemon CPU, {TRIALS} trials reporting {RATE:,} results/s",
            10,
            share,
            "% of a core",
            note=f"{rate:,.0f} results/s measured over {window:g} s; "
            f"same trials not reporting: {base:.1f} %",
        )
    ]


def main() -> None:
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
    for fig in measure(window):
        print(fig.line())


if __name__ == "__main__":
    main()

"""What the default TensorBoard writer costs the seed sweep (issue 19).

``Tuner.fit()`` starts a writer process per experiment when tensorboardX is
installed (it is in the test environment the benchmarks run in). Paired
runs of the seed's example, alternately with and without it
(``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``), in one bench run: ``fit()``'s
time and the script's peak RSS, and how long after ``fit()`` returns the
last trial's event file is complete (the writer has exited).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

from .daemon import BenchDaemon, bench_daemon
from .figures import Figure
from .seed import EXAMPLE, TIMED, TUNER


def _run(d: BenchDaemon, writer: bool) -> tuple[float, float, float | None]:
    """fit() seconds, peak RSS (MiB), seconds from fit()'s return to the files' completion."""
    env = {**d.env(), "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0" if writer else "1"}
    before = set(d.storage.iterdir()) if d.storage.exists() else set()
    out = subprocess.run(
        [sys.executable, "-c", TIMED, TUNER, str(EXAMPLE)], env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    returned = time.perf_counter()
    if out.returncode != 0:
        raise RuntimeError(f"the example failed ({out.returncode}):\n{out.stderr}")
    fields = dict(line.split(" ", 1) for line in out.stderr.splitlines() if line.count(" ") == 1)
    fit, rss = float(fields["FIT_SECONDS"]), int(fields["PEAK_RSS"]) / 2**20
    if not writer:
        return fit, rss, None
    [experiment] = set(d.storage.iterdir()) - before
    fd = os.open(experiment / ".tensorboard.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the writer holds it until every file is complete
    os.close(fd)
    done = time.perf_counter() - returned
    assert len(list(experiment.glob("*/events.out.tfevents.*"))) == 100
    return fit, rss, done


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def measure(pairs: int = 5) -> list[Figure]:
    import importlib.util

    # not imported here: a child's peak RSS starts from its parent's at fork (Linux keeps
    # ru_maxrss across fork and exec), and tensorboardX imports torch
    if importlib.util.find_spec("tensorboardX") is None:
        return [Figure("seed sweep fit(): TensorBoard writer on / off", 1.1, None, "x",
                       note="tensorboardX not installed")]  # fmt: skip
    on: list[tuple[float, float, float | None]] = []
    off: list[tuple[float, float, float | None]] = []
    with bench_daemon("--num-cpus", "2") as d:
        _run(d, False)  # warm the page cache and the daemon
        for _ in range(pairs):
            on.append(_run(d, True))
            off.append(_run(d, False))
    fit_on, fit_off = _median([r[0] for r in on]), _median([r[0] for r in off])
    load = os.getloadavg()[0]
    note = f"median of {pairs} paired runs, 100 trials of 1 CPU on 2 CPUs, load average {load:.0f}"
    return [
        Figure("seed sweep fit(): TensorBoard writer on / off", 1.1, fit_on / fit_off, "x",
               note=f"{note}; {fit_on:.3f} s vs {fit_off:.3f} s"),
        Figure("seed sweep: driver peak RSS with the TensorBoard writer", None,
               _median([r[1] for r in on]), "MiB",
               note=f"{_median([r[1] for r in off]):.1f} MiB without"),
        Figure("seed sweep: TensorBoard files complete after fit() returns", None,
               _median([r[2] or 0.0 for r in on]), "s",
               note="the writer process imports tensorboardX (torch hidden) and catches up"),
    ]  # fmt: skip


if __name__ == "__main__":
    for fig in measure():
        print(fig.row())

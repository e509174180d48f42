"""The seed's basic experiment (100 one-CPU trials) timed end to end.

Three figures, as a user would see them: ``fit()`` alone, the whole script
(interpreter start included) with the daemon already running, and the whole
script when the client has to auto-start the daemon cold.
"""

from __future__ import annotations

import subprocess
import sys
import time

from .daemon import REPO, BenchDaemon, bench_daemon
from .figures import Figure

EXAMPLE = REPO / "examples" / "basic_experiment.py"
TUNER = "tuned_client.tune.tuner"

# Runs a script unchanged, timing Tuner.fit from the outside and reporting peak RSS
# (argv: the module holding Tuner, the script). The Ray Tune side by side uses it too.
TIMED = """
import atexit, importlib, resource, runpy, sys, time
tuner = importlib.import_module(sys.argv[1])
fit = tuner.Tuner.fit
def timed(self):
    t = time.perf_counter()
    try:
        return fit(self)
    finally:
        print(f"FIT_SECONDS {time.perf_counter() - t:.6f}", file=sys.stderr, flush=True)
tuner.Tuner.fit = timed
def peak():
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"PEAK_RSS {kib * 1024}", file=sys.stderr, flush=True)
atexit.register(peak)
runpy.run_path(sys.argv[2], run_name="__main__")
"""


def _run(d: BenchDaemon, timed: bool) -> tuple[float, float | None]:
    argv = [sys.executable, "-c", TIMED, TUNER] if timed else [sys.executable]
    argv.append(str(EXAMPLE))
    t = time.perf_counter()
    out = subprocess.run(argv, env=d.env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if out.returncode != 0 or "score" not in out.stdout:
        raise RuntimeError(f"the example failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    fit = None
    for line in out.stderr.splitlines():
        if line.startswith("FIT_SECONDS "):
            fit = float(line.split()[1])
    return wall, fit


def measure(repeats: int = 3, daemon_args: tuple[str, ...] = ("--num-cpus", "2")) -> list[Figure]:
    fits: list[float] = []
    walls: list[float] = []
    with bench_daemon(*daemon_args) as d:
        _run(d, timed=False)  # warm the page cache and the daemon
        for _ in range(repeats):
            walls.append(_run(d, timed=False)[0])
            fit = _run(d, timed=True)[1]
            assert fit is not None
            fits.append(fit)
    colds: list[float] = []
    for _ in range(repeats):
        with bench_daemon(start=False) as d:
            colds.append(_run(d, timed=False)[0])
    note = f"median of {repeats}, 100 trials of 1 CPU on 2 CPUs"
    return [
        Figure(
            "seed sweep: fit() (daemon running)", 0.5, sorted(fits)[len(fits) // 2], "s", note=note
        ),
        Figure(
            "seed sweep: whole script (daemon running)",
            1.5,
            sorted(walls)[len(walls) // 2],
            "s",
            note=note,
        ),
        Figure(
            "seed sweep: whole script (daemon cold)",
            3.0,
            sorted(colds)[len(colds) // 2],
            "s",
            note=note,
        ),
    ]


def main() -> None:
    for fig in measure():
        print(fig.line())


if __name__ == "__main__":
    main()

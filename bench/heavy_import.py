"""A trainable whose module takes 1 s to import pays it once per worker pool.

A stand-in for torch: a module that sleeps 1 s when imported and appends its
pid to a log. The same sweep runs with it and with an identical module that
imports instantly; the log counts how many trial-side processes imported the
heavy one (the client's own import is not counted), and the two ``fit()``
times differ by about one import, not one per trial.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .clients import run_script
from .daemon import bench_daemon
from .figures import Figure

_MODULE = """
import os, time
time.sleep({delay})
with open(os.environ["BENCH_IMPORT_LOG"], "a") as f:
    f.write(f"{{os.getpid()}}\\n")

def train(config):
    return {{"x": config["i"]}}
"""

_CLIENT = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import importlib
module = importlib.import_module(sys.argv[2])
from tuned_client import tune
n = int(sys.argv[3])
tuner = tune.Tuner(
    tune.with_resources(module.train, {"cpu": 0.25}),
    param_space={"i": tune.grid_search(list(range(n)))},
    run_config=tune.RunConfig(verbose=0),
)
t = time.perf_counter()
results = tuner.fit()
assert results.num_errors == 0 and len(results) == n, results.errors
print(f"FIT_SECONDS {time.perf_counter() - t:.6f}")
print(f"CLIENT_PID {os.getpid()}")
"""


def _sweep(module: str, moddir: Path, n: int) -> tuple[float, int]:
    """fit() seconds, and how many processes other than the client imported the module."""
    log = moddir / f"{module}.log"
    log.write_text("")
    with bench_daemon("--num-cpus", "2") as d:
        out = run_script(
            d, _CLIENT, str(moddir), module, str(n), env={"BENCH_IMPORT_LOG": str(log)}
        )
    pids = [line for line in log.read_text().splitlines() if line and line != out["CLIENT_PID"]]
    return float(out["FIT_SECONDS"]), len(pids)


def measure(n: int = 200) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="tuned-bench-heavy-") as tmp:
        moddir = Path(tmp)
        (moddir / "bench_heavy.py").write_text(_MODULE.format(delay=1.0))
        (moddir / "bench_light.py").write_text(_MODULE.format(delay=0.0))
        light, _ = _sweep("bench_light", moddir, n)
        heavy, imports = _sweep("bench_heavy", moddir, n)
    return [
        Figure(
            f"1 s import, {n} trials: imports paid on the trial side",
            1,
            imports,
            "imports",
            note="one worker pool (zygote) per experiment",
        ),
        Figure(
            f"1 s import, {n} trials: fit()",
            None,
            heavy,
            "s",
            note=f"same sweep, instant import: {light:.2f} s; difference {heavy - light:.2f} s",
        ),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

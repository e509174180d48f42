"""Admission latency: from one trial's end to the next queued trial's first line of code.

On a daemon with one CPU, trials of one CPU run one after another. Each trial
returns ``time.time()`` taken at its first line and at its last line; the gap
between one trial's last line and the next one's first line is everything the
system does in between: the result reported and written, the exit reported,
the process reaped, the next trial admitted, its folder made, forked, connected
and its trainable called. (The clock is the same machine's, so gaps are exact.)
"""

from __future__ import annotations

import itertools
import json
import sys

from .clients import run_script
from .daemon import bench_daemon
from .figures import Figure

_CLIENT = """
import json, sys, time
from tuned_client import tune
def timed(config):
    t0 = time.time()
    return {"t0": t0, "t1": time.time()}
n = int(sys.argv[1])
results = tune.Tuner(
    tune.with_resources(timed, {"cpu": 1}),
    param_space={"i": tune.grid_search(list(range(n)))},
    run_config=tune.RunConfig(verbose=0),
).fit()
assert results.num_errors == 0, results.errors
print("SPANS " + json.dumps([(r.metrics["t0"], r.metrics["t1"]) for r in results]))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def gaps(n: int) -> list[float]:
    """Milliseconds from each trial's last line to the next trial's first line."""
    with bench_daemon("--num-cpus", "1") as d:
        spans = sorted(json.loads(run_script(d, _CLIENT, str(n))["SPANS"]))
    return [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(spans)]


def measure(n: int = 300) -> list[Figure]:
    ms = gaps(n)
    note = f"{len(ms)} gaps, {n} one-CPU trials on a one-CPU daemon; last line -> next first line"
    return [
        Figure(
            "admission latency p50 (trial exit -> next trial's user code)",
            2,
            percentile(ms, 50),
            "ms",
            note=note,
        ),
        Figure("admission latency p99", 10, percentile(ms, 99), "ms", note=f"max {max(ms):.1f} ms"),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

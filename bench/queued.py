"""The daemon's resident memory with 100,000 trials queued (target: at most 250 MiB).

A user script submits one experiment of 100,000 one-CPU trials to a one-CPU
daemon and follows it with ``fit()``; the first trial blocks, so the rest stay
queued. Once the daemon reports them all (one running, the rest pending), its
RSS is read with psutil a few times over two seconds; the largest is reported.
"""

from __future__ import annotations

import sys
import time

from .clients import finished_trials, rss, start_script, wait_for
from .daemon import bench_daemon
from .figures import Figure

_CLIENT = """
import sys, time
from tuned_client import tune
def blocker(config):
    time.sleep(600)
n = int(sys.argv[1])
tune.Tuner(
    tune.with_resources(blocker, {"cpu": 1}),
    param_space={"i": tune.grid_search(list(range(n)))},
    run_config=tune.RunConfig(verbose=0),
).fit()
"""


def measure(n: int = 100_000) -> list[Figure]:
    with bench_daemon("--num-cpus", "1") as d:
        idle = rss(d.pid)
        started = time.perf_counter()
        client = start_script(d, _CLIENT, str(n))
        try:
            wait_for(lambda: finished_trials(d)[1] >= n, 300, f"{n:,} trials queued", 0.5)
            queued_after = time.perf_counter() - started
            samples = []
            for _ in range(5):
                samples.append(rss(d.pid))
                time.sleep(0.5)
        finally:
            client.kill()
            client.wait()
    peak = max(samples) / 2**20
    return [
        Figure(
            f"daemon RSS with {n:,} queued trials",
            250,
            peak,
            "MiB",
            note=f"idle {idle / 2**20:.0f} MiB before; all queued {queued_after:.1f} s after "
            "the script started; fit() following",
        )
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

"""Memory over many finished trials: the daemon's and the client's ``fit()``.

One user script runs ``n`` trivial trials (two to three minutes' worth). From the
outside, the daemon's RSS is sampled against the number of finished trials
(from ``tuned status``) every half second; the slope of a least-squares line
through the samples once the daemon's event history is full (``steady_from``)
is its growth per finished trial, and a million finished trials is that slope
extrapolated (labelled so: nobody waited for a million). From the inside, a
callback reads the client's own RSS after 1,000 trials and after 10,000 (or
``n``), as Ray's driver is known to grow linearly here.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time

from tuned.config import Settings

from .clients import finish_script, finished_trials, rss, start_script
from .daemon import bench_daemon
from .figures import Figure
from .throughput import TRIAL_CPU

_CLIENT = """
import sys
from tuned_client import tune
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
marks = [int(x) for x in sys.argv[3].split(",")]
class Sampler(tune.Callback):
    done = 0
    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        if self.done in marks:
            print(f"CLIENT_RSS_{self.done} {rss()}", flush=True)
def trivial(config):
    return {"x": config["i"]}
n = int(sys.argv[1])
results = tune.Tuner(
    tune.with_resources(trivial, {"cpu": float(sys.argv[2])}),
    param_space={"i": tune.grid_search(list(range(n)))},
    run_config=tune.RunConfig(verbose=0, callbacks=[Sampler()]),
).fit()
assert results.num_errors == 0 and len(results) == n
"""

MILLION = 1_000_000
WARMUP = 1_000
EVENTS_PER_TRIAL = 3  # TrialStarted, TrialResult, TrialFinished; TrialQueued came at submit
EVENT_BYTES = 300  # about what each of those three takes in the history, frame and entry
STEADY_MARGIN = 500


def steady_from() -> int:
    """Finished trials from which the slope is taken: once the event history is steady.

    The daemon keeps the latest ``Settings.event_history_bytes`` of events for
    clients that resubscribe: a bounded cache. While it fills, RSS grows by the
    events' frames, about 1 KB a trial here, and that growth ends at its size;
    extrapolating it to a million trials would count the cache eighty times
    over. It is steady once it holds only the three events of finished trials
    (the ``n`` submitted with the experiment, smaller, are gone by then).
    """
    (field,) = [f for f in dataclasses.fields(Settings) if f.name == "event_history_bytes"]
    held = int(field.default) // EVENT_BYTES
    return max(WARMUP, math.ceil(held / EVENTS_PER_TRIAL) + STEADY_MARGIN)


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares bytes per trial."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def measure(n: int = 25_000) -> list[Figure]:
    late = min(10_000, n)
    start = steady_from()
    filling = start > n - 4_000  # too few trials to fill it: the slope counts the filling
    if filling:
        start = WARMUP
    samples: list[tuple[int, int]] = []
    with bench_daemon("--num-cpus", "2") as d:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                done, _ = finished_trials(d)
                samples.append((done, rss(d.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        client = start_script(d, _CLIENT, str(n), str(TRIAL_CPU), f"{WARMUP},{late}")
        sampler.start()
        try:
            out = finish_script(client)
        finally:
            stop.set()
            sampler.join()
        seconds = time.perf_counter() - started
        samples.append((n, rss(d.pid)))
    steady = [(x, y) for x, y in samples if x >= start]
    per_trial = slope(steady)
    last_done, last_rss = steady[-1]
    # A slope below zero is noise about a flat line: RSS does not shrink to nothing.
    million = (last_rss + max(per_trial, 0.0) * (MILLION - last_done)) / 2**20
    early = int(out[f"CLIENT_RSS_{WARMUP}"])
    after = int(out[f"CLIENT_RSS_{late}"])
    growth = (after - early) / 2**20
    return [
        Figure(
            "daemon RSS growth per finished trial",
            None,
            per_trial,
            "B",
            note=f"least squares over {len(steady)} samples, {start:,} to {n:,} trials "
            + ("(event history still filling: counted) " if filling else "(event history full) ")
            + f"of {n:,} in {seconds:.0f} s; RSS {steady[0][1] / 2**20:.0f} -> "
            f"{last_rss / 2**20:.0f} MiB",
        ),
        Figure(
            "daemon RSS after 1,000,000 finished trials (extrapolated)",
            250,
            million,
            "MiB",
            note=f"extrapolated from {n:,} trials, not measured; target: the queued-trials budget",
        ),
        Figure(
            f"client fit() RSS growth, trial {WARMUP:,} to {late:,}",
            None,
            growth,
            "MiB",
            note=f"{early / 2**20:.0f} -> {after / 2**20:.0f} MiB; "
            f"{(after - early) / (late - WARMUP):.0f} B per finished trial",
        ),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 25_000
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

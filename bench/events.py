"""Event stream rate to one subscriber.

A raw subscriber (a ``tuned_client.connection`` socket, every experiment)
counts the events it receives and decodes. Two sources:

- a burst: an experiment of many trials submitted at once onto a one-CPU
  daemon whose first trial blocks, so the daemon emits one ``TrialQueued``
  per trial as fast as it can (the stream, not trial start-up, is the limit);
- sustained: one trial calling ``tune.report`` in a tight loop, each report
  written to disk, acknowledged, and streamed as a ``TrialResult``.

Both submit straight over a connection (nobody follows with ``fit()``), so the
subscriber is the only reader.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection

from .clients import RawSubscriber, wait_for
from .daemon import BenchDaemon, bench_daemon
from .figures import Figure


def blocker(config: dict[str, Any]) -> None:
    time.sleep(600)


def chatter(config: dict[str, Any]) -> None:
    for i in range(config["reports"]):
        tune.report({"i": i})


def submit(d: BenchDaemon, trainable: Any, space: dict[str, Any], cpu: float) -> p.Accepted:
    """Submit an experiment without following it (no ``fit()``)."""
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpu}),
        param_space=space,
        run_config=tune.RunConfig(storage_path=str(d.storage), verbose=0),
    )
    spec = tuner._experiment_spec()
    with Connection.open(d.socket, autostart=False) as conn:
        accepted = conn.request(p.Submit(experiment=spec))
    assert isinstance(accepted, p.Accepted)
    return accepted


def burst(n: int) -> tuple[float, int]:
    """Events/s while ``n`` trials are queued at once, and the events counted."""
    with bench_daemon("--num-cpus", "1") as d:
        sub = RawSubscriber(d)
        sub.start()
        try:
            submit(d, blocker, {"i": tune.grid_search(list(range(n)))}, 1)
            wait_for(lambda: sub.count(p.TrialQueued) >= n, 120, "the queued events")
        finally:
            sub.close()
        if sub.count(p.Lagged):
            raise RuntimeError("the subscriber lagged: raise event_history for this bench")
        return sub.events / (sub.last - sub.first), sub.events


def sustained(reports: int) -> tuple[float, int]:
    """TrialResult events/s from one trial reporting in a tight loop."""
    with bench_daemon("--num-cpus", "2") as d:
        sub = RawSubscriber(d)
        sub.start()
        try:
            submit(d, chatter, {"reports": reports}, 1)
            wait_for(lambda: sub.count(p.ExperimentFinished) >= 1, 300, "the reports")
        finally:
            sub.close()
        return sub.count(p.TrialResult) / (sub.last - sub.first), sub.count(p.TrialResult)


def measure(n: int = 40_000, reports: int = 20_000) -> list[Figure]:
    rate, events = burst(n)
    steady, results = sustained(reports)
    return [
        Figure(
            "event stream rate to one subscriber",
            50_000,
            rate,
            "/s",
            True,
            f"{events:,} events: {n:,} trials queued at once, decoded by a raw subscriber",
        ),
        Figure(
            "event stream, one trial reporting in a loop",
            None,
            steady,
            "/s",
            True,
            f"{results:,} results, journalled and written to the trial's files",
        ),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

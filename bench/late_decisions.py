"""Do scheduler decisions arrive in time? ASHA over instant iterations, through the daemon.

24 trials of 30 instant iterations under ``ASHAScheduler(max_t=30,
grace_period=2)`` (issue 17's figure): in Ray Tune a trial does not run past a
result until the scheduler has decided on it, so about a third of the 720
iterations run, and every stopped trial stops at a rung (2, 8 with the default
reduction factor 4). A client whose decisions arrive late lets trials run on.
Run: ``python -m bench.late_decisions`` (prints the figures; ``--json`` for one line).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from typing import Any

from .daemon import bench_daemon

TRIALS, ITERATIONS = 24, 30


def trainable(config: dict[str, Any]) -> None:
    from tuned_client import tune

    for i in range(1, ITERATIONS + 1):
        tune.report({"loss": config["x"] / i})


def measure() -> dict[str, Any]:
    from tuned_client import tune
    from tuned_client.tune.schedulers import ASHAScheduler

    with bench_daemon("--num-cpus", "4") as d:
        os.environ.update({k: v for k, v in d.env().items() if k.startswith("TUNED_")})
        values = [float(i) for i in range(1, TRIALS + 1)]
        random.Random(17).shuffle(values)  # trials start in an order unrelated to their loss
        tuner = tune.Tuner(
            trainable,
            param_space={"x": tune.grid_search(values)},
            tune_config=tune.TuneConfig(
                metric="loss",
                mode="min",
                scheduler=ASHAScheduler(max_t=ITERATIONS, grace_period=2),
            ),
            run_config=tune.RunConfig(verbose=0, storage_path=str(d.storage)),
        )
        started = time.perf_counter()
        grid = tuner.fit()
        seconds = time.perf_counter() - started
    stops = Counter(r.metrics["training_iteration"] for r in grid)
    total = sum(n * count for n, count in stops.items())
    return {
        "iterations": total,
        "of": TRIALS * ITERATIONS,
        "share": round(total / (TRIALS * ITERATIONS), 3),
        "stopped_at": dict(sorted(stops.items())),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    figures = measure()
    if parser.parse_args().json:
        print(json.dumps(figures))
        return
    print(
        f"ASHA(max_t={ITERATIONS}, grace_period=2), {TRIALS} trials: "
        f"{figures['iterations']} of {figures['of']} iterations ran ({figures['share']:.0%}); "
        f"trials stopped at iterations {figures['stopped_at']}; fit() {figures['seconds']} s"
    )


if __name__ == "__main__":
    main()

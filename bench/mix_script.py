"""One experiment of a mix, as a user's script: the same file for tuned and for Ray Tune.

Run as ``python mix_script.py MODE PLAN OUT [RAY_ADDRESS]``: MODE is ``tuned`` or
``ray`` (only the import differs, and Ray connects to the cluster the runner
started). The script imports, prints ``READY``, reads the common start time from
stdin, sleeps until its experiment's offset past it, and calls ``fit()``. Each
trial sleeps its steps and reports the time after each; the script writes every
trial's first-line time and last report time to OUT as JSON, and each result as
it comes to OUT.rows (a run the runner cuts off leaves those).

Nothing here imports ``bench`` or ``tuned``: it runs in Ray's own venv too.
"""

from __future__ import annotations

import json
import sys
import time

MODE, PLAN, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
if MODE == "ray":
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    ray.init(address=sys.argv[4], logging_level="ERROR", log_to_driver=False)
else:
    from tuned_client import tune
    from tuned_client.tune.schedulers import ASHAScheduler

with open(PLAN) as f:
    plan = json.load(f)
TRIALS = plan["trials"]  # [gpu, cpu, memory, seconds, steps] per trial


def resources(spec):  # type: ignore[no-untyped-def]
    config = getattr(spec, "config", spec)  # tuned passes the trial's spec, Ray its config
    gpu, cpu, memory, _, _ = TRIALS[config["i"]]
    asked = {"cpu": cpu, "gpu": gpu}
    if memory:
        asked["memory"] = memory
    return asked


def trainable(config):  # type: ignore[no-untyped-def]
    t0 = time.time()
    i = config["i"]
    _, _, _, seconds, steps = TRIALS[i]
    floor = (i * 7919 % 97) / 97  # a learning curve per trial, the same in both runs
    for step in range(1, steps + 1):
        time.sleep(max(0.0, t0 + seconds * step / steps - time.time()))
        tune.report({"loss": floor + 1 / step**0.5, "i": i, "t0": t0, "t": time.time()})


class Rows(tune.Callback):  # type: ignore[misc]
    """Each result as it arrives, so a run cut off still says what it had done.

    It holds a path, not an open file: Ray pickles its callbacks.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_trial_result(self, iteration, trials, trial, result, **info):  # type: ignore[no-untyped-def]
        with open(self.path, "a") as out:
            out.write(json.dumps([result["i"], result["t0"], result["t"]]) + "\n")


def main() -> None:
    scheduler = None
    if plan["asha"]:
        max_t = max(t[4] for t in TRIALS)
        scheduler = ASHAScheduler(
            metric="loss", mode="min", max_t=max_t, grace_period=1, reduction_factor=3
        )
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"i": tune.grid_search(list(range(len(TRIALS))))},
        tune_config=tune.TuneConfig(scheduler=scheduler),
        run_config=tune.RunConfig(
            name=plan["name"],
            verbose=0,
            storage_path=plan["storage"],
            callbacks=[Rows(OUT + ".rows")],
        ),
    )
    print("READY", flush=True)
    go = float(sys.stdin.readline())
    time.sleep(max(0.0, go + plan["at"] - time.time()))
    results = tuner.fit()
    errors = [str(r.error) for r in results if r.error]
    if errors:
        raise SystemExit(f"{len(errors)} trials failed: {errors[0]}")
    rows = [[r.metrics["i"], r.metrics["t0"], r.metrics["t"]] for r in results]
    with open(OUT, "w") as f:
        json.dump(rows, f)


if __name__ == "__main__":
    main()

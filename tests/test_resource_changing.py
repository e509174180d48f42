"""``ResourceChangingScheduler``: running trials get the resources that free up.

The trial is restarted from its checkpoint with its new bundles (a
``RestartTrial`` carrying them), and its trainable sees them in
``tune.get_context().get_trial_resources()``, as in Ray.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.tune.schedulers import (
    ASHAScheduler,
    DistributeResources,
    ResourceChangingScheduler,
)


def grows(config: dict[str, Any]) -> None:
    step = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        step = json.loads(Path(checkpoint.path, "s.json").read_text())["step"] + 1
    cpus = sum(b.get("cpu", b.get("CPU", 0)) for b in tune.get_context().get_trial_resources())
    for i in range(step, 12):  # the scheduler decides on each report before the next step
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "s.json").write_text(json.dumps({"step": i}))
            tune.report(
                {"loss": 1.0 / (i + 1), "cpus": cpus, "step": i},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


@pytest.mark.daemon_args("--num-cpus", "4")
def test_two_trials_on_four_cpus_grow_to_two_each(daemon: RunningDaemon) -> None:
    scheduler = ResourceChangingScheduler(resources_allocation_function=DistributeResources())
    results = tune.Tuner(
        tune.with_resources(grows, {"cpu": 1}),
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=scheduler),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert results.num_errors == 0
    for result in results:
        rows = [json.loads(x) for x in Path(result.path, "result.json").read_text().splitlines()]
        # it started on its 1 CPU and grew (to 2, or to 4 once the other one ended)
        assert rows[0]["cpus"] == 1 and max(r["cpus"] for r in rows) >= 2
        assert rows[-1]["step"] == 11  # resumed from its checkpoints to the end
        assert sorted({r["step"] for r in rows}) == list(range(12))


def test_distribute_resources_shares_evenly_in_steps_of_the_base() -> None:
    class View:
        def __init__(self, tid: str, cpu: float) -> None:
            self.trial_id, self.status, self.resources = tid, "RUNNING", {"cpu": cpu}
            self.checkpoint, self.config, self.last_result = "/ckpt", {}, None

    class Controller:
        capacity = {"cpu": 8.0, "gpu": 0.0}

        def __init__(self, trials: list[View]) -> None:
            self.trials = trials
            self.restarted: list[tuple[str, Any]] = []

        def get_trials(self) -> list[View]:
            return self.trials

        def restart_trial(self, trial: View, config: Any, checkpoint: str, resources: Any) -> None:
            self.restarted.append((trial.trial_id, resources))

    trials = [View("a", 1.0), View("b", 1.0), View("c", 1.0)]
    ctl = Controller(trials)
    rcs = ResourceChangingScheduler(ASHAScheduler(metric="m", mode="max", max_t=100))
    # 8 CPUs over 3 live trials: 2 each (a whole multiple of the 1-CPU base)
    assert rcs.on_trial_result(ctl, trials[0], {"m": 1, "training_iteration": 1}) == "PAUSE"
    assert ctl.restarted == [("a", [{"cpu": 2.0}])]
    trials[1].resources = {"cpu": 2.0}  # already at its share: left alone
    assert rcs.on_trial_result(ctl, trials[1], {"m": 1, "training_iteration": 1}) == "CONTINUE"
    trials[2].checkpoint = ""  # nothing to resume from: restarted afresh, as in Ray
    assert rcs.on_trial_result(ctl, trials[2], {"m": 1, "training_iteration": 1}) == "PAUSE"
    assert [tid for tid, _ in ctl.restarted] == ["a", "c"]

"""Ray Tune's other trainable shapes: class Trainables and tune.with_parameters."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from conftest import RunningDaemon
from tuned_client import tune


class Counter(tune.Trainable):
    def setup(self, config: dict[str, Any]) -> None:
        self.value = config["start"]

    def step(self) -> dict[str, Any]:
        self.value += 1
        if (
            self.value == 3
            and os.environ.get("CRASH_ONCE")
            and not Path(os.environ["CRASH_ONCE"]).exists()
        ):
            Path(os.environ["CRASH_ONCE"]).write_text("crashed")
            os._exit(1)  # a hard crash, after the checkpoint of step 2
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        Path(checkpoint_dir, "value.json").write_text(json.dumps(self.value))

    def load_checkpoint(self, checkpoint: Any) -> None:
        self.value = json.loads(Path(checkpoint, "value.json").read_text())


def test_a_class_trainable_steps_until_its_stop_rule(daemon: RunningDaemon) -> None:
    results = tune.Tuner(
        Counter,
        param_space={"start": tune.grid_search([0, 10])},
        run_config=tune.RunConfig(stop={"training_iteration": 4}, verbose=0),
    ).fit()
    assert sorted(r.metrics["value"] for r in results) == [4, 14]
    assert all(r.metrics["training_iteration"] == 4 for r in results)


def test_a_class_trainable_resumes_from_its_checkpoint_after_a_crash(
    daemon: RunningDaemon, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("CRASH_ONCE", str(tmp_path / "crashed"))
    results = tune.Tuner(
        tune.with_resources(Counter, {"cpu": 1}),
        param_space={"start": 0},
        run_config=tune.RunConfig(
            stop={"training_iteration": 5},
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
            verbose=0,
        ),
    ).fit()
    (result,) = list(results)
    assert result.error is None
    assert result.metrics["value"] == 5 and result.metrics["training_iteration"] == 5
    rows = [json.loads(x) for x in (Path(result.path) / "result.json").read_text().splitlines()]
    assert [r["value"] for r in rows] == [1, 2, 3, 4, 5]  # step 3 redone once, never twice
    assert result.checkpoint is not None


def train_with_data(config: dict[str, Any], data: list[int]) -> dict[str, Any]:
    return {"total": sum(data) * config["k"]}


def test_with_parameters_passes_objects_to_every_trial(daemon: RunningDaemon) -> None:
    trainable = tune.with_resources(
        tune.with_parameters(train_with_data, data=list(range(100))), {"cpu": 0.5}
    )
    results = tune.Tuner(
        trainable,
        param_space={"k": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert sorted(r.metrics["total"] for r in results) == [4950, 9900]


def objective(config: dict[str, Any]) -> None:
    for step in range(3):
        tune.report({"loss": (config["x"] - 2) ** 2 + step})


def test_the_older_tune_run_api_works_as_in_ray(daemon: RunningDaemon) -> None:
    analysis = tune.run(
        objective,
        config={"x": tune.grid_search([0, 2, 5])},
        metric="loss",
        mode="min",
        resources_per_trial={"cpu": 1},
        verbose=0,
    )
    assert analysis.best_config == {"x": 2}
    assert analysis.best_result["loss"] == 2
    assert len(analysis.trials) == 3 and {t.status for t in analysis.trials} == {"TERMINATED"}
    assert list(analysis.results_df["loss"].sort_values()) == [2, 6, 11]


def fails(config: dict[str, Any]) -> None:
    raise RuntimeError("nope")


def test_tune_run_raises_when_a_trial_failed_as_ray_does(daemon: RunningDaemon) -> None:
    import pytest

    with pytest.raises(tune.TuneError, match="Trials did not complete"):
        tune.run(fails, verbose=0)


def old_style(config: dict[str, Any]) -> None:
    tune.report(loss=config["x"], accuracy=0.5)


def test_keyword_reports_of_older_ray_scripts_still_work(daemon: RunningDaemon) -> None:
    results = tune.Tuner(
        old_style, param_space={"x": 3}, run_config=tune.RunConfig(verbose=0)
    ).fit()
    assert results[0].metrics["loss"] == 3 and results[0].metrics["accuracy"] == 0.5

"""``tuned_client.train``: trainables written against ``ray.train`` run unchanged."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import train, tune


def train_fn(config: dict[str, Any]) -> None:
    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads(Path(folder, "state.json").read_text())["step"] + 1
    context = train.get_context()
    for step in range(start, 3):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "state.json").write_text(json.dumps({"step": step}))
            train.report(
                {"step": step, "name": context.get_trial_name(), "ws": context.get_world_size()},
                checkpoint=train.Checkpoint.from_directory(folder),
            )


def test_a_ray_train_style_trainable_runs_under_the_tuner(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = tune.Tuner(
        train_fn,
        param_space={"x": 1},
        run_config=train.RunConfig(
            name="ray-train",
            storage_path=str(tmp_path),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            failure_config=train.FailureConfig(max_failures=0),
            verbose=0,
        ),
    ).fit()
    (result,) = results
    assert result.metrics["step"] == 2 and result.metrics["ws"] == 1
    assert result.metrics["name"].startswith("train_fn_")
    assert result.checkpoint is not None and len(result.best_checkpoints) == 1
    assert train.RunConfig is tune.RunConfig and train.Checkpoint is tune.Checkpoint


def test_scaling_config_reserves_its_bundles_together(daemon: RunningDaemon) -> None:
    scaling = train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5})
    assert scaling.total_resources == {"CPU": 1.0}
    assert scaling.as_placement_group_factory().bundles == [{"CPU": 0.5}, {"CPU": 0.5}]

    def probe(config: dict[str, Any]) -> dict[str, Any]:
        return {"bundles": train.get_context().get_trial_resources()}

    results = tune.Tuner(
        tune.with_resources(probe, scaling), run_config=tune.RunConfig(verbose=0)
    ).fit()
    bundles = results[0].metrics["bundles"]
    assert len(bundles) == 2 and all(b.get("CPU", b.get("cpu")) == 0.5 for b in bundles)


def test_scaling_config_refuses_a_gpu_it_was_not_told_to_use() -> None:
    with pytest.raises(ValueError, match="use_gpu"):
        train.ScalingConfig(resources_per_worker={"GPU": 1})
    gpu = train.ScalingConfig(num_workers=1, use_gpu=True)
    assert gpu.total_resources == {"CPU": 1.0, "GPU": 1.0}


def test_train_report_outside_a_trial_says_where_to_call_it() -> None:
    with pytest.raises(RuntimeError, match="outside of a trial"):
        train.report({"x": 1})

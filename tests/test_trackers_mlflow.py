"""``tuned_client.air.integrations.mlflow`` against a real MLflow file store in a tmp folder.

Ports of Ray's ``python/ray/air/tests/test_integration_mlflow.py`` (import
swapped; where Ray patches its private util to see the artifacts, these read
them back from the store), and a real ``Tuner.fit()`` with the callback and
with ``setup_mlflow`` inside the trainable.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune

pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
from mlflow.tracking import MlflowClient
from tuned_client.air.integrations.mlflow import (
    MLflowLoggerCallback,
    setup_mlflow,
)


class MockTrial(namedtuple("MockTrial", ["config", "trial_name", "trial_id", "local_path"])):
    def __hash__(self) -> int:
        return hash(self.trial_id)

    def __str__(self) -> str:
        return str(self.trial_name)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, str]]:
    """A file store with ``existing_experiment``; nothing of MLflow's outside tmp_path."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks to opt in
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "default-store"))
    for key in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(key, raising=False)
    tracking, registry = str(tmp_path / "mlruns"), str(tmp_path / "registry")
    client = MlflowClient(tracking_uri=tracking, registry_uri=registry)
    existing = client.create_experiment(name="existing_experiment")
    yield tracking, registry, existing
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


def test_ray_mlflow_logger_callback_config(
    store: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking, registry, existing = store
    logger = MLflowLoggerCallback(
        tracking_uri=tracking, registry_uri=registry, experiment_name="test_exp"
    )
    logger.setup()
    mlflow = logger.mlflow_util._mlflow
    assert mlflow.get_tracking_uri().endswith(tracking) and mlflow.get_registry_uri() == registry
    names = sorted(e.name for e in mlflow.search_experiments())
    assert names == ["Default", "existing_experiment", "test_exp"]
    test_exp = mlflow.get_experiment_by_name("test_exp").experiment_id
    assert logger.mlflow_util.experiment_id == test_exp

    # an existing experiment is found, not created again
    logger = MLflowLoggerCallback(
        experiment_name="existing_experiment", tracking_uri=tracking, registry_uri=registry
    )
    logger.setup()
    assert logger.mlflow_util.experiment_id == existing

    def with_env(**env: str) -> str | None:
        for key in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        cb = MLflowLoggerCallback(tracking_uri=tracking, registry_uri=registry)
        cb.setup()
        return cb.mlflow_util.experiment_id

    assert with_env(MLFLOW_EXPERIMENT_NAME="test_exp") == test_exp
    assert with_env(MLFLOW_EXPERIMENT_NAME="existing_experiment") == existing
    assert with_env(MLFLOW_EXPERIMENT_ID=existing) == existing
    with pytest.raises(ValueError):  # an id that does not exist, and no name
        with_env(MLFLOW_EXPERIMENT_ID="500")
    # the id wins over the name
    assert with_env(MLFLOW_EXPERIMENT_NAME="test_exp", MLFLOW_EXPERIMENT_ID=existing) == existing

    tags = {"user_name": "John", "git_commit_hash": "abc123"}
    logger = MLflowLoggerCallback(tracking_uri=tracking, registry_uri=registry, tags=tags)
    logger.setup()
    assert logger.tags == tags


def test_ray_mlflow_logger_logging(store: tuple[str, str, str], tmp_path: Path) -> None:
    tracking, registry, _ = store
    folder = tmp_path / "trial1"
    folder.mkdir()
    (folder / "params.json").write_text("{}")
    trial_config = {"par1": "a", "par2": "b"}
    trial = MockTrial(trial_config, "trial1", 0, str(folder))
    logger = MLflowLoggerCallback(
        tracking_uri=tracking, registry_uri=registry, experiment_name="test1",
        save_artifact=True, tags={"hello": "world"},
    )  # fmt: skip
    logger.setup()

    logger.on_trial_start(iteration=0, trials=[], trial=trial)
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("test1").experiment_id
    [run] = client.search_runs([experiment])
    assert run.data.tags["hello"] == "world" and run.data.tags["trial_name"] == "trial1"
    assert run.data.tags["mlflow.runName"] == "trial1"
    assert logger._trial_runs[trial] == run.info.run_id
    assert run.data.params == trial_config

    # the same trial started again (a retry): no second run
    logger.on_trial_start(iteration=0, trials=[], trial=trial)
    assert len(client.search_runs([experiment])) == 1

    result = {"metric1": 0.8, "metric2": 1, "metric3": None, "training_iteration": 0}
    logger.on_trial_result(0, [], trial, result)
    run = client.get_run(run.info.run_id)
    # metric3 is not logged: it is no float
    assert run.data.metrics == {"metric1": 0.8, "metric2": 1.0, "training_iteration": 0}

    logger.on_trial_complete(0, [], trial)
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["params.json"]


def test_ray_mlflow_logger_params_on_trial_end_and_failed_runs(
    store: tuple[str, str, str], tmp_path: Path
) -> None:
    tracking, _, _ = store
    trial = MockTrial({"a": {"b": 1}}, "t", "t0", str(tmp_path))
    logger = MLflowLoggerCallback(
        tracking_uri=tracking, experiment_name="late", log_params_on_trial_end=True
    )
    logger.setup()
    logger.on_trial_start(iteration=0, trials=[], trial=trial)
    client = MlflowClient(tracking_uri=tracking)
    run_id = logger._trial_runs[trial]
    assert client.get_run(run_id).data.params == {}
    logger.on_trial_error(0, [], trial)
    run = client.get_run(run_id)
    assert run.data.params == {"a/b": "1"} and run.info.status == "FAILED"


def test_ray_mlflow_setup_explicit(store: tuple[str, str, str]) -> None:
    tracking, _, existing = store
    trial_config = {"par1": 4, "par2": 9.0}
    with pytest.raises(ValueError):  # no experiment given at all
        setup_mlflow(trial_config, tracking_uri=tracking)
    with pytest.raises(ValueError):  # an id that does not exist
        setup_mlflow(trial_config, experiment_id="500", tracking_uri=tracking)
    with pytest.raises(ValueError):  # a name that does not exist, not created by default
        setup_mlflow(
            trial_config, experiment_id="500", experiment_name="new_experiment",
            tracking_uri=tracking,
        )  # fmt: skip
    mlflow = setup_mlflow(
        trial_config, experiment_id="500", experiment_name="existing_experiment",
        tracking_uri=tracking,
    )  # fmt: skip
    run = mlflow.active_run()
    assert run.info.experiment_id == existing
    assert MlflowClient(tracking_uri=tracking).get_run(run.info.run_id).data.params == {
        "par1": "4", "par2": "9.0",
    }  # fmt: skip
    mlflow.end_run()


def steps(config: dict[str, Any]) -> None:
    for i in range(3):
        tune.report({"loss": config["x"] * i, "nested": {"acc": 0.5}})


def with_setup_mlflow(config: dict[str, Any]) -> None:
    mlflow = setup_mlflow(
        config, tracking_uri=os.environ["STORE"], create_experiment_if_not_exists=True
    )
    mlflow.log_metric("inside", 7.0, step=1)
    tune.report({"loss": 1.0})
    mlflow.end_run()


def test_a_sweep_logged_to_mlflow_from_the_script_and_from_the_trainable(
    daemon: RunningDaemon, store: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking, _, _ = store
    callback = MLflowLoggerCallback(tracking_uri=tracking, experiment_name="sweep")
    tune.Tuner(
        steps, param_space={"x": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(verbose=0, callbacks=[callback]),
    ).fit()  # fmt: skip
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert sorted(r.data.params["x"] for r in runs) == ["1", "2"]
    for run in runs:
        x = float(run.data.params["x"])
        assert run.info.status == "FINISHED" and run.data.tags["trial_name"].startswith("steps_")
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(1, 0.0), (2, x), (3, 2 * x)]
        assert run.data.metrics["nested/acc"] == 0.5

    # setup_mlflow inside the trial: an experiment named after the trial, its config as params
    monkeypatch.setenv("STORE", tracking)
    [result] = tune.Tuner(
        with_setup_mlflow, param_space={"lr": 0.1}, run_config=tune.RunConfig(verbose=0)
    ).fit()
    trial_name = f"with_setup_mlflow_{result.metrics['trial_id']}"  # Ray's default names
    experiment = client.get_experiment_by_name(trial_name)
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags["mlflow.runName"] == trial_name
    assert run.data.metrics["inside"] == 7.0 and run.data.params == {"lr": "0.1"}

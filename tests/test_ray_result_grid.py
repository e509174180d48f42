"""Ray Tune's ``python/ray/tune/tests/test_result_grid.py``, import swapped.

Ray's tests, against one 2-CPU daemon for the module (Ray's ``ray_start_2_cpus``).
``ray.train.tests.util``'s dict-checkpoint helpers are Ray's test utilities,
copied here. A printed ``Result`` is the seed document's one line (Ray 2.0's:
``Result(metrics={...'done': True, 'trial_id': ..., 'experiment_tag': ...}, error=None,
log_dir=...)``), which the project's examples promise, not Ray 2.5+'s field a line:
so ``test_result_grid_repr`` (that exact multi-line form) is left out and
``test_result_repr`` keeps its check of Ray's ``AUTO_RESULT_KEYS`` but not of
the console's ``BLACKLISTED_KEYS`` (README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray_train_util import create_dict_checkpoint, load_dict_checkpoint
from tuned_client import train, tune
from tuned_client.tune.result_grid import ResultGrid

pytestmark = pytest.mark.usefixtures("module_daemon")


def test_result_grid_api(tmp_path: Path) -> None:
    def train_fn(config: dict[str, Any]) -> None:
        peak_fn = [0, config["id"], -config["id"], 0]
        for i in range(len(peak_fn)):
            with create_dict_checkpoint({"iter": i}) as checkpoint:
                train.report(
                    {"iter": i, "score": config["id"], "peak": peak_fn[i]},
                    checkpoint=checkpoint,
                )

    tuner = tune.Tuner(
        train_fn,
        param_space={"id": tune.grid_search([1, 2])},
        run_config=train.RunConfig(
            storage_path=str(tmp_path),
            name="test_result_grid_api",
            checkpoint_config=train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result_grid = tuner.fit()

    assert len(result_grid) == 2
    assert result_grid.experiment_path == str(tmp_path / "test_result_grid_api")

    # No default metric available
    with pytest.raises(ValueError):
        result_grid.get_best_result()
    # Metric is provided, but mode is not
    with pytest.raises(ValueError):
        result_grid.get_best_result(metric="score")

    assert result_grid.get_best_result(metric="score", mode="max").config["id"] == 2

    df = result_grid.get_dataframe()
    assert len(df) == 2
    assert df["iter"].to_list() == [3, 3]
    df = result_grid.get_dataframe(filter_metric="peak", filter_mode="max")
    assert df["iter"].to_list() == [1, 1]
    df = result_grid.get_dataframe(filter_metric="peak", filter_mode="min")
    assert df["iter"].to_list() == [2, 2]

    assert not result_grid.errors
    assert result_grid.num_errors == 0
    assert result_grid.num_terminated == 2

    for result in result_grid:
        assert result.checkpoint is not None
        assert result.error is None
        assert load_dict_checkpoint(result.checkpoint)["iter"] == 3
        assert {metrics["iter"] for _, metrics in result.best_checkpoints} == {2, 3}
        assert {
            load_dict_checkpoint(checkpoint)["iter"] for checkpoint, _ in result.best_checkpoints
        } == {2, 3}


def test_result_grid_no_checkpoint() -> None:
    def f(config: dict[str, Any]) -> None:
        pass

    analysis = tune.run(f)
    result_grid = ResultGrid(analysis)
    result = result_grid[0]
    assert result.checkpoint is None


def test_best_result_no_report() -> None:
    def f(config: dict[str, Any]) -> None:
        pass

    analysis = tune.run(f, config={"x": tune.grid_search([1, 2])})
    result_grid = ResultGrid(analysis)
    with pytest.raises(RuntimeError, match=r"No best trial found*"):
        result_grid.get_best_result(metric="x", mode="max")


def test_result_repr() -> None:
    def f(config: dict[str, Any]) -> None:
        train.report({"loss": 1})

    tuner = tune.Tuner(f, param_space={"x": tune.grid_search([1, 2])})
    result_grid = tuner.fit()
    result = result_grid[0]

    from tuned_client.tune.result import AUTO_RESULT_KEYS

    representation = result.__repr__()
    assert not any(key in representation for key in AUTO_RESULT_KEYS)


def test_no_metric_mode_one_trial() -> None:
    def f(config: dict[str, Any]) -> None:
        train.report(dict(x=1))

    results = tune.Tuner(f, tune_config=tune.TuneConfig(num_samples=1)).fit()
    # This should not throw any exception
    best_result = results.get_best_result()
    assert best_result


def test_result_grid_df() -> None:
    def f(config: dict[str, Any]) -> None:
        train.report(dict(metric=config["nested"]["param"] * 1))
        train.report(dict(metric=config["nested"]["param"] * 4))
        train.report(dict(metric=config["nested"]["param"] * 3))

    analysis = tune.run(f, config={"nested": {"param": tune.grid_search([1, 2])}})
    result_grid = ResultGrid(analysis)

    assert len(result_grid) == 2

    # Last result
    df = result_grid.get_dataframe()
    assert sorted(df["metric"]) == [3, 6]

    # Best result (max)
    df = result_grid.get_dataframe(filter_metric="metric", filter_mode="max")
    assert sorted(df["metric"]) == [4, 8]

    # Best result (min)
    df = result_grid.get_dataframe(filter_metric="metric", filter_mode="min")
    assert sorted(df["metric"]) == [1, 2]

    assert sorted(df["config/nested/param"]) == [1, 2]


def test_num_errors_terminated(tmp_path: Path) -> None:
    def train_fn(config: dict[str, Any]) -> None:
        if config["id"] == 1:
            raise RuntimeError()
        else:
            train.report({"score": config["id"]})

    tuner = tune.Tuner(
        train_fn,
        param_space={"id": tune.grid_search([1, 2])},
        run_config=train.RunConfig(storage_path=str(tmp_path)),
    )
    result_grid = tuner.fit()
    assert result_grid.num_errors == 1
    assert result_grid.num_terminated == 1
    assert isinstance(result_grid.errors[0], RuntimeError)

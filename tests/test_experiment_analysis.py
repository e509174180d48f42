"""``ExperimentAnalysis``, ``Result`` and ``ResultGrid`` as Ray users read them.

After Ray's ``test_experiment_analysis.py`` and ``test_result_grid.py``: an
experiment folder read back with ``ExperimentAnalysis(path)``, scores with NaN
and infinite values, checkpoints by metric, the dataframes' columns, trial
names as Ray prints them, and ``Result.error`` of the trial's own class.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.tune import ExperimentAnalysis, Result

NUM = 4


def train(config: dict[str, Any]) -> None:
    """Reports the loss ``x``, then ``x + 1``, with a checkpoint at each step."""
    for step in range(2):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "step").write_text(str(step))
            value = config["x"] + step
            metrics = {"loss": value, "nested": {"acc": -value}}
            if config["x"] == 99:  # a trial whose metric is never a number
                metrics["loss"] = math.nan
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


class Boom(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"boom {code}")
        self.code = code


def explode(config: dict[str, Any]) -> None:
    tune.report({"loss": 1.0})
    if config["kind"] == "value":
        raise ValueError("bad value")
    raise Boom(7)


@pytest.fixture()
def experiment(daemon: RunningDaemon, tmp_path: Path) -> Path:
    tune.Tuner(
        train,
        param_space={"x": tune.grid_search([3, 1, 2, 99]), "opt": {"lr": 0.1}},
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0),
    ).fit()
    return tmp_path / "exp"


def test_an_experiment_folder_reads_back(experiment: Path) -> None:
    ea = ExperimentAnalysis(str(experiment), default_metric="loss", default_mode="min")
    assert len(ea.trials) == NUM
    assert all(re.fullmatch(r"train_[0-9a-f]{5}_0000\d", str(t)) for t in ea.trials)
    configs = ea.get_all_configs()
    assert sorted(c["x"] for c in configs.values()) == [1, 2, 3, 99]
    flat = ea.get_all_configs(prefix=True)
    assert all("config/opt/lr" in c for c in flat.values())
    assert ea.best_config["x"] == 1  # the NaN trial is never the best
    assert ea.get_best_config("loss", "max")["x"] == 3
    assert ea.get_best_config("loss", "min", scope="all")["x"] == 1
    assert ea.get_best_config("nested/acc", "max")["x"] == 1  # nested metrics by flat name
    assert ea.get_best_trial("nope", "min") is None
    assert ea.best_trial is not None and ea.best_result["loss"] == 2
    assert ea.results_df.shape[0] == NUM


def test_checkpoints_by_metric(experiment: Path) -> None:
    ea = ExperimentAnalysis(str(experiment))
    trial = next(t for t in ea.trials if t.config["x"] == 1)
    best = ea.get_best_checkpoint(trial, "loss", "min")
    assert best is not None and Path(best.path, "step").read_text() == "0"
    last = ea.get_last_checkpoint(trial)
    assert last is not None and Path(last.path, "step").read_text() == "1"
    with pytest.raises(ValueError, match="mode"):
        ea.get_best_checkpoint(trial, "loss")  # no mode and no default mode
    with pytest.raises(ValueError, match="best_checkpoint"):
        _ = ea.best_checkpoint


def test_dataframe_validation_and_filtering(experiment: Path) -> None:
    ea = ExperimentAnalysis(str(experiment))
    with pytest.raises(ValueError, match="one of"):
        ea.dataframe("loss", "avg")
    with pytest.raises(ValueError, match="also have to pass a `metric`"):
        ea.dataframe(mode="min")
    last = ea.dataframe()
    assert sorted(last["loss"].dropna()) == [2, 3, 4]
    assert {"config/x", "config/opt/lr", "nested/acc", "logdir"} <= set(last.columns)
    best = ea.dataframe("loss", "min")
    assert sorted(best["loss"]) == [1, 2, 3]  # the NaN trial has no best row
    with pytest.raises(ValueError, match="metric"):
        ExperimentAnalysis(str(experiment)).get_best_trial()


def test_nan_and_inf_are_filtered_unless_asked(daemon: RunningDaemon, tmp_path: Path) -> None:
    def report(config: dict[str, Any]) -> dict[str, Any]:
        return {"m": config["m"]}

    grid = tune.Tuner(
        report,
        param_space={"m": tune.grid_search([math.inf, 1.0, -math.inf])},
        run_config=tune.RunConfig(name="inf", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert grid.get_best_result("m", "max").metrics["m"] == 1.0
    assert grid.get_best_result("m", "min").metrics["m"] == 1.0
    unfiltered = grid.get_best_result("m", "max", filter_nan_and_inf=False)
    assert unfiltered.metrics["m"] == math.inf
    ea = ExperimentAnalysis(str(tmp_path / "inf"))
    assert ea.get_best_trial("m", "min").config["m"] == 1.0
    assert ea.get_best_trial("m", "min", filter_nan_and_inf=False).config["m"] == -math.inf


def test_result_from_path_and_the_grid_dataframe(experiment: Path, daemon: RunningDaemon) -> None:
    grid = ExperimentAnalysis(str(experiment)).result_grid
    one = next(r for r in grid if r.config["x"] == 2)
    again = Result.from_path(one.path)
    assert again.config == one.config and again.metrics["loss"] == 3
    assert again.checkpoint is not None and Path(again.checkpoint.path, "step").read_text() == "1"
    assert again.error is None and again.metrics_dataframe.shape[0] == 2
    frame = grid.get_dataframe(filter_metric="loss", filter_mode="max")
    assert sorted(frame["loss"]) == [2, 3, 4]
    assert "config/opt/lr" in frame.columns and "config/opt" not in frame.columns
    with pytest.raises(FileNotFoundError):
        Result.from_path(experiment / "no-such-trial")


def test_one_trial_is_the_best_without_a_metric(daemon: RunningDaemon) -> None:
    grid = tune.Tuner(train, param_space={"x": 5}, run_config=tune.RunConfig(verbose=0)).fit()
    assert grid.get_best_result().config["x"] == 5
    with pytest.raises(ValueError, match="No metric"):
        tune.Tuner(
            train, param_space={"x": tune.grid_search([1, 2])}, run_config=tune.RunConfig(verbose=0)
        ).fit().get_best_result()


def test_a_failed_trials_error_is_of_its_own_class(daemon: RunningDaemon, tmp_path: Path) -> None:
    grid = tune.Tuner(
        explode,
        param_space={"kind": tune.grid_search(["value", "boom"])},
        run_config=tune.RunConfig(name="errs", storage_path=str(tmp_path), verbose=0),
    ).fit()
    value, boom = (r.error for r in grid)
    assert isinstance(value, ValueError) and isinstance(value, tune.TuneError)
    assert "bad value" in str(value) and "Traceback" in str(value)
    assert isinstance(boom, Boom) and boom.code == 7
    # read back from the folder, the same
    again = ExperimentAnalysis(str(tmp_path / "errs")).trials
    assert isinstance(again[0].error, ValueError) and isinstance(again[1].error, Boom)
    assert isinstance(Result.from_path(grid[0].path).error, ValueError)

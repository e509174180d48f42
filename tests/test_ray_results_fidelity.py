"""A Ray Tune script gives the same answers: numbers, returned values, checks, names, folders.

Each test is written from Ray Tune's documented behaviour (issue 17, items 1 and
3-7); those named ``test_ray_*`` are ports of Ray's own unit tests
(``python/ray/tune/tests/test_api.py``, ``test_function_api.py``) with the
import swapped.
"""

from __future__ import annotations

import csv
import os
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RunningDaemon
from gates import Gate, pass_gate
from tuned_client import protocol as p
from tuned_client import tune

# ------------------------------------------------------------------ 1. numbers are numbers


def test_numbers_of_any_numeric_type_travel_as_numbers() -> None:
    metrics = {
        "f32": np.float32(0.5),
        "i64": np.int64(7),
        "flag": np.bool_(True),
        "zero_d": np.array(2.5),
        "dec": Decimal("1.25"),
        "frac": Fraction(1, 4),
        "array": np.array([1, 2]),
        "text": "x",
    }
    back = p.unpack_opaque(p.pack_metrics(metrics))  # as the daemon sees them
    assert back["f32"] == 0.5 and type(back["f32"]) is float
    assert back["i64"] == 7 and type(back["i64"]) is int
    assert back["flag"] is True
    assert back["zero_d"] == 2.5 and back["dec"] == 1.25 and back["frac"] == 0.25
    assert isinstance(back["array"], p.PickledValue)  # an array is not a number: kept as is
    assert back["text"] == "x"
    assert list(p.unpack_user(p.pack_metrics(metrics))["array"]) == [1, 2]


def numpy_trainable(config: dict[str, Any]) -> None:
    for i in range(1, 20):
        tune.report({"loss": np.float32(config["x"] / i), "n": np.int64(i)})


def test_numpy_metrics_rank_stop_and_fill_the_files(daemon: RunningDaemon) -> None:
    grid = tune.Tuner(
        numpy_trainable,
        param_space={"x": tune.grid_search([1.0, 2.0])},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(stop={"n": 5}, verbose=0),
    ).fit()
    best = grid.get_best_result()
    assert best.config == {"x": 1.0} and best.metrics["loss"] == pytest.approx(0.2)
    assert [r.metrics["n"] for r in grid] == [5, 5]  # the stop rule saw a number
    with open(Path(best.path) / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["loss"]) == 1.0 and rows[-1]["n"] == "5"
    frame = best.metrics_dataframe
    assert frame["loss"].dtype.kind == "f" and frame["n"].dtype.kind == "i"


# ------------------------------------------------------------------ 3. returned and yielded values


def returns_a_scalar(config: dict[str, Any]) -> float:
    return config["x"] * 2


def yields_values(config: dict[str, Any]) -> Any:
    for i in range(3):
        yield {"i": i, "x": config["x"]}
    yield 42.0


def reports_positionally(config: dict[str, Any]) -> None:
    tune.report(config["x"] + 1)
    tune.report(config["x"] + 2, extra=1)


def test_ray_returned_and_yielded_values_are_results(daemon: RunningDaemon) -> None:
    """Ray's test_function_api: testReturnAnonymous, testFunctionNoCheckpointing (yield)."""
    run = tune.RunConfig(verbose=0)
    [scalar] = tune.Tuner(returns_a_scalar, param_space={"x": 3}, run_config=run).fit()
    assert scalar.error is None and scalar.metrics["_metric"] == 6
    [gen] = tune.Tuner(yields_values, param_space={"x": 5}, run_config=run).fit()
    assert gen.error is None
    assert [(r.get("i"), r.get("_metric")) for r in gen.history()] == [
        (0, None), (1, None), (2, None), (None, 42.0),
    ]  # fmt: skip
    [pos] = tune.Tuner(reports_positionally, param_space={"x": 1}, run_config=run).fit()
    assert [(r["_metric"], r.get("extra")) for r in pos.history()] == [(2, None), (3, 1)]


# ------------------------------------------------------------------ 4. metric and stop keys


def reports_loss(config: dict[str, Any]) -> None:
    for i in range(1000):
        tune.report({"loss": 1.0 / (i + 1)})
        if i == 0 and "gate" in config:
            pass_gate(config["gate"])  # held until fit() has failed: it must be stopped


def test_a_misspelt_metric_fails_at_the_first_result(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "gate")  # never opened: only fit()'s cancel ends the trial
    tuner = tune.Tuner(
        reports_loss,
        param_space={"gate": str(gate)},
        tune_config=tune.TuneConfig(metric="los", mode="min"),
        run_config=tune.RunConfig(verbose=0, name="misspelt"),
    )
    with pytest.raises(ValueError, match=r"did not include the specified metric.*`los`"):
        tuner.fit()
    assert daemon.status().running == []  # the failed fit() stopped its trial, as Ray's
    rows = (daemon.storage / "misspelt").glob("*/result.json")
    assert all(len(f.read_text().splitlines()) < 1000 for f in rows)  # stopped, not run out


def test_the_metric_check_can_be_turned_off_as_in_ray(
    daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    [result] = tune.Tuner(
        returns_a_scalar,
        param_space={"x": 1},
        tune_config=tune.TuneConfig(metric="los", mode="min"),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert result.error is None


def test_a_misspelt_stop_key_fails_at_the_first_result(daemon: RunningDaemon) -> None:
    tuner = tune.Tuner(reports_loss, run_config=tune.RunConfig(verbose=0, stop={"lossy": 0.1}))
    with pytest.raises(tune.TuneError, match="Stopping criteria lossy not provided"):
        tuner.fit()


# ------------------------------------------------------------------ 5. tune.run stays a function


def test_importing_experiment_analysis_leaves_tune_run_callable() -> None:
    from tuned_client.tune import ExperimentAnalysis  # noqa: F401

    assert callable(tune.run) and tune.run.__name__ == "run"


# ------------------------------------------------------------------ 6. options: honoured or refused


def test_options_that_cannot_be_honoured_are_refused_clearly() -> None:
    with pytest.raises(tune.TuneError, match="URIs"):
        tune.Tuner(returns_a_scalar, run_config=tune.RunConfig(storage_path="s3://bucket/x"))
    with pytest.raises(tune.TuneError, match="trial_dirname_creator"):
        tune.Tuner(
            returns_a_scalar, tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: "x")
        )
    tuner = tune.Tuner(  # Ray refuses it at fit(), before anything runs
        returns_a_scalar,
        run_config=tune.RunConfig(checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=2)),
    )
    with pytest.raises(ValueError, match="checkpoint_frequency"):
        tuner.fit()
    with pytest.raises(DeprecationWarning, match="RAY_CHDIR_TO_TRIAL_DIR"):
        tune.TuneConfig(chdir_to_trial_dir=False)
    with pytest.raises(TypeError, match="log_to_file"):
        tune.Tuner(returns_a_scalar, run_config=tune.RunConfig(log_to_file=3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="progress_reporter"):  # before anything runs
        tune.Tuner(returns_a_scalar, run_config=tune.RunConfig(progress_reporter=object()))


def test_trial_name_creator_names_the_trials_shown(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []

    class Names(tune.Callback):
        def on_trial_complete(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            seen.append(str(trial))

    tune.Tuner(
        returns_a_scalar,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(trial_name_creator=lambda t: f"custom_{t.config['x']}"),
        run_config=tune.RunConfig(callbacks=[Names()]),
    ).fit()
    assert sorted(seen) == ["custom_1", "custom_2"]
    assert "custom_1" in capsys.readouterr().out


# ------------------------------------------------------------------ 7. the working directory


def where_am_i(config: dict[str, Any]) -> dict[str, Any]:
    Path("written_here").write_text("x")
    return {"cwd": os.getcwd(), "orig": os.environ.get("TUNE_ORIG_WORKING_DIR", "")}


def test_ray_a_trial_runs_in_its_own_folder(daemon: RunningDaemon) -> None:
    """Ray's test_api ``testChdirToTrialDir``: the trial's folder, the script's one in the env."""
    [result] = tune.Tuner(where_am_i, run_config=tune.RunConfig(verbose=0)).fit()
    assert result.metrics["cwd"] == result.path
    assert result.metrics["orig"] == os.getcwd()
    assert (Path(result.path) / "written_here").exists()


def test_ray_chdir_to_trial_dir_0_keeps_the_scripts_folder(
    daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")
    monkeypatch.chdir(tmp_path)
    [result] = tune.Tuner(where_am_i, run_config=tune.RunConfig(verbose=0)).fit()
    assert result.metrics["cwd"] == str(tmp_path) == result.metrics["orig"]
    assert (tmp_path / "written_here").exists()

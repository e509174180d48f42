"""``tune.stopper``: Ray's stoppers, their semantics, and their state across a restore.

The unit tests follow Ray's own (``python/ray/tune/tests/test_stopper.py`` and
the stopper cases of ``test_api.py``) with the import swapped; the end-to-end
ones run a real daemon.
"""

from __future__ import annotations

import datetime
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from freezegun import freeze_time
from tuned_client import tune
from tuned_client.tune.stopper import (
    CombinedStopper,
    ExperimentPlateauStopper,
    FunctionStopper,
    MaximumIterationStopper,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
    load_stopper,
)

# ------------------------------------------------------------------ Ray's unit tests


def test_timeout_stopper_timeout() -> None:
    with freeze_time() as frozen:
        stopper = TimeoutStopper(timeout=60)
        assert not stopper.stop_all()
        frozen.tick(40)
        assert not stopper.stop_all()
        frozen.tick(22)
        assert stopper.stop_all()


def test_timeout_stopper_recover_before_timeout() -> None:
    """Checkpointed before the timeout: the time while it was down is not charged."""
    with freeze_time() as frozen:
        stopper = TimeoutStopper(timeout=60)
        assert not stopper.stop_all()
        frozen.tick(40)
        assert not stopper.stop_all()
        checkpoint = pickle.dumps(stopper)
        frozen.tick(200)
        stopper = pickle.loads(checkpoint)
        assert not stopper.stop_all()
        frozen.tick(10)
        assert not stopper.stop_all()
        frozen.tick(12)
        assert stopper.stop_all()


def test_timeout_stopper_recover_after_timeout() -> None:
    with freeze_time() as frozen:
        stopper = TimeoutStopper(timeout=60)
        assert not stopper.stop_all()
        frozen.tick(62)
        assert stopper.stop_all()
        checkpoint = pickle.dumps(stopper)
        frozen.tick(200)
        stopper = pickle.loads(checkpoint)
        assert stopper.stop_all()
        frozen.tick(10)
        assert stopper.stop_all()


def test_timeout_stopper_takes_a_timedelta_and_refuses_anything_else() -> None:
    with freeze_time() as frozen:
        stopper = TimeoutStopper(datetime.timedelta(minutes=1))
        assert not stopper.stop_all()
        frozen.tick(61)
        assert stopper.stop_all()
    with pytest.raises(ValueError, match="timedelta"):
        TimeoutStopper("60")  # type: ignore[arg-type]


def test_maximum_iteration_stopper_counts_results_per_trial() -> None:
    stopper = MaximumIterationStopper(max_iter=3)
    assert [stopper("a", {}) for _ in range(3)] == [False, False, True]
    assert not stopper("b", {})
    assert not stopper.stop_all()


def test_trial_plateau_stopper() -> None:
    stopper = TrialPlateauStopper(metric="loss", std=0.01, num_results=3, grace_period=3)
    # grace period and window: nothing before the third result
    assert not stopper("t", {"loss": 1.0})
    assert not stopper("t", {"loss": 1.0})
    assert stopper("t", {"loss": 1.0})  # three equal values: std 0 < 0.01
    # a moving metric is not a plateau
    assert not any(stopper("u", {"loss": float(i)}) for i in range(6))
    # a missing metric never plateaus (its std is unknown)
    assert not any(stopper("v", {}) for _ in range(6))


def test_trial_plateau_stopper_with_a_threshold() -> None:
    with pytest.raises(ValueError, match="mode"):
        TrialPlateauStopper(metric="loss", metric_threshold=0.5)
    stopper = TrialPlateauStopper(
        metric="loss", std=0.1, num_results=2, grace_period=2, metric_threshold=0.5, mode="min"
    )
    assert not stopper("t", {"loss": 1.0})
    assert not stopper("t", {"loss": 1.0})  # plateaued but not below the threshold
    assert not stopper("t", {"loss": 0.4})
    assert stopper("t", {"loss": 0.4})


def test_experiment_plateau_stopper() -> None:
    with pytest.raises(ValueError):
        ExperimentPlateauStopper(metric="m", mode="avg")
    with pytest.raises(ValueError):
        ExperimentPlateauStopper(metric="m", top=1)
    with pytest.raises(ValueError):
        ExperimentPlateauStopper(metric="m", std=1)  # an int, not a float (as Ray)
    with pytest.raises(ValueError):
        ExperimentPlateauStopper(metric="m", patience=-1)
    stopper = ExperimentPlateauStopper(metric="m", top=3, std=0.001, mode="max", patience=2)
    assert not stopper("a", {"m": 1.0})
    assert not stopper("b", {"m": 1.0})
    assert not stopper("c", {"m": 1.0})  # plateaued, patience not yet spent
    assert stopper("a", {"m": 0.5})  # the top 3 still agree for a second result
    assert stopper.stop_all()


def test_combined_and_function_stoppers_short_circuit_as_rays() -> None:
    counted = MaximumIterationStopper(max_iter=100)
    combined = CombinedStopper(FunctionStopper(lambda tid, r: r["x"] > 1), counted)
    assert not combined("t", {"x": 0})
    assert combined("t", {"x": 2})
    assert counted._iter["t"] == 1  # the second result never reached it
    assert not combined.stop_all()
    assert FunctionStopper.is_valid_function(lambda tid, r: True)
    assert not FunctionStopper.is_valid_function(counted)

    class HalfStopper:
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return True

    with pytest.raises(ValueError, match="Stopper subclass"):
        FunctionStopper.is_valid_function(HalfStopper())


def test_the_base_class_asks_to_be_subclassed() -> None:
    with pytest.raises(NotImplementedError):
        Stopper()("t", {})
    assert tune.Stopper is Stopper and tune.stopper.TimeoutStopper is TimeoutStopper


# ------------------------------------------------------------------ against a daemon


STEPS = 2000


def count_up(config: dict[str, Any]) -> None:
    """Reports until stopped: each report waits for the stoppers' decision on it."""
    for i in range(STEPS):
        tune.report({"loss": config["x"], "i": i})


def test_a_stopper_ends_each_trial_and_is_saved_with_the_experiment(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = tune.Tuner(
        count_up,
        param_space={"x": tune.grid_search([1.0, 2.0])},
        run_config=tune.RunConfig(
            name="stopped", storage_path=str(tmp_path), stop=MaximumIterationStopper(4), verbose=0
        ),
    ).fit()
    assert {r.status for r in results} == {"TERMINATED"}
    # the trial sees the decision at a later report: it may run steps past it, not to the end
    assert all(4 <= r.metrics["training_iteration"] < STEPS for r in results)
    saved = load_stopper(tmp_path / "stopped")
    assert isinstance(saved, MaximumIterationStopper)
    assert sorted(saved._iter.values())[0] >= 4 and len(saved._iter) == 2


def test_an_experiment_plateau_stops_every_trial(daemon: RunningDaemon) -> None:
    stopper = ExperimentPlateauStopper(metric="loss", top=2, std=0.5, mode="min")
    results = tune.Tuner(
        count_up,
        param_space={"x": tune.grid_search([1.0, 1.1])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(stop=stopper, verbose=0),
    ).fit()
    assert all(r.metrics["training_iteration"] < STEPS for r in results)


def test_restore_continues_with_the_saved_stopper(daemon: RunningDaemon, tmp_path: Path) -> None:
    tune.Tuner(
        count_up,
        param_space={"x": 1.0},
        run_config=tune.RunConfig(
            name="again", storage_path=str(tmp_path), stop=MaximumIterationStopper(3), verbose=0
        ),
    ).fit()
    restored = tune.Tuner.restore(str(tmp_path / "again"), count_up, restart_errored=True)
    stop = restored.run_config.stop
    assert isinstance(stop, MaximumIterationStopper)
    assert math.isclose(max(stop._iter.values()), 3, abs_tol=1)

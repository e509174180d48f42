"""Ray Tune's ``python/ray/tune/tests/test_api.py``, import swapped.

Ray's file is mostly Ray's internals (``register_trainable``,
``run_experiments``, ``Experiment``, loggers, durable trainables, the trial
runner); these are its ``TrainableFunctionApiTest`` tests that run trainables
through ``tune.run`` and use only public names, against one daemon for the
module. The indexed version reports through Ray 1.x's ``reporter(**metrics)``
argument; here through ``tune.report({...})``, Ray 2.x's spelling of the same.
Its ``testBadStoppingFunction`` is left out: Ray 2.x takes any callable as a
stop function (it stopped checking the signature up front).
"""

from __future__ import annotations

from typing import Any

import pytest
from tuned_client import tune
from tuned_client.tune import Stopper, Trainable, TuneError
from tuned_client.tune.experiment import Trial
from tuned_client.tune.stopper import MaximumIterationStopper, TrialPlateauStopper

pytestmark = pytest.mark.usefixtures("module_daemon")
TRAINING_ITERATION = "training_iteration"


def test_nested_stopping_return() -> None:  # Ray: testNestedStoppingReturn
    def train(config: dict[str, Any]) -> None:
        for i in range(10):
            tune.report({"test": {"test1": {"test2": i}}})

    with pytest.raises(TuneError):
        tune.run(train, stop={"test": {"test1": {"test2": 6}}})
    [trial] = tune.run(train, stop={"test/test1/test2": 6}).trials
    assert trial.last_result["training_iteration"] == 7


def test_stopping_function() -> None:  # Ray: testStoppingFunction
    def train(config: dict[str, Any]) -> None:
        for i in range(10):
            tune.report({"test": i})

    def stop(trial_id: str, result: dict[str, Any]) -> bool:
        return bool(result["test"] > 6)

    [trial] = tune.run(train, stop=stop).trials
    assert trial.last_result["training_iteration"] == 8


def test_stopping_member_function() -> None:  # Ray: testStoppingMemberFunction
    def train(config: dict[str, Any]) -> None:
        for i in range(10):
            tune.report({"test": i})

    class Stopclass:
        def stop(self, trial_id: str, result: dict[str, Any]) -> bool:
            return bool(result["test"] > 6)

    [trial] = tune.run(train, stop=Stopclass().stop).trials
    assert trial.last_result["training_iteration"] == 8


def test_stopper() -> None:  # Ray: testStopper
    def train(config: dict[str, Any]) -> None:
        for i in range(10):
            tune.report({"test": i})

    class CustomStopper(Stopper):
        def __init__(self) -> None:
            self._count = 0

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self._count += 1
            return bool(result["test"] > 6)

        def stop_all(self) -> bool:
            return self._count > 5

    trials = tune.run(train, num_samples=5, stop=CustomStopper()).trials
    assert all(t.status == Trial.TERMINATED for t in trials)
    assert any(t.last_result.get("training_iteration") is None for t in trials)


def test_maximum_iteration_stopper() -> None:  # Ray: testMaximumIterationStopper
    def train(config: dict[str, Any]) -> None:
        for i in range(10):
            tune.report(it=i)

    stopper = MaximumIterationStopper(max_iter=6)

    out = tune.run(train, stop=stopper)
    assert out.trials[0].last_result[TRAINING_ITERATION] == 6


def test_trial_plateau_stopper() -> None:  # Ray: testTrialPlateauStopper
    def train(config: dict[str, Any]) -> None:
        tune.report(10.0)
        tune.report(11.0)
        tune.report(12.0)
        for _ in range(10):
            tune.report(20.0)

    # num_results = 4, no other constraints --> early stop after 7
    stopper = TrialPlateauStopper(metric="_metric", num_results=4)

    out = tune.run(train, stop=stopper)
    assert out.trials[0].last_result[TRAINING_ITERATION] == 7

    # num_results = 4, grace period 9 --> early stop after 9
    stopper = TrialPlateauStopper(metric="_metric", num_results=4, grace_period=9)

    out = tune.run(train, stop=stopper)
    assert out.trials[0].last_result[TRAINING_ITERATION] == 9

    # num_results = 4, min_metric = 22 --> full 13 iterations
    stopper = TrialPlateauStopper(
        metric="_metric", num_results=4, metric_threshold=22.0, mode="max"
    )

    out = tune.run(train, stop=stopper)
    assert out.trials[0].last_result[TRAINING_ITERATION] == 13


def test_trial_dir_regression(tmp_path: Any) -> None:  # Ray: testTrialDirRegression
    def train(config: dict[str, Any]) -> None:
        for i in range(10):
            tune.report({"test": i})

    trials = tune.run(
        train, config={"t1": tune.grid_search([1, 2, 3])}, storage_path=str(tmp_path)
    ).trials
    logdirs = {t.logdir for t in trials}
    for i in [1, 2, 3]:
        assert any(f"t1={i}" in dirpath for dirpath in logdirs)
    for t in trials:
        assert any(t.trainable_name in dirpath for dirpath in logdirs)


def test_trial_info_access() -> None:  # Ray: testTrialInfoAccess
    class TestTrainable(Trainable):
        def step(self) -> dict[str, Any]:
            return {"name": self.trial_name, "trial_id": self.trial_id}

    analysis = tune.run(TestTrainable, stop={TRAINING_ITERATION: 1})
    trial = analysis.trials[0]
    assert trial.last_result.get("name") == str(trial)
    assert trial.last_result.get("trial_id") == trial.trial_id


def test_trial_info_access_function() -> None:  # Ray: testTrialInfoAccessFunction
    def track_train(config: dict[str, Any]) -> None:
        context = tune.get_context()  # Ray 2.x: tune.get_trial_name() became this
        tune.report(name=context.get_trial_name(), trial_id=context.get_trial_id())

    analysis = tune.run(track_train, stop={TRAINING_ITERATION: 1})
    trial = analysis.trials[0]
    assert trial.last_result.get("name") == str(trial)
    assert trial.last_result.get("trial_id") == trial.trial_id


def test_report_infinity() -> None:  # Ray: testReportInfinity
    def train(config: dict[str, Any]) -> None:
        for _ in range(100):
            tune.report(mean_accuracy=float("inf"))

    [trial] = tune.run(train).trials
    assert trial.status == Trial.TERMINATED
    assert trial.last_result["mean_accuracy"] == float("inf")


def test_error_return() -> None:  # Ray: testErrorReturn
    def train(config: dict[str, Any]) -> None:
        raise Exception("uh oh")

    with pytest.raises(TuneError):
        tune.run(train)


def test_success() -> None:  # Ray: testSuccess
    def train(config: dict[str, Any]) -> None:
        for i in range(100):
            tune.report(timesteps_total=i)

    [trial] = tune.run(train).trials
    assert trial.status == Trial.TERMINATED
    assert trial.last_result["timesteps_total"] == 99


def test_no_raise_flag() -> None:  # Ray: testNoRaiseFlag
    def train(config: dict[str, Any]) -> None:
        raise Exception()

    [trial] = tune.run(train, raise_on_failed_trial=False).trials
    assert trial.status == Trial.ERROR

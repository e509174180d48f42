"""Ray Tune's ``python/ray/tune/tests/test_tuner_restore.py``, import swapped.

The tests that use only public names, run against a real daemon (one per
module, 2 CPUs as Ray's ``ray_start_2_cpus``). Changes from Ray's file, each
for a reason said where it is made: ``ray.train.tests.util``'s dict-checkpoint
helpers are copied here (they are Ray's test utilities, not its API); sleeps
that only pace Ray's actors are shortened; where Ray reaches into
``tuner._local_tuner``, the public ``Tuner.run_config``/``tune_config`` stand in.

Left out: the cloud-storage tests (tuned refuses URIs, see the README), the
``DataParallelTrainer`` case (Ray Train), the one Ray skips, and
``testParamSpaceOverwrite`` (Ray swaps object references into restored
trials' configs; here a re-specified space is checked, and restored trials
keep their configs: README).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
import unittest.mock
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from ray_train_util import create_dict_checkpoint, load_dict_checkpoint
from tuned_client import tune
from tuned_client.tune import (
    Callback,
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    Trainable,
    TuneConfig,
)
from tuned_client.tune.analysis import ExperimentAnalysis
from tuned_client.tune.result_grid import ResultGrid
from tuned_client.tune.schedulers.async_hyperband import ASHAScheduler
from tuned_client.tune.search.optuna import OptunaSearch
from tuned_client.tune.tuner import Tuner

pytestmark = pytest.mark.usefixtures("module_daemon")

TERMINATED, ERROR = "TERMINATED", "ERROR"  # Ray's Trial.TERMINATED / Trial.ERROR


# ------------------------------------------------------------ Ray's helpers


def _dummy_train_fn(config: dict[str, Any]) -> int:
    return 1


def _train_fn_sometimes_failing(config: dict[str, Any]) -> None:
    # Fails if failing is set and marker file exists.
    # Hangs if hanging is set and marker file exists.
    failing, hanging = config["failing_hanging"]

    checkpoint = tune.get_checkpoint()
    if checkpoint:
        checkpoint_dict = load_dict_checkpoint(checkpoint)
        state = {"it": checkpoint_dict["it"]}
    else:
        state = {"it": 0}

    for _ in range(config.get("num_epochs", 1)):
        state["it"] += 1

        with create_dict_checkpoint(state) as checkpoint:
            tune.report(state, checkpoint=checkpoint)

    # We fail after reporting num_epochs checkpoints.
    if failing and failing.exists():
        raise RuntimeError("I am failing")

    if hanging and hanging.exists():
        time.sleep(60)

    state["it"] += 1
    with create_dict_checkpoint(state) as checkpoint:
        tune.report(state, checkpoint=checkpoint)


class _ClassTrainableSometimesFailing(Trainable):
    def step(self) -> dict[str, Any]:
        failing, hanging = self.config["failing_hanging"]
        num_epochs = self.config.get("num_epochs", 1)

        if self.iteration == self.config.get("fail_epochs", 1):
            if failing and failing.exists():
                raise RuntimeError("I am failing")

            if hanging and hanging.exists():
                time.sleep(60)

        return {"it": self.iteration, "done": self.iteration >= num_epochs}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, "data.pkl"), "wb") as f:
            pickle.dump({"it": self.iteration}, f)

    def load_checkpoint(self, checkpoint: Any) -> None:
        pass


class _FailOnStats(Callback):
    """Fail when at least num_trials exist and num_finished have finished."""

    def __init__(self, num_trials: int, num_finished: int = 0, delay_s: float = 0) -> None:
        self.num_trials = num_trials
        self.num_finished = num_finished
        self.delay_s = delay_s
        self.fail_at: float | None = None

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.fail_at:
            if time.monotonic() >= self.fail_at:
                raise RuntimeError("Failing")
            return

        if len(trials) < self.num_trials:
            return

        if len([t for t in trials if t.status in [TERMINATED, ERROR]]) >= self.num_finished:
            self.fail_at = time.monotonic() + self.delay_s


class MockData:
    def __init__(self) -> None:
        import numpy as np

        self.data = np.random.rand(2 * 1024 * 1024)


# ------------------------------------------------------------ the tests


def test_tuner_restore_num_trials(tmpdir: Any) -> None:
    """Number of trials after restoring a finished run should be the same"""
    tuner = Tuner(
        _dummy_train_fn,
        tune_config=TuneConfig(num_samples=4, metric="_metric", mode="max"),
        run_config=RunConfig(name="test_tuner_restore_num_trials", storage_path=str(tmpdir)),
    )
    results = tuner.fit()
    assert len(results) == 4
    assert results.get_best_result().metrics["_metric"] == 1

    del tuner
    tuner = Tuner.restore(str(tmpdir / "test_tuner_restore_num_trials"), trainable=_dummy_train_fn)

    # Check restored results
    results = tuner.get_results()
    assert len(results) == 4
    assert results.get_best_result().metrics["_metric"] == 1

    results = tuner.fit()
    assert len(results) == 4
    assert results.get_best_result().metrics["_metric"] == 1


def _four_with_two_failing(tmpdir: Any, name: str) -> Any:
    fail_marker = tmpdir / "fail_marker"
    fail_marker.write_text("", encoding="utf-8")
    failing_hanging = [(None, None), (fail_marker, None), (None, None), (fail_marker, None)]
    tuner = Tuner(
        _train_fn_sometimes_failing,
        tune_config=TuneConfig(num_samples=1),
        run_config=RunConfig(name=name, storage_path=str(tmpdir)),
        param_space={
            "id": tune.grid_search([0, 1, 2, 3]),
            # Second and third trial fail
            "failing_hanging": tune.sample_from(lambda config: failing_hanging[config["id"]]),
        },
    )
    results = tuner.fit()
    assert len(results) == 4
    assert len(results.errors) == 2
    ordered_results = sorted(results, key=lambda r: r.config["id"])
    # Second and third trial are at iter 1 because they failed after first report
    assert [r.metrics["it"] for r in ordered_results] == [2, 1, 2, 1]
    fail_marker.remove(ignore_errors=True)


def test_tuner_restore_resume_errored(tmpdir: Any) -> None:
    """Resuming errored trials should pick up from previous state"""
    _four_with_two_failing(tmpdir, "test_tuner_restore_resume_errored")

    tuner = Tuner.restore(
        str(tmpdir / "test_tuner_restore_resume_errored"),
        trainable=_train_fn_sometimes_failing,
        resume_errored=True,
    )

    # Check restored results
    results = tuner.get_results()
    assert len(results) == 4
    assert len(results.errors) == 2
    ordered_results = sorted(results, key=lambda r: r.config["id"])
    assert [r.metrics["it"] for r in ordered_results] == [2, 1, 2, 1]

    # Get new results
    results = tuner.fit()

    assert len(results) == 4
    assert len(results.errors) == 0
    ordered_results = sorted(results, key=lambda r: r.config["id"])
    # Since the errored trials are being resumed from previous state and then report
    # two more times, we should observe 3 here.
    assert [r.metrics["it"] for r in ordered_results] == [2, 3, 2, 3]


def test_tuner_restore_restart_errored(tmpdir: Any) -> None:
    """Restarting errored trials should re-start from scratch"""
    _four_with_two_failing(tmpdir, "test_tuner_restore_restart_errored")

    tuner = Tuner.restore(
        str(tmpdir / "test_tuner_restore_restart_errored"),
        trainable=_train_fn_sometimes_failing,
        restart_errored=True,
    )

    # Check restored results
    results = tuner.get_results()
    assert len(results) == 4
    assert len(results.errors) == 2
    ordered_results = sorted(results, key=lambda r: r.config["id"])
    assert [r.metrics["it"] for r in ordered_results] == [2, 1, 2, 1]

    # Get new results
    results = tuner.fit()
    assert len(results) == 4
    assert len(results.errors) == 0
    ordered_results = sorted(results, key=lambda r: r.config["id"])
    # Since the errored trials are being restarted from scratch, they should report 2
    assert [r.metrics["it"] for r in ordered_results] == [2, 2, 2, 2]


def _interrupted_run(tmpdir: Any, name: str) -> dict[str, Any]:
    fail_marker = tmpdir / "fail_marker"
    fail_marker.write_text("", encoding="utf-8")
    hang_marker = tmpdir / "hang_marker"
    hang_marker.write_text("", encoding="utf-8")
    param_space = {
        # First trial succeeds, second hangs, third fails, fourth hangs
        "failing_hanging": tune.grid_search(
            [(None, None), (None, hang_marker), (fail_marker, None), (None, hang_marker)]
        ),
    }
    tuner = Tuner(
        _train_fn_sometimes_failing,
        tune_config=TuneConfig(num_samples=1),
        run_config=RunConfig(
            name=name,
            storage_path=str(tmpdir),
            failure_config=FailureConfig(fail_fast=False),
            callbacks=[_FailOnStats(num_trials=4, num_finished=2, delay_s=0.3)],
        ),
        param_space=param_space,
    )
    # Catch the FailOnStats error
    with pytest.raises(RuntimeError):
        tuner.fit()
    fail_marker.remove(ignore_errors=True)
    hang_marker.remove(ignore_errors=True)
    return param_space


def _last_it(result: Any) -> int:
    return int((result.metrics or {}).get("it", 0))


def test_tuner_resume_unfinished(tmpdir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming unfinished trials should pick up existing state"""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0.1")
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "1")
    param_space = _interrupted_run(tmpdir, "test_tuner_resume_unfinished")

    tuner = Tuner.restore(
        str(tmpdir / "test_tuner_resume_unfinished"),
        trainable=_train_fn_sometimes_failing,
        param_space=param_space,
    )
    tuner.run_config.callbacks = None  # Ray: tuner._local_tuner._run_config.callbacks
    # Ray's run leaves [('TERMINATED', 2), ('RUNNING', 1), ('ERROR', 1), ('PENDING', None)]
    # and expects [2, 3, 1, 2]. Trials start faster here, so the fourth may have
    # reported once (it=1) before the callback failed: then it resumes to 3. What
    # Ray checks holds either way: unfinished trials go on from their state.
    before = {r.trial_id: _last_it(r) for r in tuner.get_results()}
    assert sorted(before.values())[-1] == 2  # the first trial finished

    results = tuner.fit()
    assert len(results) == 4
    assert len(results.errors) == 1
    expected = []
    for r in results:
        it = before[r.trial_id]
        if r.error is not None:  # the one that really failed: not continued
            expected.append(1)
        else:
            expected.append(it if it == 2 else it + 2)
    assert sorted(_last_it(r) for r in results) == sorted(expected)
    assert sorted(expected)[:3] == [1, 2, 2] or sorted(expected) == [1, 2, 3, 3]


def test_tuner_resume_errored_only(tmpdir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not resuming unfinished trials (but only errored and pending) should work"""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0.1")
    _interrupted_run(tmpdir, "test_tuner_resume_errored_only")

    tuner = Tuner.restore(
        str(tmpdir / "test_tuner_resume_errored_only"),
        trainable=_train_fn_sometimes_failing,
        resume_unfinished=False,
        resume_errored=True,
    )
    tuner.run_config.callbacks = None  # Ray: tuner._local_tuner._run_config.callbacks
    before = {r.trial_id: _last_it(r) for r in tuner.get_results()}

    results = tuner.fit()
    assert len(results) == 4
    assert len(results.errors) == 0
    # Ray: [2, 1, 3, 0]: the finished trial stays at 2, the running one and the
    # pending one are not continued (marked terminated), the errored one goes on to 3.
    # Here the fourth may have reported once before the callback failed (it=1).
    got = sorted(_last_it(r) for r in results)
    assert got in ([0, 1, 2, 3], [1, 1, 2, 3])
    assert sorted(before.values()) in ([0, 1, 1, 2], [1, 1, 1, 2])


@pytest.mark.parametrize("retry_num", [0, 2])
def test_restore_retry(tmpdir: Any, retry_num: int) -> None:
    """Test retrying restore on a trial level by setting `TUNE_RESTORE_RETRY_NUM`."""

    class MockTrainable(Trainable):
        """A trainable that can generate one failure during training and
        another `config["retry_num_to_fail"]` times during restoring."""

        def setup(self, config: dict[str, Any]) -> None:
            self.idx = 0
            self.tag_file_path = config["tag_file_path"]
            self.retry_num_to_fail = 2
            self._is_restored = False

        def step(self) -> dict[str, Any]:
            # Ray sleeps 1 s here to pace its actors; nothing here needs it.
            if self.idx == 0 and self._is_restored:
                raise RuntimeError("===== Restored trial cannot start from scratch =====")
            elif self.idx == 2 and not self._is_restored:
                raise RuntimeError("===== First run fails at idx=2 =====")
            self.idx += 1
            return {"score": self.idx}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            path = os.path.join(checkpoint_dir, "checkpoint")
            with open(path, "w") as f:
                f.write(json.dumps({"idx": self.idx}))

        def load_checkpoint(self, checkpoint_dir: Any) -> None:
            self._is_restored = True
            with open(self.tag_file_path) as f:
                retried_num = json.loads(f.read())["retried_num"]

            with open(self.tag_file_path, "w") as f:
                f.write(json.dumps({"retried_num": retried_num + 1}))

            if retried_num < self.retry_num_to_fail:
                raise RuntimeError(f"===== Failing restore #{retried_num + 1} =====")
            with open(os.path.join(checkpoint_dir, "checkpoint")) as f:
                self.idx = json.loads(f.read())["idx"]

    with unittest.mock.patch.dict(os.environ, {"TUNE_RESTORE_RETRY_NUM": str(retry_num)}):
        tag_file = os.path.join(tmpdir, "tag")
        with open(tag_file, "w") as f:
            f.write(json.dumps({"retried_num": 0}))
        tuner = Tuner(
            MockTrainable,
            run_config=RunConfig(
                name="tryout_restore",
                stop={"training_iteration": 5},
                storage_path=str(tmpdir),
                failure_config=FailureConfig(max_failures=2),
                checkpoint_config=CheckpointConfig(checkpoint_frequency=1),
            ),
            param_space={"tag_file_path": tag_file},
        )
        results = tuner.fit()
        [result] = list(results)
        if retry_num > 0:
            assert result.metrics["score"] == 5
        else:
            assert result.metrics["score"] == 2


def test_restore_overwrite_trainable(tmpdir: Any) -> None:
    """Test validation for trainable compatibility, when re-specifying a trainable
    on restore."""

    def train_func_1(config: dict[str, Any]) -> None:
        data = {"data": config["data"]}
        with create_dict_checkpoint(data) as checkpoint:
            tune.report(data, checkpoint=checkpoint)
        raise RuntimeError("Failing!")

    tuner = Tuner(
        train_func_1,
        run_config=RunConfig(name="overwrite_trainable", storage_path=str(tmpdir)),
        param_space={"data": 1},
    )
    tuner.fit()

    del tuner

    # Can't overwrite with a different Trainable type
    with pytest.raises(ValueError):
        Tuner.restore(
            str(tmpdir / "overwrite_trainable"),
            trainable="abcd",  # type: ignore[arg-type]
            resume_errored=True,
        )

    # Can't overwrite with a different Trainable name
    def train_func_2(config: dict[str, Any]) -> None:
        raise RuntimeError("Should not run...")

    with pytest.raises(ValueError):
        Tuner.restore(
            str(tmpdir / "overwrite_trainable"), trainable=train_func_2, resume_errored=True
        )

    # Can technically change trainable code (not recommended!)
    def train_func_1(config: dict[str, Any]) -> None:  # type: ignore[no-redef]
        checkpoint = tune.get_checkpoint()
        assert checkpoint and load_dict_checkpoint(checkpoint)["data"] == config["data"]

    tuner = Tuner.restore(
        str(tmpdir / "overwrite_trainable"), trainable=train_func_1, resume_errored=True
    )
    results = tuner.fit()
    assert not results.errors


@pytest.mark.parametrize("use_function_trainable", [True, False])
def test_restore_with_parameters(tmp_path: Path, use_function_trainable: bool) -> None:
    """Tests Tuner restoration for a `tune.with_parameters` wrapped trainable."""

    def train_func(config: dict[str, Any], data_str: Any = None, data_obj: Any = None) -> None:
        assert data_str is not None and data_obj is not None
        fail_marker = config.pop("fail_marker", None)
        config["failing_hanging"] = (fail_marker, None)
        _train_fn_sometimes_failing(config)

    class FailingTrainable(Trainable):
        def setup(self, config: dict[str, Any], data_str: Any = None, data_obj: Any = None) -> None:
            assert data_str is not None and data_obj is not None
            self.idx = 0
            self.fail_marker = config.get("fail_marker")

        def step(self) -> dict[str, Any]:
            if self.fail_marker and self.fail_marker.exists():
                raise RuntimeError("==== Run is failing ====")
            self.idx += 1
            return {"score": self.idx}

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            return {"idx": self.idx}

        def load_checkpoint(self, checkpoint_dict: Any) -> None:
            self.idx = checkpoint_dict["idx"]

    trainable: Any = train_func if use_function_trainable else FailingTrainable

    def create_trainable_with_params() -> Any:
        data = MockData()
        return tune.with_parameters(trainable, data_str="data", data_obj=data)

    exp_name = f"restore_with_params-{use_function_trainable=}"
    fail_marker = tmp_path / "fail_marker"
    fail_marker.write_text("", encoding="utf-8")

    tuner = Tuner(
        create_trainable_with_params(),
        run_config=RunConfig(
            name=exp_name,
            storage_path=str(tmp_path),
            stop={"training_iteration": 3},
            failure_config=FailureConfig(max_failures=0),
            checkpoint_config=CheckpointConfig(
                checkpoint_frequency=0 if use_function_trainable else 1
            ),
        ),
        param_space={"fail_marker": fail_marker},
    )
    results = tuner.fit()
    assert results.errors

    fail_marker.unlink()
    tuner = Tuner.restore(
        str(tmp_path / exp_name), trainable=create_trainable_with_params(), resume_errored=True
    )
    results = tuner.fit()
    assert not results.errors


@pytest.mark.parametrize("use_tune_run", [True, False])
def test_tuner_restore_from_moved_experiment_path(tmp_path: Path, use_tune_run: bool) -> None:
    """Check that restoring a Tuner from a moved experiment directory works."""
    fail_marker = tmp_path / "fail_marker"
    fail_marker.write_text("", encoding="utf-8")

    old_storage_path = tmp_path / "ray_results"
    old_exp_name = "exp_dir"

    new_storage_path = tmp_path / "new_ray_results"
    new_exp_name = "new_exp_dir"

    # Initial training run (that errors out in the middle)
    num_to_keep = 2
    tuner = Tuner(
        _train_fn_sometimes_failing,
        tune_config=TuneConfig(num_samples=1),
        run_config=RunConfig(
            name=old_exp_name,
            storage_path=str(old_storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
        ),
        param_space={"failing_hanging": (fail_marker, None)},
    )
    tuner.fit()

    # Move experiment from `tmp_path/ray_results/exp_dir`
    # to `tmp_path/moved_ray_results/new_exp_dir`, changing both `storage_path` and
    # the experiment `name`
    shutil.move(str(old_storage_path), str(new_storage_path))
    os.rename(str(new_storage_path / old_exp_name), str(new_storage_path / new_exp_name))

    # Check that the results can be read from the new location.
    restore_path = str(new_storage_path / new_exp_name)
    results = ResultGrid(ExperimentAnalysis(restore_path))

    assert len(results.errors) == 1
    training_iteration = results[0].metrics["training_iteration"]
    assert training_iteration == 1, (
        f"Should only have 1 tune.report before erroring, got {training_iteration}"
    )
    assert results[0].checkpoint.path.endswith("checkpoint_000000")
    assert "new_exp_dir" in results[0].checkpoint.path

    del tuner
    # Remove fail_marker so that the restored Tuner doesn't error again
    fail_marker.unlink()

    # Restore from moved experiment directory location, and launch resumed training
    if use_tune_run:
        analysis = tune.run(
            _train_fn_sometimes_failing,
            name=new_exp_name,
            storage_path=str(new_storage_path),
            resume="AUTO+ERRORED",
        )
        results = ResultGrid(analysis)
    else:
        tuner = Tuner.restore(
            restore_path, trainable=_train_fn_sometimes_failing, resume_errored=True
        )
        results = tuner.fit()

    assert len(results.errors) == 0

    # Check that we restored iter=1, then made 2 calls to tune.report -> iter=3
    training_iteration = results[0].metrics["training_iteration"]
    assert training_iteration == 3, training_iteration

    # Make sure that checkpoints are loaded properly
    assert results[0].checkpoint
    assert len(results[0].best_checkpoints) == num_to_keep
    checkpoint_dirs = [
        path for path in os.listdir(results[0].path) if path.startswith("checkpoint_")
    ]
    assert sorted(checkpoint_dirs) == ["checkpoint_000001", "checkpoint_000002"]

    # Make sure that we did not create a logdir in the old location
    assert not old_storage_path.exists()


def test_custom_searcher_and_scheduler_restore(tmpdir: Any) -> None:
    """Check that a restored Tune experiment uses the original searcher/scheduler."""
    fail_marker = tmpdir / "fail_marker"
    fail_marker.write_text("", encoding="utf-8")

    class MockSearcher(OptunaSearch):
        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            super().on_trial_result(trial_id, result)
            if not hasattr(self, "_test_result_counter"):
                self._test_result_counter = 0
            self._test_result_counter += 1

    class MockScheduler(ASHAScheduler):
        def on_trial_result(self, runner: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(runner, trial, result)
            if not hasattr(self, "_test_result_counter"):
                self._test_result_counter = 0
            self._test_result_counter += 1
            return decision

    tuner = Tuner(
        _train_fn_sometimes_failing,
        run_config=RunConfig(storage_path=str(tmpdir), name="exp_name"),
        tune_config=TuneConfig(
            search_alg=MockSearcher(), scheduler=MockScheduler(), metric="it", mode="max"
        ),
        param_space={"a": tune.uniform(0, 1), "failing_hanging": (fail_marker, None)},
    )
    tuner.fit()

    del tuner
    fail_marker.remove(ignore_errors=True)

    tuner = Tuner.restore(
        str(tmpdir / "exp_name"), trainable=_train_fn_sometimes_failing, resume_errored=True
    )
    tuner.fit()
    searcher = tuner.tune_config.search_alg  # Ray: tuner._local_tuner._tune_config
    scheduler = tuner.tune_config.scheduler
    assert isinstance(searcher, MockSearcher)
    assert isinstance(scheduler, MockScheduler)
    # Searcher state should get loaded correctly
    # Total of 3 reported results (1 from before failure, 2 after restore)
    assert searcher._test_result_counter == 3
    # Make sure that the restored scheduler is at least used
    assert hasattr(scheduler, "_test_result_counter") and scheduler._test_result_counter > 0


@pytest.mark.parametrize("trainable_type", ["function", "class"])
def test_checkpoints_saved_after_resume(tmp_path: Path, trainable_type: str) -> None:
    """Checkpoints saved after experiment restore should pick up at the correct
    iteration and should not overwrite the checkpoints from the original run.
    Old checkpoints should still be deleted if the total number of checkpoints
    (old + new) exceeds `num_to_keep`.
    """

    def get_checkpoints(experiment_dir: str) -> tuple[list[str], list[Checkpoint]]:
        checkpoint_dirs = [
            path for path in os.listdir(experiment_dir) if path.startswith("checkpoint_")
        ]
        sorted_checkpoint_dirs = sorted(checkpoint_dirs)
        checkpoints = [
            Checkpoint.from_directory(os.path.join(experiment_dir, d))
            for d in sorted_checkpoint_dirs
        ]
        return sorted_checkpoint_dirs, checkpoints

    fail_marker = tmp_path / "fail_marker"
    fail_marker.write_text("", encoding="utf-8")

    num_to_keep = 4
    checkpoint_config = CheckpointConfig(num_to_keep=num_to_keep)
    param_space: dict[str, Any] = {"failing_hanging": (fail_marker, None), "num_epochs": 2}

    trainable: Any
    if trainable_type == "function":
        trainable = _train_fn_sometimes_failing
    else:
        trainable = _ClassTrainableSometimesFailing
        checkpoint_config.checkpoint_frequency = 1
        param_space["num_epochs"] = 4
        param_space["fail_epochs"] = 2

    exp_name = f"trainable_type={trainable_type}"  # Ray's has quotes: refused here (README)

    tuner = Tuner(
        trainable,
        tune_config=TuneConfig(num_samples=1),
        run_config=RunConfig(
            name=exp_name, storage_path=str(tmp_path), checkpoint_config=checkpoint_config
        ),
        param_space=param_space,
    )
    results = tuner.fit()
    training_iteration = results[0].metrics["training_iteration"]
    assert training_iteration == 2, (
        f"Should be at 2 iters before erroring, got {training_iteration}"
    )

    # Initial run saves the first 2 checkpoints
    checkpoint_dirs, checkpoints = get_checkpoints(results[0].path)
    assert checkpoint_dirs == ["checkpoint_000000", "checkpoint_000001"]
    assert [load_dict_checkpoint(ckpt)["it"] for ckpt in checkpoints] == [1, 2]

    fail_marker.unlink()
    tuner = Tuner.restore(str(tmp_path / exp_name), trainable=trainable, resume_errored=True)
    results = tuner.fit()

    assert len(results.errors) == 0
    training_iteration = results[0].metrics["training_iteration"]
    # Restored at it=2, reported 3 more times -> should have it=5
    assert training_iteration == 5

    # Restored run saves the 3 more checkpoints, and first checkpoint should be deleted
    checkpoint_dirs, checkpoints = get_checkpoints(results[0].path)
    assert checkpoint_dirs == [f"checkpoint_00000{i}" for i in range(1, 5)]
    assert [load_dict_checkpoint(ckpt)["it"] for ckpt in checkpoints] == [2, 3, 4, 5]


def test_tuner_can_restore(tmp_path: Path) -> None:
    """Make sure that `can_restore` detects an existing experiment at a
    path and only returns True if it's at the experiment dir root.
    """
    name = "exp_name"
    Tuner(lambda _: print("dummy"), run_config=RunConfig(name=name, storage_path=str(tmp_path)))

    assert Tuner.can_restore(tmp_path / name)
    assert not Tuner.can_restore(tmp_path)
    assert not Tuner.can_restore(tmp_path / name / "other")


def testParamSpaceOverwriteValidation(tmp_path: Path, module_daemon: RunningDaemon) -> None:
    """Check that validation on restore fails if we try adding or removing
    hyperparameters to the param_space."""
    name = "test_param_space_valid"
    param_space = {"a": 1, "b": {"c": tune.choice([0, 1])}, "d": tune.uniform(0, 1)}
    tuner = Tuner(
        lambda _: print("dummy"),
        param_space=param_space,
        run_config=RunConfig(storage_path=str(tmp_path), name=name),
    )
    tuner.fit()

    bad_param_spaces: list[dict[str, Any]] = [
        {},
        {"a": 1, "b": {}, "d": 2},
        {"a": 1, "b": {"c": 2, "e": 3}, "d": 4},
    ]
    for bad_param_space in bad_param_spaces:
        with pytest.raises(ValueError):
            Tuner.restore(
                str(tmp_path / name), lambda _: print("dummy"), param_space=bad_param_space
            )

    # Should work with the original param space
    Tuner.restore(str(tmp_path / name), trainable=lambda _: print("dummy"), param_space=param_space)

"""Ray Tune's ``python/ray/tune/tests/test_tuner.py``, import swapped.

The tests of Ray's file that use a function trainable and public names, against
one 2-CPU daemon for the module. Left out: the Ray Train trainers
(``XGBoostTrainer``, ``TorchTrainer``, ``DataParallelTrainer``, Ray Datasets),
``test_tuner_api_kwargs`` (it patches ``ray.tune.impl.tuner_internal.run``),
``test_tuner_restore_classmethod`` (RLlib's registered "PPO"), the
``runtime_env={"working_dir": "."}`` cases (a Ray cluster's), and the deprecated
``TuneConfig(chdir_to_trial_dir=...)`` case (tuned raises Ray 2.x's
``DeprecationWarning`` for it: README). ``test_invalid_param_space`` leaves out
Ray's private ``ray.tune.tune._Config``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tuned_client import train, tune
from tuned_client.train import CheckpointConfig, RunConfig
from tuned_client.tune.tuner import Tuner

pytestmark = pytest.mark.usefixtures("module_daemon")

RAY_CHDIR_TO_TRIAL_DIR = "RAY_CHDIR_TO_TRIAL_DIR"  # ray.train.constants


@pytest.fixture
def chdir_tmpdir(tmpdir: Any) -> Iterator[Any]:
    old_cwd = os.getcwd()
    os.chdir(tmpdir)
    yield tmpdir
    os.chdir(old_cwd)


def test_tuner_fn_trainable_invalid_checkpoint_config() -> None:
    tuner = Tuner(
        lambda config: 1,
        run_config=RunConfig(checkpoint_config=CheckpointConfig(checkpoint_at_end=True)),
    )
    with pytest.raises(ValueError):
        tuner.fit()

    tuner = Tuner(
        lambda config: 1,
        run_config=RunConfig(checkpoint_config=CheckpointConfig(checkpoint_frequency=1)),
    )
    with pytest.raises(ValueError):
        tuner.fit()


def test_tuner_fn_trainable_checkpoint_at_end_false() -> None:
    tuner = Tuner(
        lambda config: 1,
        run_config=RunConfig(checkpoint_config=CheckpointConfig(checkpoint_at_end=False)),
    )
    tuner.fit()


def test_tuner_fn_trainable_checkpoint_at_end_none() -> None:
    tuner = Tuner(
        lambda config: 1,
        run_config=RunConfig(checkpoint_config=CheckpointConfig(checkpoint_at_end=None)),
    )
    tuner.fit()


def test_nonserializable_trainable() -> None:
    import threading

    lock = threading.Lock()
    with pytest.raises(TypeError, match=r".*was found to be non-serializable.*"):
        Tuner(lambda config: print(lock))


def _test_no_chdir() -> None:
    # Write a data file that we want to read in our training loop
    with open("./read.txt", "w") as f:
        f.write("data")

    def train_func(config: dict[str, Any]) -> None:
        # Make sure we can access the data from the original working dir
        assert os.path.exists("./read.txt") and Path("./read.txt").read_text() == "data"

        # Write operations should happen in each trial's independent logdir to
        # prevent write conflicts
        trial_dir = Path(train.get_context().get_trial_dir())
        trial_dir.joinpath("write.txt").touch()

    tuner = Tuner(train_func, param_space={"id": tune.grid_search(list(range(4)))})
    results = tuner.fit()
    assert not results.errors

    for result in results:
        assert os.path.exists(os.path.join(result.path, "write.txt"))


def test_tuner_no_chdir_to_trial_dir(chdir_tmpdir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that disabling the env var to keep the working directory the same
    works for a Tuner run."""
    monkeypatch.setenv(RAY_CHDIR_TO_TRIAL_DIR, "0")
    _test_no_chdir()


def test_tuner_relative_pathing_with_env_vars(chdir_tmpdir: Any) -> None:
    """Tests that `TUNE_ORIG_WORKING_DIR` environment variable can be used to access
    relative paths to the original working directory.
    """
    # Write a data file that we want to read in our training loop
    with open("./read.txt", "w") as f:
        f.write("data")

    def train_func(config: dict[str, Any]) -> None:
        orig_working_dir = Path(os.environ["TUNE_ORIG_WORKING_DIR"])
        assert str(orig_working_dir) != os.getcwd(), (
            f"Working directory should have changed from {orig_working_dir}"
        )

        # Make sure we can access the data from the original working dir
        data_path = orig_working_dir / "read.txt"
        assert os.path.exists(data_path) and data_path.read_text() == "data"

        trial_dir = Path(train.get_context().get_trial_dir())
        # Tune should change the working directory to the trial directory
        assert str(trial_dir) == os.getcwd()

        with open(trial_dir / "write.txt", "w") as f:
            f.write(f"{config['id']}")

    tuner = Tuner(train_func, param_space={"id": tune.grid_search(list(range(4)))})
    results = tuner.fit()
    assert not results.errors
    for result in results:
        artifact_data = Path(result.path, "write.txt").read_text()
        assert artifact_data == f"{result.config['id']}"


def test_invalid_param_space() -> None:
    """Check that Tune raises an error on invalid param_space types."""

    def trainable(config: dict[str, Any]) -> dict[str, Any]:
        return {"metric": 1}

    with pytest.raises(ValueError):
        Tuner(trainable, param_space="not allowed")  # type: ignore[arg-type]

    with pytest.raises(ValueError):
        tune.run(trainable, config="not allowed")  # type: ignore[arg-type]

    # Dict and custom _Config subclasses are fine
    Tuner(trainable, param_space={}).fit()

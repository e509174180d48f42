"""``tune.with_parameters``: large objects reach every trial without riding in the trainable.

Ray puts them in its object store; here they are stored once in the
experiment's folder, named by their sha256, and the pickled trainable (which
the daemon journals and ``Submit`` carries) holds only their names.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import cloudpickle
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.tune.parameters import INLINE_LIMIT, PARAMETERS_DIR, parameters_folder

BIG = 16 * 2**20


def digest(config: dict[str, Any], data: bytes, small: int) -> dict[str, Any]:
    return {"sha": hashlib.sha256(data).hexdigest(), "n": len(data), "small": small * config["k"]}


class Holder(tune.Trainable):
    def setup(self, config: dict[str, Any], data: bytes = b"") -> None:
        self.n = len(data)

    def step(self) -> dict[str, Any]:
        return {"n": self.n, "done": True}


def test_a_16_mb_object_is_stored_once_not_pickled_into_the_trainable(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    trainable = tune.with_parameters(digest, data=data, small=3)
    run = tune.RunConfig(name="big", storage_path=str(tmp_path), verbose=0)
    results = tune.Tuner(
        trainable, param_space={"k": tune.grid_search([1, 2])}, run_config=run
    ).fit()
    want = hashlib.sha256(data).hexdigest()
    assert sorted((r.metrics["sha"], r.metrics["n"], r.metrics["small"]) for r in results) == [
        (want, BIG, 3),
        (want, BIG, 6),
    ]
    exp = tmp_path / "big"
    (trainable_file,) = exp.glob("trainable-*.pkl")
    assert trainable_file.stat().st_size < INLINE_LIMIT
    journal = daemon.state_dir / "journal.bin"
    assert journal.stat().st_size < BIG // 4  # the Submit the daemon journaled was small
    store = exp / PARAMETERS_DIR
    (blob,) = store.iterdir()
    assert blob.name == hashlib.sha256(cloudpickle.dumps(data)).hexdigest() + ".pkl"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    first_write = blob.stat().st_mtime_ns
    # the same data again, same experiment name (so the same folder): nothing rewritten
    tune.Tuner(trainable, param_space={"k": 1}, run_config=run).fit()
    assert [p.name for p in store.iterdir()] == [blob.name]
    assert blob.stat().st_mtime_ns == first_write


def test_a_class_trainable_gets_its_parameters_from_the_store(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    data = os.urandom(INLINE_LIMIT * 2)
    results = tune.Tuner(
        tune.with_parameters(Holder, data=data),
        run_config=tune.RunConfig(name="cls", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert results[0].metrics["n"] == len(data)
    assert len(list((tmp_path / "cls" / PARAMETERS_DIR).iterdir())) == 1


def test_outside_a_tuner_objects_travel_inline_and_load_lazily(tmp_path: Path) -> None:
    data = os.urandom(INLINE_LIMIT * 2)
    plain = cloudpickle.dumps(tune.with_parameters(digest, data=data, small=1))
    assert len(plain) > len(data)  # no folder to put them in: inline, as before
    with parameters_folder(tmp_path):
        stored = cloudpickle.dumps(tune.with_parameters(digest, data=data, small=1))
    assert len(stored) < INLINE_LIMIT
    store = tmp_path / PARAMETERS_DIR
    store.rename(tmp_path / "away")
    fn = pickle.loads(stored)  # loading the trainable reads no object (a zygote does this)
    (tmp_path / "away").rename(store)
    assert fn({"k": 2})["n"] == len(data)  # the first call does


def test_with_parameters_refuses_what_is_not_a_trainable() -> None:
    import pytest

    with pytest.raises(ValueError, match="only works with function trainables"):
        tune.with_parameters(42, data=1)

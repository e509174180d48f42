"""``tuner.pkl``: what ``Tuner.restore`` needs from the script that made the experiment.

As Ray's, it is written into the experiment folder when the ``Tuner`` is made
(with a ``RunConfig(name=...)``: the folder is known then; otherwise once the
daemon has accepted the experiment), so ``Tuner.can_restore`` is true as soon
as the folder exists. It holds the ``TuneConfig`` (metric, mode, the searcher
and scheduler as they were given), the ``RunConfig`` (stop, callbacks,
failure and checkpoint settings), the ``param_space`` and, to check what the
restoring script passes, the trainable's name and the space's flattened keys.
The searcher's and scheduler's later state are saved beside it by the
steering loop (``searcher-state.pkl``, ``scheduler-state.pkl``).

Ray leaves the ``param_space`` out (it may hold object references of a gone
cluster); here it is kept, so an adaptive search goes on with the constants
of the space without the script passing it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cloudpickle

from .. import protocol as p
from .. import safedir
from ..paths import default_storage_path
from .config import RunConfig, TuneConfig
from .fit_settings import FitSettings, trainable_name
from .utils import flatten_dict

TUNER_STATE_FILE = "tuner.pkl"

C = TypeVar("C", TuneConfig, RunConfig)


@dataclass
class SavedTuner:
    tune_config: TuneConfig
    run_config: RunConfig
    param_space: dict[str, Any] | None
    trainable_name: str | None
    param_space_keys: list[str] | None


def tuner_state_path(experiment_dir: str | os.PathLike[str]) -> Path:
    return Path(experiment_dir).expanduser() / TUNER_STATE_FILE


def _picklable(obj: Any) -> bool:
    try:
        cloudpickle.dumps(obj)
    except Exception:
        return False
    return True


def _portable(cfg: C) -> C:
    """``cfg`` itself if it pickles; else a copy without the fields that do not (said once)."""
    if _picklable(cfg):
        return cfg
    kept, left = {}, []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _picklable(value):
            kept[f.name] = value
        else:
            left.append(f.name)
    print(
        f"tuned: {type(cfg).__name__}({', '.join(left)}) cannot be pickled; Tuner.restore "
        "will need it again (pass it to Tuner.restore)",
        file=sys.stderr,
    )
    return type(cfg)(**kept)


def save_tuner(fit: FitSettings, experiment_dir: str | os.PathLike[str]) -> None:
    """Write ``tuner.pkl`` (owner-only: the space and callbacks may hold secrets)."""
    state = {
        "tune_config": fit.tune_config,
        "run_config": fit.run_config,
        "param_space": fit.param_space,
        "__trainable_name": trainable_name(fit.trainable),
        "__flattened_param_space_keys": sorted(flatten_dict(fit.param_space)),
    }
    try:
        blob = cloudpickle.dumps(state)
    except Exception:  # keep what pickles; say what the restoring script must pass again
        state["tune_config"] = _portable(fit.tune_config)
        state["run_config"] = _portable(fit.run_config)
        state["param_space"] = fit.param_space if _picklable(fit.param_space) else None
        blob = cloudpickle.dumps(state)
    path = tuner_state_path(experiment_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def keep_tuner(fit: FitSettings, experiment_dir: str | os.PathLike[str]) -> None:
    """``save_tuner`` once the experiment runs: a full or read-only disk costs the
    restore its saved settings (said on stderr), never the run itself."""
    try:
        save_tuner(fit, experiment_dir)
    except OSError as exc:
        print(
            f"tuned: could not write {TUNER_STATE_FILE} into {experiment_dir} ({exc}); "
            "Tuner.restore will need the settings passed again",
            file=sys.stderr,
        )


def storage_of(fit: FitSettings) -> str:
    """Where the experiment's folder goes, as ``Tuner(...)`` knows it."""
    rc = fit.run_config
    return rc.storage_path or rc.local_dir or str(default_storage_path())


def _early_folder(fit: FitSettings, storage_path: str) -> Path | None:
    """The folder of ``RunConfig(name=)``, if named and no experiment ran (or runs) there."""
    name = fit.run_config.name
    if not name or os.path.basename(name) != name or name in (".", ".."):
        return None  # a made-up name is known at fit(); a bad one is refused there
    folder = Path(storage_path).expanduser() / name
    if (folder / p.EXPERIMENT_STATE_FILE).exists():
        return None  # its tuner.pkl is replaced at fit(), once the daemon accepts it
    return folder


def save_tuner_early(fit: FitSettings, storage_path: str) -> None:
    """At ``Tuner(...)``, as Ray: only with a name given, and never over a run's folder."""
    folder = _early_folder(fit, storage_path)
    if folder is None:
        return
    with contextlib.suppress(OSError):  # an unwritable storage_path is reported at fit()
        if folder.is_dir():  # nothing of ours in a folder another user could change:
            safedir.check(folder)  # the daemon refuses it at fit(), saying why
        save_tuner(fit, folder)


def discard_early_tuner(fit: FitSettings, storage_path: str) -> None:
    """The daemon refused ``fit()``: nothing ran, so the ``tuner.pkl`` of ``Tuner(...)``
    goes, and its folder if that leaves it empty (a refused request leaves nothing)."""
    folder = _early_folder(fit, storage_path)
    if folder is None:
        return
    with contextlib.suppress(OSError):
        if folder.stat().st_uid != os.getuid():
            return  # never ours: nothing of ours was written there (safedir)
        tuner_state_path(folder).unlink(missing_ok=True)
        folder.rmdir()  # only if empty


def load_tuner(experiment_dir: str | os.PathLike[str]) -> SavedTuner | None:
    path = tuner_state_path(experiment_dir)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        state = cloudpickle.load(f)
    return SavedTuner(
        tune_config=state["tune_config"],
        run_config=state["run_config"],
        param_space=state.get("param_space"),
        trainable_name=state.get("__trainable_name"),
        param_space_keys=state.get("__flattened_param_space_keys"),
    )


def check_trainable(trainable: Any, expected: str | None) -> None:
    """Ray's check: the restoring script passes the trainable the experiment was made with."""
    got = trainable if isinstance(trainable, str) else trainable_name(trainable)
    if expected and got != expected:
        raise ValueError(
            "Invalid `trainable` input to `Tuner.restore()`. To fix this error, pass in the "
            "same trainable that was used to initialize the Tuner. Got a trainable with "
            f"identifier '{got}' but expected '{expected}'."
        )


def check_param_space(param_space: dict[str, Any], expected: list[str] | None) -> None:
    """Ray's check: a re-specified ``param_space`` has the same keys (no new ones to tune)."""
    keys = sorted(flatten_dict(param_space))
    if expected is not None and keys != expected:
        raise ValueError(
            "Invalid `param_space` input to `Tuner.restore()`. To fix this error, pass in the "
            "same `param_space` that was used to initialize the Tuner. Only re-specify the "
            "`param_space` to refresh Ray object references that no longer exist due to "
            "restoring from a new Ray cluster session. It should not be used to introduce "
            f"new hyperparameters to tune.\n\nGot: {keys}\nExpected: {expected}"
        )


def overlay(saved: C, given: C | None) -> C:
    """``saved``, with each field ``given`` sets to other than its default (tuned's own)."""
    if given is None:
        return saved
    default = type(given)()
    changed = {
        f.name: getattr(given, f.name)
        for f in dataclasses.fields(given)
        if getattr(given, f.name) is not getattr(default, f.name)
        and getattr(given, f.name) != getattr(default, f.name)
    }
    return dataclasses.replace(saved, **changed)

"""A steered experiment's search, saved in its folder so ``Tuner.restore`` goes on with it.

Ray's Tuner pickles itself into the experiment folder (``tuner.pkl``: the
param_space and the TuneConfig, searcher and scheduler included) and saves the
searcher's state at each experiment checkpoint; ``Tuner.restore(path,
trainable)`` builds them again from there. Here the steering loop writes, next
to the searcher (``searcher-state.pkl``), the scheduler as it is now, the
TuneConfig and the param_space (``steering-state.pkl``, atomically), whenever
it saves the searcher: after each batch of suggestions and each trial's end.
``Tuner.restore`` without a ``tune_config`` of its own takes them back, so a
search whose script died goes on with the decisions it had made.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import cloudpickle

from .config import TuneConfig
from .search.searcher import Searcher, restore_searcher, save_searcher

STEERING_STATE_FILE = "steering-state.pkl"


def save_steering(
    experiment_dir: str | os.PathLike[str],
    searcher: Searcher,
    scheduler: Any,
    tune_config: TuneConfig,
    param_space: dict[str, Any],
) -> None:
    """Save the searcher, the scheduler and the search settings; a failure is said, not raised."""
    folder = Path(experiment_dir)
    try:
        save_searcher(searcher, folder)
    except (NotImplementedError, OSError, TypeError) as exc:
        print(f"Could not save the searcher's state: {exc}", file=sys.stderr)
    settings = copy.copy(tune_config)
    settings.search_alg = settings.scheduler = None  # saved on their own
    path = folder / STEERING_STATE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        data = {"tune_config": settings, "scheduler": scheduler, "param_space": param_space}
        tmp.write_bytes(cloudpickle.dumps(data))
        os.replace(tmp, path)
    except Exception as exc:  # an unpicklable scheduler costs its restore, never the run
        tmp.unlink(missing_ok=True)
        print(f"Could not save the scheduler's state: {exc}", file=sys.stderr)


def load_steering(
    experiment_dir: str | os.PathLike[str],
) -> tuple[TuneConfig, dict[str, Any]] | None:
    """The TuneConfig (searcher and scheduler as saved) and param_space; None if unsaved."""
    path = Path(experiment_dir) / STEERING_STATE_FILE
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        saved = cloudpickle.load(f)
    tune_config: TuneConfig = saved["tune_config"]
    tune_config.search_alg = restore_searcher(experiment_dir)
    tune_config.scheduler = saved["scheduler"]
    return tune_config, saved["param_space"]

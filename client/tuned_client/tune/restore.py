"""``Tuner.restore``: what an experiment's folder says about the run to pick up.

Two files tell it: ``tuner.pkl`` (the script's settings, written by the Tuner:
``tuner_state``) and ``experiment_state.msgpack`` (the trials, kept by the
daemon). This builds the restored Tuner's settings and its results before
``fit()``; ``resume`` is what that ``fit()`` then does.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from .. import protocol as p
from .analysis.loading import load_results
from .analysis.loading import load_state as analysis_load_state
from .config import RunConfig, TuneConfig
from .fit_settings import FitSettings
from .result_grid import ResultGrid
from .tuner_state import (
    check_param_space,
    check_trainable,
    load_tuner,
    overlay,
    tuner_state_path,
)


def state_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser() / p.EXPERIMENT_STATE_FILE


def can_restore(path: str | os.PathLike[str]) -> bool:
    """True once ``path`` is an experiment's folder: a Tuner was made for it, or it ran."""
    return tuner_state_path(path).is_file() or state_path(path).is_file()


def load_state(path: str | os.PathLike[str]) -> p.ExperimentState | None:
    """The daemon's state of the experiment in ``path``; None if none was written there."""
    return analysis_load_state(Path(path).expanduser())


# ------------------------------------------------------------------ Tuner.restore(...)


def restored_settings(
    path: str,
    trainable: Any,
    param_space: dict[str, Any] | None,
    tune_config: TuneConfig | None,
    run_config: RunConfig | None,
    socket: str | None,
) -> FitSettings:
    """The restored run's settings: saved ones, checked against and overlaid by the given."""
    saved, state = load_tuner(path), load_state(path)
    if saved is None and state is None:
        raise RuntimeError(
            "Could not find Tuner state in restore directory. Did you pass the correct path "
            f"(the top-level experiment directory?) Got: {path}"
        )
    if saved is not None:
        check_trainable(trainable, saved.trainable_name)
    elif state is not None:
        check_trainable(trainable, state.spec.trainable_name)
    if param_space is not None and saved is not None:
        check_param_space(param_space, saved.param_space_keys)
    if saved is not None:
        tc = overlay(copy.copy(saved.tune_config), tune_config)
        rc = overlay(copy.copy(saved.run_config), run_config)
        space = param_space if param_space is not None else saved.param_space
    else:  # an experiment of an older tuned: metric and mode from the daemon's state
        assert state is not None
        tc = tune_config or TuneConfig(
            metric=state.spec.metric or None, mode=state.spec.mode or None
        )
        rc = run_config or RunConfig()
        space = param_space
    from .search.searcher import restore_searcher
    from .stopper.state import load_stopper

    if (run_config is None or run_config.stop is None) and (saved_stop := load_stopper(path)):
        rc.stop = saved_stop  # the stopper goes on with the state it had (as Ray's)
    searcher = None
    if tune_config is None or tune_config.search_alg is None:
        searcher = restore_searcher(path)
        tc.search_alg = searcher or tc.search_alg
    folder = Path(path).expanduser().absolute()
    rc.name, rc.storage_path, rc.local_dir = folder.name, str(folder.parent), None
    fit = FitSettings(trainable, dict(space or {}), tc, rc, socket)
    fit.searcher_restored = searcher is not None
    return fit


def results_on_disk(fit: FitSettings, path: str) -> ResultGrid | None:
    """What ``Tuner.get_results()`` gives before ``fit()``: the trials as last saved."""
    if load_state(path) is None:
        return None
    tc = fit.tune_config
    return ResultGrid(load_results(path), str(Path(path).absolute()), tc.metric, tc.mode)


def restore_flags(**flags: Any) -> dict[str, bool]:
    return {k: bool(v) for k, v in flags.items()}

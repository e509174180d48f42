"""Reading an experiment, or one trial, back from its folder.

The daemon keeps ``experiment_state.msgpack`` in the experiment folder (every
trial's id, name, config, status, error and last result); a folder without
it (copied from elsewhere, or a single trial's) is read from the trial
folders' own files: ``params.json``, ``result.json``, ``error.txt``,
``checkpoint_*``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from ... import protocol as p
from ...checkpoint import Checkpoint
from ..result import Result, trial_error


def load_state(path: Path) -> p.ExperimentState | None:
    """The daemon's state of the experiment in ``path``; None if none was written there.

    A grid experiment's plan is whole in it: its values, which the state file
    leaves out, are read from ``GRID_PLAN_FILE`` beside it.
    """
    file = path / p.EXPERIMENT_STATE_FILE
    if not file.is_file():
        return None
    try:
        state = msgspec.msgpack.decode(file.read_bytes(), type=p.ExperimentState)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{file} is damaged: {exc}") from exc
    grid = state.spec.grid
    if grid is not None and grid.values_file:  # only ever ours: no name from the file is followed
        state.spec.grid = _grid_plan(path / p.GRID_PLAN_FILE)
    return state


def _grid_plan(file: Path) -> p.GridPlan | None:
    """A grid experiment's whole plan; None (its points not made yet are lost) if unreadable."""
    try:
        return msgspec.msgpack.decode(file.read_bytes(), type=p.GridPlan)
    except (OSError, msgspec.DecodeError) as exc:
        print(
            f"tuned: cannot read the grid's plan {file} ({exc}): the trials it had made are "
            "restored, the points it had not made yet are not run",
            file=sys.stderr,
        )
        return None


def moved_trials(state: p.ExperimentState, folder: Path) -> list[p.TrialInfo]:
    """The state's trials, their folders and checkpoints under ``folder`` where the
    experiment was moved (or renamed) since it ran, as Ray finds a moved experiment."""
    old = os.path.join(state.spec.storage_path, state.spec.name)
    new = str(folder.expanduser().absolute())
    if old == new or not state.spec.storage_path:
        return list(state.trials)

    def rebase(value: str) -> str:
        return new + value[len(old) :] if value == old or value.startswith(old + "/") else value

    return [
        msgspec.structs.replace(i, path=rebase(i.path), checkpoint=rebase(i.checkpoint))
        for i in state.trials
    ]


def result_from_info(info: p.TrialInfo, experiment_dir: Path) -> Result:
    path = info.path or str(experiment_dir / info.name)
    error = None
    if info.status == "ERROR":
        error = trial_error(info.error or "trial failed", info.traceback, info.trial_id, path)
    metrics: dict[str, Any] | None = p.unpack_user(info.last_result) if info.last_result else None
    if metrics is not None and info.status == "TERMINATED":
        metrics["done"] = True
    return Result(
        metrics,
        p.unpack_user(info.config),
        path,
        error=error,
        checkpoint=Checkpoint(info.checkpoint) if info.checkpoint else None,
        trial_id=info.trial_id,
        status=info.status,
    )


def result_from_folder(trial_dir: Path) -> Result:
    """A trial's Result from its folder alone (``Result.from_path``)."""
    return Result.from_path(trial_dir)


def load_results(path: str | os.PathLike[str]) -> list[Result]:
    """Every trial of the experiment in ``path``, in trial order."""
    folder = Path(path).expanduser()
    if folder.is_file():  # Ray takes the state file itself too
        folder = folder.parent
    state = load_state(folder)
    if state is not None:
        return [result_from_info(info, folder) for info in moved_trials(state, folder)]
    trials = (
        sorted(d for d in folder.iterdir() if d.is_dir() and (d / "params.json").is_file())
        if folder.is_dir()
        else []
    )
    if not trials:
        raise ValueError(
            f"No experiment found in {path}: it holds neither {p.EXPERIMENT_STATE_FILE} nor "
            "trial folders (with a params.json); pass the folder fit() printed as its logdir"
        )
    return [result_from_folder(d) for d in trials]



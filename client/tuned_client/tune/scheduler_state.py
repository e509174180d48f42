"""The scheduler's state in the experiment folder, so ``Tuner.restore`` goes on with it.

Ray restores the scheduler as it was given (from ``tuner.pkl``) and replays
``on_trial_add`` for each trial: ASHA's rungs, the median rule's history and
PBT's scores start empty. Here the steering loop saves the scheduler itself,
with what it learnt, as ``scheduler-state.pkl`` each time it saves the
searcher. Schedulers that hold trials (PBT) hold them as the trial ids, which
are bound to the restored run's trials when read back.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cloudpickle

from .trial import TrialView

SCHEDULER_STATE_FILE = "scheduler-state.pkl"


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    def persistent_id(self, obj: Any) -> Any:
        return ("trial", obj.trial_id) if isinstance(obj, TrialView) else None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, trials: Mapping[str, TrialView]) -> None:
        super().__init__(file)
        self.trials = trials

    def persistent_load(self, pid: Any) -> Any:
        kind, trial_id = pid
        view = self.trials.get(trial_id)
        if kind != "trial" or view is None:  # a trial the daemon no longer knows: a stand-in
            return TrialView(trial_id=trial_id, name=trial_id, tag="", config={}, status="ERROR")
        return view


def save_scheduler(scheduler: Any, experiment_dir: str | os.PathLike[str]) -> None:
    buf = io.BytesIO()
    _Pickler(buf).dump(scheduler)
    path = Path(experiment_dir) / SCHEDULER_STATE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def load_scheduler(experiment_dir: str | os.PathLike[str], trials: Mapping[str, TrialView]) -> Any:
    """The scheduler last saved in ``experiment_dir``, bound to ``trials``; None if none."""
    path = Path(experiment_dir) / SCHEDULER_STATE_FILE
    if not path.is_file():
        return None
    return _Unpickler(io.BytesIO(path.read_bytes()), trials).load()

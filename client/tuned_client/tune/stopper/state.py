"""A stopper's state in the experiment folder, so ``Tuner.restore`` continues it.

Ray pickles the stopper with the experiment's state; here it is written
beside ``experiment_state.msgpack`` as ``stopper-state.pkl`` (atomically: a
temporary name, then a rename), at most every ``every_s`` seconds while the
experiment runs and once when ``fit()`` returns. ``Tuner.restore`` reads it
back when the restoring script gives no ``stop`` of its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cloudpickle

STOPPER_STATE_FILE = "stopper-state.pkl"


def save_stopper(stopper: Any, experiment_dir: str | os.PathLike[str]) -> None:
    """Write ``stopper`` (a Stopper or any picklable callable) into the experiment folder."""
    path = Path(experiment_dir) / STOPPER_STATE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(cloudpickle.dumps(stopper))
    os.replace(tmp, path)


def load_stopper(experiment_dir: str | os.PathLike[str]) -> Any:
    """The stopper saved in ``experiment_dir`` as it was last saved, or None."""
    path = Path(experiment_dir) / STOPPER_STATE_FILE
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        return cloudpickle.load(f)


class StopperKeeper:
    """Saves a run's stopper now and then: never more often than ``every_s`` seconds."""

    def __init__(self, stopper: Any, experiment_dir: str, every_s: float = 1.0) -> None:
        self.stopper = stopper
        self.experiment_dir = experiment_dir
        self.every_s = every_s
        self._last = 0.0

    def touched(self) -> None:
        """The stopper saw a result: save it if the last save is old enough."""
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self.save()

    def save(self) -> None:
        self._last = time.monotonic()
        try:
            save_stopper(self.stopper, self.experiment_dir)
        except (OSError, TypeError, AttributeError, cloudpickle.pickle.PicklingError) as exc:
            import sys

            print(f"Could not save the stopper's state: {exc}", file=sys.stderr)

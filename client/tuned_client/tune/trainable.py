"""Class trainables (``tune.Trainable``), as in Ray Tune (``with_parameters``: parameters.py).

A class trainable is run by a plain function trainable made here: it calls
``setup``, then ``step`` until the result says ``done`` or a stop rule is met,
saving checkpoints every ``checkpoint_frequency`` steps and at the end, and
restoring from the trial's checkpoint on a retry. So the daemon and the worker
only ever run functions, and retries, stop rules and schedulers work alike.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle

from ..checkpoint import Checkpoint
from ..protocol import as_number
from ..session import flat_get, require_session
from .resources import resources_of, with_resources


class Trainable:
    """Subclass and implement ``setup``, ``step`` and optionally the checkpoint hooks."""

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.config = dict(config or {})
        self._iteration = 0
        self.setup(dict(self.config), **kwargs)

    # ------------------------------------------------------------ to override

    def setup(self, config: dict[str, Any], **kwargs: Any) -> None:
        pass

    def step(self) -> dict[str, Any]:
        raise NotImplementedError("a Trainable subclass must implement step()")

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | None:
        return None

    def load_checkpoint(self, checkpoint: dict[str, Any] | str | None) -> None:
        pass

    def cleanup(self) -> None:
        pass

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        return False

    # ------------------------------------------------------------ what Ray exposes

    @property
    def iteration(self) -> int:
        return self._iteration

    @property
    def training_iteration(self) -> int:
        return self._iteration

    @property
    def trial_id(self) -> str:
        return require_session("get_context").assignment.trial_id

    @property
    def trial_name(self) -> str:
        return require_session("get_context").assignment.trial_name

    @property
    def logdir(self) -> str:
        return require_session("get_context").assignment.trial_dir


def _stop_met(stop: Mapping[str, float], row: Mapping[str, Any]) -> bool:
    values = {key: as_number(flat_get(row, key)) for key in stop}
    return any(v is not None and v >= stop[k] for k, v in values.items())


# Ray's file for a checkpoint that ``save_checkpoint`` returned as a dict.
DICT_CHECKPOINT_FILE = "_dict_checkpoint.pkl"


def _saved(returned: Any, folder: str) -> None:
    """As Ray: a dict returned by ``save_checkpoint`` is the checkpoint (pickled in it)."""
    if isinstance(returned, dict):
        with open(os.path.join(folder, DICT_CHECKPOINT_FILE), "wb") as f:
            cloudpickle.dump(returned, f)


def _loaded(path: str) -> Any:
    """What ``load_checkpoint`` gets: the dict it saved, or the checkpoint's folder."""
    file = os.path.join(path, DICT_CHECKPOINT_FILE)
    if os.path.isfile(file):
        with open(file, "rb") as f:
            return cloudpickle.load(f)
    return path


def class_runner(
    cls: type[Trainable],
    *,
    checkpoint_frequency: int = 0,
    checkpoint_at_end: bool = False,
    stop: Mapping[str, float] | None = None,
    parameters: Mapping[str, Any] | None = None,
    restore_retries: int = 0,
) -> Callable[[dict[str, Any]], None]:
    """A function trainable that drives ``cls`` step by step.

    A ``load_checkpoint`` that raises is tried again on a fresh instance up to
    ``restore_retries`` times (Ray's ``TUNE_RESTORE_RETRY_NUM``) before the
    attempt fails and counts as one of the trial's failures.
    """

    def run(config: dict[str, Any]) -> None:
        session = require_session("report")
        trainable = cls(config, **dict(parameters or {}))
        restored = session.get_checkpoint()
        failures = 0
        while restored is not None:
            try:
                trainable.load_checkpoint(_loaded(restored.path))
                break
            except Exception:
                if failures >= restore_retries:
                    raise  # the attempt fails (and counts against max_failures)
                failures += 1  # TUNE_RESTORE_RETRY_NUM: a fresh instance tries again
                trainable.cleanup()  # as Ray stops the actor whose restore failed
                trainable = cls(config, **dict(parameters or {}))
        trainable._iteration = session.iteration
        try:
            while True:
                result = trainable.step()
                if not isinstance(result, dict):
                    raise TypeError(f"{cls.__name__}.step() must return a dict of metrics")
                trainable._iteration += 1
                ending = bool(result.get("done")) or _stop_met(
                    stop or {}, {**result, "training_iteration": trainable._iteration}
                )
                due = checkpoint_frequency and trainable._iteration % checkpoint_frequency == 0
                if due or (ending and checkpoint_at_end):
                    with tempfile.TemporaryDirectory(prefix="tuned-ckpt-") as folder:
                        _saved(trainable.save_checkpoint(folder), folder)
                        session.report(result, Checkpoint(folder), done=ending)
                else:
                    session.report(result, done=ending)
                if ending:
                    return
        finally:
            trainable.cleanup()

    run.__name__ = cls.__name__
    run.__qualname__ = cls.__qualname__
    return run


def to_function(
    trainable: Any, checkpoint_config: Any, stop: Any, restore_retries: int = 0
) -> Any:
    """The function the daemon runs for ``trainable`` (itself, unless it is a class)."""
    if not (isinstance(trainable, type) and issubclass(trainable, Trainable)):
        return trainable
    fn = class_runner(
        trainable,
        checkpoint_frequency=getattr(checkpoint_config, "checkpoint_frequency", 0) or 0,
        checkpoint_at_end=bool(getattr(checkpoint_config, "checkpoint_at_end", False)),
        stop=stop if isinstance(stop, Mapping) else None,
        parameters=getattr(trainable, "__tuned_parameters__", None),
        restore_retries=restore_retries,
    )
    resources = resources_of(trainable)
    return with_resources(fn, resources) if resources is not None else fn


__all__ = ["Trainable", "class_runner", "to_function"]

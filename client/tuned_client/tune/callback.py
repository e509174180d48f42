"""``tune.Callback``: hooks called in the user's process as the experiment runs.

The hooks, their arguments and their order are Ray Tune's
(``ray.tune.callback.Callback``), so loggers written for Ray work unchanged:

- ``setup(stop=, num_samples=, total_num_samples=, **info)`` once, before the
  first trial is submitted;
- ``on_step_begin`` / ``on_step_end(iteration, trials)`` around each step of the
  driver loop (here: each event handled; ``iteration`` grows before ``on_step_end``);
- ``on_trial_start``, ``on_trial_restore`` (it resumed from a checkpoint),
  ``on_trial_save`` then ``on_checkpoint(checkpoint=)``, ``on_trial_result(result=)``,
  ``on_trial_complete``, ``on_trial_error``, ``on_trial_recover`` (it failed and
  will be retried), each with ``iteration, trials, trial``; the scheduler and
  the searcher have seen the event first;
- ``on_experiment_end(trials)`` once, after every trial has ended.

As in Ray, an exception raised in a hook ends ``fit()`` (the experiment is
stopped and the exception propagates).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import cloudpickle


class Callback:
    """Subclass and override the hooks you need (``ray.tune.Callback``)."""

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        """Called once at the very beginning of training."""

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Called at the start of each step of the driver loop."""

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Called at the end of each step of the driver loop."""

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Called after a trial (or a retry of it) has started."""

    def on_trial_restore(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        """Called after a trial was restored from its checkpoint."""

    def on_trial_save(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Called after a trial saved a checkpoint."""

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Called after a trial reported a result."""

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        """Called after a trial completed."""

    def on_trial_recover(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        """Called after a trial failed and is to be retried."""

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Called after a trial failed for good."""

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        """Called after a trial saved a checkpoint, with the checkpoint."""

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Called after the experiment is over and every trial has ended."""

    def get_state(self) -> dict[str, Any] | None:
        """State to keep with the experiment (Ray's ``Callback.get_state``)."""
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""


class CallbackList(Callback):
    """Calls every callback in turn, as Ray's ``CallbackList``; empty: falsy, costs nothing."""

    def __init__(self, callbacks: list[Any]) -> None:
        bad = [c for c in callbacks if not isinstance(c, Callback)]
        if bad:
            raise TypeError(
                "RunConfig(callbacks=...) takes tune.Callback instances, got "
                f"{', '.join(type(c).__name__ for c in bad)}"
            )
        self._callbacks: list[Callback] = list(callbacks)

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)

    def setup(self, **info: Any) -> None:  # type: ignore[override]
        for callback in self._callbacks:
            try:
                callback.setup(**info)
            except TypeError as exc:
                if "argument" not in str(exc):
                    raise
                warnings.warn(
                    f"Please update `setup` method in callback `{type(callback)}` to match "
                    "the method signature in `ray.tune.callback.Callback`.",
                    FutureWarning,
                    stacklevel=2,
                )
                callback.setup()

    def _each(self, hook: str, info: dict[str, Any]) -> None:
        for callback in self._callbacks:
            getattr(callback, hook)(**info)

    def on_step_begin(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_step_begin", info)

    def on_step_end(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_step_end", info)

    def on_trial_start(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_trial_start", info)

    def on_trial_restore(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_trial_restore", info)

    def on_trial_save(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_trial_save", info)

    def on_trial_result(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_trial_result", info)

    def on_trial_complete(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_trial_complete", info)

    def on_trial_recover(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_trial_recover", info)

    def on_trial_error(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_trial_error", info)

    def on_checkpoint(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_checkpoint", info)

    def on_experiment_end(self, **info: Any) -> None:  # type: ignore[override]
        self._each("on_experiment_end", info)

    # ------------------------------------------------------------ state, for Tuner.restore

    CKPT_FILE_TMPL = "callback-states-{}.pkl"

    def get_state(self) -> dict[int, Any] | None:  # type: ignore[override]
        """Every callback's state by position; None when none has any (nothing saved)."""
        state = {i: c.get_state() for i, c in enumerate(self._callbacks)}
        return state if any(state.values()) else None

    def set_state(self, state: dict[int, Any]) -> None:  # type: ignore[override]
        for i, callback in enumerate(self._callbacks):
            if state.get(i):
                callback.set_state(state[i])

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Write the callbacks' state (if any has one) into ``checkpoint_dir``, atomically."""
        state = self.get_state()
        if not state:
            return
        path = Path(checkpoint_dir) / self.CKPT_FILE_TMPL.format(session_str)
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_bytes(cloudpickle.dumps(state))
        os.replace(tmp, path)

    def can_restore(self, checkpoint_dir: str) -> bool:
        return any(Path(checkpoint_dir).glob(self.CKPT_FILE_TMPL.format("*")))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """The newest saved state back into the callbacks (``RuntimeError`` if none)."""
        found = sorted(
            Path(checkpoint_dir).glob(self.CKPT_FILE_TMPL.format("*")),
            key=lambda f: f.stat().st_mtime,
        )
        if not found:
            raise RuntimeError(f"Unable to find checkpoint in {checkpoint_dir}.")
        with open(found[-1], "rb") as f:
            self.set_state(cloudpickle.load(f))

    def __getitem__(self, i: int) -> Callback:
        return self._callbacks[i]

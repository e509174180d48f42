"""``ray.tune.logger.LoggerCallback``: a callback that logs per trial.

Ray's loggers (TensorBoard, MLflow, W&B, Comet, and the ones users write)
subclass this and implement ``log_trial_start/restore/save/result/end``; the
``tune.Callback`` hooks call them as Ray's do, so a logger written for Ray
runs here unchanged.
"""

from __future__ import annotations

from typing import Any

from ..callback import Callback


class LoggerCallback(Callback):
    """Base class for experiment-level logger callbacks (Ray's ``LoggerCallback``).

    Subclasses clean up what they hold for a trial (close its files) in
    ``log_trial_end``, which is called once the trial has completed or failed.
    """

    _SAVED_FILE_TEMPLATES: list[str] = []  # what it writes in a trial's folder (as Ray)

    def log_trial_start(self, trial: Any) -> None:
        """Handle logging when a trial starts."""

    def log_trial_restore(self, trial: Any) -> None:
        """Handle logging when a trial restores from its checkpoint."""

    def log_trial_save(self, trial: Any) -> None:
        """Handle logging when a trial saves a checkpoint."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        """Handle logging when a trial reports a result."""

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Handle logging when a trial ends (``failed``: it raised)."""

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.log_trial_result(iteration, trial, result)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.log_trial_start(trial)

    def on_trial_restore(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        self.log_trial_restore(trial)

    def on_trial_save(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.log_trial_save(trial)

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        self.log_trial_end(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.log_trial_end(trial, failed=True)

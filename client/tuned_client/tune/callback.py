"""``tune.Callback``: hooks called in the user's process as the experiment's events arrive."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tuned_client")


class Callback:
    """Subclass and override the hooks you need (``ray.tune.Callback``).

    ``trials`` are the client's views of every trial (``trial.trial_id``,
    ``trial.config``, ``trial.status``, ``trial.last_result``).
    """

    def setup(self, **info: Any) -> None:
        pass

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        pass

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        pass

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        pass

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        pass

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        pass

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        pass

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        pass


def dispatch(callbacks: list[Callback], hook: str, **kwargs: Any) -> None:
    """Call ``hook`` on every callback; a failing callback is logged, not fatal."""
    for cb in callbacks:
        try:
            getattr(cb, hook)(**kwargs)
        except Exception:
            log.exception("callback %s.%s failed", type(cb).__name__, hook)

"""``ray.tune.experiment``: ``Trial``, as schedulers and callbacks see a trial.

``Trial("PPO")`` makes one by hand, as Ray's own scheduler tests and custom
schedulers' tests do; in a run, callbacks and schedulers get the same kind of
object (the client's view of the trial, built from the daemon's events).
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from ..trial import TrialView

_count = itertools.count()


class Trial(TrialView):
    """A trial (``ray.tune.experiment.Trial``): its id, config, status and last result."""

    __slots__ = ("trainable_name",)

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    def __init__(
        self,
        trainable_name: str = "trainable",
        config: dict[str, Any] | None = None,
        trial_id: str | None = None,
        experiment_tag: str = "",
        **_: Any,
    ) -> None:
        trial_id = trial_id or f"{uuid.uuid4().hex[:5]}_{next(_count):05d}"
        super().__init__(
            trial_id=trial_id,
            name=f"{trainable_name}_{trial_id}",
            tag=experiment_tag,
            config=dict(config or {}),
        )
        self.trainable_name = trainable_name


__all__ = ["Trial"]

"""``MaximumIterationStopper``: stop each trial after ``max_iter`` of its results."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .stopper import Stopper


class MaximumIterationStopper(Stopper):
    """Counts the results it sees per trial (not ``training_iteration``), as Ray's does.

    A trial restored from a checkpoint therefore gets ``max_iter`` more results
    unless the stopper itself was restored with the experiment.
    """

    def __init__(self, max_iter: int) -> None:
        self._max_iter = max_iter
        self._iter: Counter[str] = Counter()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self._iter[trial_id] += 1
        return self._iter[trial_id] >= self._max_iter

    def stop_all(self) -> bool:
        return False

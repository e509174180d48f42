"""``TrialPlateauStopper``: stop a trial whose metric has stopped moving."""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from typing import Any

from .stopper import Stopper


def _std(values: deque[Any]) -> float:
    """Population standard deviation (``np.std``); inf when a value is not a number."""
    try:
        return statistics.pstdev(float(v) for v in values)
    except (TypeError, ValueError):
        return math.inf


class TrialPlateauStopper(Stopper):
    """Stops a trial once the std of its last ``num_results`` values is below ``std``.

    Not before ``grace_period`` results, and with ``metric_threshold`` only once
    the value is at least that good (``mode`` says which way is good).
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.01,
        num_results: int = 4,
        grace_period: int = 4,
        metric_threshold: float | None = None,
        mode: str | None = None,
    ) -> None:
        self._metric = metric
        self._mode = mode
        self._std = std
        self._num_results = num_results
        self._grace_period = grace_period
        self._metric_threshold = metric_threshold
        if self._metric_threshold and mode not in ("min", "max"):
            raise ValueError(
                "When specifying a `metric_threshold`, the `mode` argument has to be one of "
                f"[min, max]. Got: {mode}"
            )
        self._iter: Counter[str] = Counter()
        self._trial_results: dict[str, deque[Any]] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value: Any = result.get(self._metric)
        window = self._trial_results.setdefault(trial_id, deque(maxlen=self._num_results))
        window.append(value)
        self._iter[trial_id] += 1
        if self._iter[trial_id] < self._grace_period or len(window) < self._num_results:
            return False
        threshold = self._metric_threshold
        if threshold is not None:
            if self._mode == "min" and value > threshold:
                return False
            if self._mode == "max" and value < threshold:
                return False
        return _std(window) < self._std

    def stop_all(self) -> bool:
        return False

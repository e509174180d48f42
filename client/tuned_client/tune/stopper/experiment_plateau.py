"""``ExperimentPlateauStopper``: end the experiment once its best results agree."""

from __future__ import annotations

import statistics
from typing import Any

from .stopper import Stopper


class ExperimentPlateauStopper(Stopper):
    """Stops everything when the ``top`` best values seen (of any trial) have a std of at
    most ``std`` for more than ``patience`` results in a row."""

    def __init__(
        self, metric: str, std: float = 0.001, top: int = 10, mode: str = "min", patience: int = 0
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError("The mode parameter can only be either min or max.")
        if not isinstance(top, int) or top <= 1:
            raise ValueError("Top results to consider must be a positive integer greater than one.")
        if not isinstance(patience, int) or patience < 0:
            raise ValueError("Patience must be a strictly positive integer.")
        if not isinstance(std, float) or std <= 0:
            raise ValueError("The standard deviation must be a strictly positive float number.")
        self._mode = mode
        self._metric = metric
        self._patience = patience
        self._iterations = 0
        self._std = std
        self._top = top
        self._top_values: list[Any] = []

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self._top_values.append(result[self._metric])
        ordered = sorted(self._top_values)
        self._top_values = ordered[: self._top] if self._mode == "min" else ordered[-self._top :]
        self._iterations = self._iterations + 1 if self.has_plateaued() else 0
        return self.stop_all()

    def has_plateaued(self) -> bool:
        return (
            len(self._top_values) == self._top
            and statistics.pstdev(float(v) for v in self._top_values) <= self._std
        )

    def stop_all(self) -> bool:
        return self.has_plateaued() and self._iterations >= self._patience

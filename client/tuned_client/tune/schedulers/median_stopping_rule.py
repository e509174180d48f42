"""``MedianStoppingRule``: stop a trial whose best so far is below the others' median.

As Ray's: after ``grace_period`` (in ``time_attr`` units), a trial is stopped when
its best metric so far is strictly worse than the median, over the other
trials that have reached the same time, of their running averages up to that
time, once at least ``min_samples_required`` such trials exist.
``hard_stop=False`` answers ``PAUSE`` instead, as Ray's; tuned holds no paused
processes, so the steering loop stops such a trial as well.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from .trial_scheduler import FIFOScheduler, metric_value


class MedianStoppingRule(FIFOScheduler):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        grace_period: float = 60.0,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ) -> None:
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._time_attr = time_attr
        self._metric = metric
        self._mode = mode
        self._grace_period = grace_period
        self._min_samples_required = min_samples_required
        self._min_time_slice = min_time_slice
        self._hard_stop = hard_stop
        # Per trial: (time, signed metric) of every result it reported.
        self._results: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._stopped: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        metric, mode = self._require_metric()
        value = metric_value(result, metric, mode)
        if self._time_attr not in result or value is None:
            return self.CONTINUE
        if trial.trial_id in self._stopped:  # paused by the soft rule: as Ray, FIFO from now
            return self.STOP if self._hard_stop else self.CONTINUE
        now = float(result[self._time_attr])
        self._results[trial.trial_id].append((now, value))
        if now < self._grace_period:
            return self.CONTINUE
        others = [
            tid
            for tid, rows in self._results.items()
            if tid != trial.trial_id and rows and rows[-1][0] >= now
        ]
        if len(others) < self._min_samples_required:
            return self.CONTINUE
        means = [self._running_mean(tid, now) for tid in others]
        median = statistics.median([m for m in means if m is not None] or [float("-inf")])
        best = max(v for _, v in self._results[trial.trial_id])
        if best < median and now > self._grace_period:
            self._stopped.add(trial.trial_id)
            return self.STOP if self._hard_stop else self.PAUSE
        return self.CONTINUE

    def _running_mean(self, trial_id: str, now: float) -> float | None:
        scoped = [v for t, v in self._results[trial_id] if self._grace_period <= t <= now]
        return sum(scoped) / len(scoped) if scoped else None

    def on_trial_complete(
        self, tune_controller: Any, trial: Any, result: dict[str, Any] | None
    ) -> None:
        if not result or not self._metric or not self._mode:
            return
        value = metric_value(result, self._metric, self._mode)
        if self._time_attr in result and value is not None:
            rows = self._results[trial.trial_id]
            point = (float(result[self._time_attr]), value)
            if not rows or rows[-1] != point:
                rows.append(point)

    def debug_string(self) -> str:
        return f"Using MedianStoppingRule: num_stopped={len(self._stopped)}."

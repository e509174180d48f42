"""``Repeater`` (``ray.tune.search.Repeater``): every config tried ``repeat`` times.

For noisy objectives: each configuration the wrapped searcher suggests runs as
``repeat`` trials (each told its index in ``config["__trial_index__"]`` unless
``set_index=False``), and the searcher learns the mean of their scores (NaN
for a repeat that reported nothing, left out of the mean) once all of them have
finished. ``num_samples`` should be a multiple of ``repeat``.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

from .searcher import Searcher

log = logging.getLogger("tuned_client")
TRIAL_INDEX = "__trial_index__"


class _TrialGroup:
    """The trials that run one configuration, and the scores they reported."""

    def __init__(self, primary_trial_id: str, config: dict[str, Any], max_trials: int) -> None:
        self.primary_trial_id = primary_trial_id
        self.config = config
        self._trials: dict[str, float | None] = {primary_trial_id: None}
        self.max_trials = max_trials

    def add(self, trial_id: str) -> None:
        assert len(self._trials) < self.max_trials
        self._trials.setdefault(trial_id, None)

    def full(self) -> bool:
        return len(self._trials) == self.max_trials

    def count(self) -> int:
        return len(self._trials)

    def report(self, trial_id: str, score: float) -> None:
        self._trials[trial_id] = score

    def finished_reporting(self) -> bool:
        return None not in self._trials.values() and self.full()

    def scores(self) -> list[float]:
        return [s for s in self._trials.values() if s is not None]


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


class Repeater(Searcher):
    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True) -> None:
        if not isinstance(searcher, Searcher):
            raise TypeError(f"Repeater wraps a Searcher, got {type(searcher).__name__}")
        self.searcher = searcher
        self.repeat = repeat
        self._set_index = set_index
        self._groups: list[_TrialGroup] = []
        self._trial_id_to_group: dict[str, _TrialGroup] = {}
        self._current_group: _TrialGroup | None = None
        super().__init__(metric=self.searcher.metric, mode=self.searcher.mode)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._current_group is None or self._current_group.full():
            config = self.searcher.suggest(trial_id)
            if not isinstance(config, dict):
                return config  # None (nothing now) or FINISHED
            self._current_group = _TrialGroup(trial_id, copy.deepcopy(config), self.repeat)
            self._groups.append(self._current_group)
            index_in_group = 0
        else:
            index_in_group = self._current_group.count()
            self._current_group.add(trial_id)
        config = self._current_group.config.copy()
        if self._set_index:
            config[TRIAL_INDEX] = index_in_group
        self._trial_id_to_group[trial_id] = self._current_group
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        group = self._trial_id_to_group.get(trial_id)
        if group is None:
            log.error("Trial %s not in Repeater's groups: ignored", trial_id)
            return
        metric = self.searcher.metric
        value = (result or {}).get(metric) if metric else None
        score = float(value) if isinstance(value, int | float) else math.nan
        group.report(trial_id, score)
        if group.finished_reporting():
            self.searcher.on_trial_complete(
                group.primary_trial_id, result={str(metric): _nanmean(group.scores())}, error=error
            )

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

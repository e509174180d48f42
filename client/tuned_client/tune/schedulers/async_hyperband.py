"""Asynchronous successive halving (``ASHAScheduler`` / ``AsyncHyperBandScheduler``).

As Ray's: each bracket has rungs at ``grace_period * reduction_factor**k`` up to
``max_t``; when a trial first reaches a rung its metric is recorded there, and
it is stopped if it is below the rung's ``1 - 1/reduction_factor`` quantile of
the trials recorded before it. No trial waits for another (no stragglers), and
a trial reaching ``max_t`` is stopped (``stop_last_trials``).
"""

from __future__ import annotations

import math
import random
from typing import Any

from .trial_scheduler import FIFOScheduler, TrialScheduler, metric_value, percentile


class _Bracket:
    def __init__(
        self, min_t: float, max_t: float, reduction_factor: float, s: int, stop_last_trials: bool
    ) -> None:
        self.rf = reduction_factor
        max_rungs = int(math.log(max_t / min_t) / math.log(self.rf) - s + 1)
        self.rungs: list[tuple[float, dict[str, float]]] = [
            (min_t * self.rf ** (k + s), {}) for k in reversed(range(max_rungs))
        ]
        self.stop_last_trials = stop_last_trials

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        if not recorded:
            return None
        return percentile(list(recorded.values()), (1 - 1 / self.rf) * 100)

    def on_result(self, trial_id: str, cur_iter: float, cur_rew: float | None) -> str:
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self.rungs:
            if cur_iter >= milestone and trial_id in recorded and not self.stop_last_trials:
                break  # already judged at the highest rung it reached
            if cur_iter < milestone or trial_id in recorded:
                continue
            cutoff = self.cutoff(recorded)
            if cutoff is not None and cur_rew is not None and cur_rew < cutoff:
                action = TrialScheduler.STOP
            if cur_rew is not None:
                recorded[trial_id] = cur_rew
            break
        return action

    def debug_str(self) -> str:
        return " | ".join(f"Iter {m:.3f}: {self.cutoff(r)}" for m, r in self.rungs)


class AsyncHyperBandScheduler(FIFOScheduler):
    """Stops the worse trials at each rung as they reach it (arXiv:1810.05934)."""

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        stop_last_trials: bool = True,
        seed: int | None = None,
    ) -> None:
        if grace_period <= 0:
            raise ValueError("grace_period must be positive")
        if reduction_factor <= 1:
            raise ValueError("reduction_factor must be greater than 1")
        if max_t < grace_period:
            raise ValueError("max_t must be at least grace_period")
        if brackets <= 0:
            raise ValueError("brackets must be positive")
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._time_attr = time_attr
        self._metric = metric
        self._mode = mode
        self._max_t = max_t
        self._stop_last_trials = stop_last_trials
        self._brackets = [
            _Bracket(grace_period, max_t, reduction_factor, s, stop_last_trials)
            for s in range(brackets)
        ]
        self._rng = random.Random(seed)
        self._trial_info: dict[str, _Bracket] = {}
        self._num_stopped = 0

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._require_metric()
        sizes = [len(b.rungs) for b in self._brackets]
        top = max(sizes)
        weights = [math.exp(s - top) for s in sizes]
        index = self._rng.choices(range(len(self._brackets)), weights=weights)[0]
        self._trial_info[trial.trial_id] = self._brackets[index]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        metric, mode = self._require_metric()
        if trial.trial_id not in self._trial_info:
            self.on_trial_add(tune_controller, trial)
        if self._time_attr not in result or metric not in result:
            return self.CONTINUE
        if self._stop_last_trials and result[self._time_attr] >= self._max_t:
            action = self.STOP
        else:
            bracket = self._trial_info[trial.trial_id]
            action = bracket.on_result(
                trial.trial_id, result[self._time_attr], metric_value(result, metric, mode)
            )
        if action == self.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(
        self, tune_controller: Any, trial: Any, result: dict[str, Any] | None
    ) -> None:
        metric, mode = self._require_metric()
        bracket = self._trial_info.pop(trial.trial_id, None)
        if bracket is not None and result and self._time_attr in result and metric in result:
            bracket.on_result(
                trial.trial_id, result[self._time_attr], metric_value(result, metric, mode)
            )

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        out = f"Using AsyncHyperBand: num_stopped={self._num_stopped}"
        return out + "\n" + "\n".join(b.debug_str() for b in self._brackets)


ASHAScheduler = AsyncHyperBandScheduler

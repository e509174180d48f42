"""``HyperBandForBOHB``: HyperBand's brackets, telling ``TuneBOHB`` each result's budget.

BOHB learns a model per budget; this scheduler marks the results taken at a
rung (``result["hyperband_info"] = {"budget": rung}``) so that ``TuneBOHB``
records them at that budget. It runs HyperBand's brackets asynchronously, as
``HyperBandScheduler`` does here (see hyperband.py): a trial below a rung's
cutoff is stopped at once rather than paused until its bracket's rung fills.
The scheduler sees each result before the searcher, as in Ray.
"""

from __future__ import annotations

from typing import Any

from .hyperband import HyperBandScheduler


class HyperBandForBOHB(HyperBandScheduler):
    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.trial_id not in self._trial_info:
            self.on_trial_add(tune_controller, trial)
        bracket = self._trial_info.get(trial.trial_id)
        now = result.get(self._time_attr)
        info: dict[str, Any] = {}
        if bracket is not None and isinstance(now, int | float):
            reached = [
                m for m, recorded in bracket.rungs if now >= m and trial.trial_id not in recorded
            ]
            if reached:
                info["budget"] = max(reached)
        elif isinstance(now, int | float) and now >= self._max_t:
            info["budget"] = self._max_t
        result["hyperband_info"] = info
        return super().on_trial_result(tune_controller, trial, result)

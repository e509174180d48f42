"""The scheduler interface (``ray.tune.schedulers.TrialScheduler``) and FIFO, the default.

A scheduler sees every result as it arrives in the client and answers
``CONTINUE``, ``STOP`` (the trial ends TERMINATED, its resources go to the next
trial at once) or ``PAUSE`` (the scheduler has asked the controller to restart
the trial, as PBT does when it exploits). Reports are asynchronous: a trial may
run a step or two past a decision before it sees it, as with Ray.

``tune_controller`` is the client-side loop (``steering.Steering``) or a
simulator in the benchmarks; schedulers use only ``get_trials()``,
``stop_trial(trial)`` and ``restart_trial(trial, config, checkpoint)``.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol


class TrialLike(Protocol):
    """What a scheduler reads of a trial (``TrialView`` in the client)."""

    trial_id: str
    config: dict[str, Any]
    status: str
    checkpoint: str
    last_result: dict[str, Any] | None


class Controller(Protocol):
    """What a scheduler may ask of the loop that drives the trials."""

    def get_trials(self) -> list[Any]: ...

    def stop_trial(self, trial: Any) -> None: ...

    def restart_trial(self, trial: Any, config: dict[str, Any], checkpoint: str) -> None: ...


class TrialScheduler:
    """Decides, on each result, whether a trial goes on."""

    CONTINUE = "CONTINUE"
    PAUSE = "PAUSE"
    STOP = "STOP"
    NOOP = "NOOP"

    _metric: str | None = None
    _mode: str | None = None
    _supports_buffered_results = True

    @property
    def metric(self) -> str | None:
        return self._metric

    @property
    def mode(self) -> str | None:
        return self._mode

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take the Tuner's metric/mode unless set already; False on a conflict (as Ray)."""
        if self._metric and metric and self._metric != metric:
            return False
        if self._mode and mode and self._mode != mode:
            return False
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        if not self._metric and self._mode:
            self._metric = "_metric"  # as Ray's: a mode alone means the anonymous metric
        return True

    def _require_metric(self) -> tuple[str, str]:
        if not self._metric or not self._mode:
            raise ValueError(
                f"{type(self).__name__} needs a metric and a mode: pass them to the scheduler "
                "or to TuneConfig(metric=..., mode=...)"
            )
        return self._metric, self._mode

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        pass

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        pass

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return self.CONTINUE

    def on_trial_complete(
        self, tune_controller: Any, trial: Any, result: dict[str, Any] | None
    ) -> None:
        pass

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        pass

    def debug_string(self) -> str:
        return f"Using {type(self).__name__}."

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class FIFOScheduler(TrialScheduler):
    """Runs every trial to its end, in the order they were queued (the default)."""


def metric_value(result: dict[str, Any], metric: str, mode: str) -> float | None:
    """The result's metric, signed so that larger is always better; None if missing."""
    value = result.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if mode == "max" else -float(value)


def percentile(values: list[float], q: float) -> float:
    """``numpy.nanpercentile`` with linear interpolation (the client has no numpy)."""
    data = sorted(v for v in values if v == v)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)

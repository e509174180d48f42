"""The searcher interface (``ray.tune.search.Searcher``) and saving its state.

A searcher runs in the client: the steering loop asks it for a config with
``suggest(trial_id)`` whenever a slot is about to free, feeds it every result
(``on_trial_result``) and each trial's end (``on_trial_complete``). ``suggest``
returns a config, ``None`` (nothing now: ask again when a trial ends) or
``Searcher.FINISHED`` (the search is over).

Its state is saved into the experiment folder after each suggestion batch, so
that ``Tuner.restore`` continues the search (``restore_searcher``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cloudpickle

# The file in the experiment folder holding the searcher (class and state).
SEARCHER_STATE_FILE = "searcher-state.pkl"


class Searcher:
    """Base of searchers: override ``suggest`` and ``on_trial_complete``."""

    FINISHED = "FINISHED"
    CKPT_FILE_TMPL = "searcher-state-{}.pkl"

    def __init__(self, metric: Any = None, mode: Any = None) -> None:
        """``metric`` and ``mode``: one each, or lists of the same length (multi-objective)."""
        modes = mode if isinstance(mode, list) else [mode]
        if any(m not in (None, "min", "max") for m in modes):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if isinstance(mode, list) and (not isinstance(metric, list) or len(metric) != len(mode)):
            raise ValueError("Metric and mode lists must have same length!")
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> Any:
        return self._metric

    @property
    def mode(self) -> Any:
        return self._mode

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """True if this searcher limits its own concurrency (then ConcurrencyLimiter
        leaves the limiting to it); False, the default, lets the limiter do it."""
        return False

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Take the Tuner's metric, mode and param_space; False if it cannot (as Ray)."""
        if self._metric and metric and self._metric != metric:
            return False
        if self._mode and mode and self._mode != mode:
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        pass

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        pass

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not take evaluated points")

    # ------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        """Write this searcher (class and state) to ``checkpoint_path``, atomically."""
        data = cloudpickle.dumps({"cls": type(self), "state": self.get_state()})
        tmp = f"{checkpoint_path}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            saved = cloudpickle.load(f)
        self.set_state(saved["state"])

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        self.save(os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str)))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        found = sorted(Path(checkpoint_dir).glob(self.CKPT_FILE_TMPL.format("*")))
        if not found:
            raise RuntimeError(f"no searcher state in {checkpoint_dir}")
        self.restore(str(found[-1]))


def save_searcher(searcher: Searcher, experiment_dir: str | os.PathLike[str]) -> None:
    """Save ``searcher`` into the experiment folder (called after each suggestion batch)."""
    searcher.save(str(Path(experiment_dir) / SEARCHER_STATE_FILE))


def restore_searcher(experiment_dir: str | os.PathLike[str]) -> Searcher | None:
    """The searcher saved in ``experiment_dir``, as it was, or None if none was saved.

    The hook for ``Tuner.restore``: pass the result as ``TuneConfig(search_alg=...)`` and
    the search goes on where it stopped instead of starting over.
    """
    path = Path(experiment_dir) / SEARCHER_STATE_FILE
    if not path.exists():
        return None
    with open(path, "rb") as f:
        saved = cloudpickle.load(f)
    cls = saved["cls"]
    searcher: Searcher = cls.__new__(cls)
    searcher.set_state(saved["state"])
    return searcher

"""``Result`` and ``ResultGrid``: what ``Tuner.fit()`` returns, shaped as Ray's."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint

# Keys Ray fills in on every result and leaves out of ``Result``'s repr.
AUTO_KEYS = frozenset(
    {
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "date",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "checkpoint_dir_name",
        "config",
    }
)


class TuneError(Exception):
    """Base of the errors this library raises (``ray.tune.TuneError``)."""


class TrialError(TuneError):
    """A trial failed; ``str()`` is the error line, ``traceback`` the trial's traceback."""

    def __init__(self, message: str, traceback: str = "", trial_id: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback
        self.trial_id = trial_id

    def __str__(self) -> str:
        text = self.args[0] if self.args else ""
        if self.traceback and self.traceback.strip() != text:
            return f"{text}\n\nTrial {self.trial_id} traceback:\n{self.traceback}"
        return str(text)


@dataclass
class Result:
    """One trial's outcome: its last metrics, config, error, folder and checkpoints."""

    metrics: dict[str, Any] | None
    config: dict[str, Any] | None
    path: str
    error: Exception | None = None
    checkpoint: Checkpoint | None = None
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)
    trial_id: str = ""
    status: str = ""

    @property
    def log_dir(self) -> Path:
        return Path(self.path)

    @property
    def metrics_dataframe(self) -> Any:
        import pandas as pd

        progress = Path(self.path) / "progress.csv"
        return pd.read_csv(progress) if progress.exists() else pd.DataFrame()

    def history(self) -> list[dict[str, Any]]:
        """Every reported row, from the trial's ``result.json``."""
        rows = []
        path = Path(self.path) / "result.json"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rows.append(json.loads(line))
        return rows

    def __repr__(self) -> str:
        shown = (
            {k: v for k, v in self.metrics.items() if k not in AUTO_KEYS}
            if self.metrics is not None
            else None
        )
        error = None if self.error is None else type(self.error).__name__
        parts = [f"metrics={shown!r}", f"error={error!r}", f"log_dir={self.log_dir!r}"]
        if self.checkpoint is not None:
            parts.append(f"checkpoint={self.checkpoint!r}")
        return f"Result({', '.join(parts)})"


def _score(result: Result, metric: str, mode: str, scope: str) -> float | None:
    if scope == "last":
        values = [result.metrics.get(metric)] if result.metrics else []
    else:
        rows = result.history()
        if scope.startswith("last-") and scope.endswith("-avg"):
            rows = rows[-int(scope[5:-4]) :]
        values = [r.get(metric) for r in rows]
    nums = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if not nums:
        return None
    if scope == "all":
        return max(nums) if mode == "max" else min(nums)
    if scope == "last":
        return nums[-1]
    return sum(nums) / len(nums)


class ResultGrid:
    """The results of every trial of an experiment, in trial order."""

    def __init__(
        self,
        results: list[Result],
        experiment_path: str,
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        self._results = results
        self.experiment_path = experiment_path
        self._metric = metric
        self._mode = mode

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        return self._results[i]

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    @property
    def errors(self) -> list[Exception]:
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    @property
    def num_terminated(self) -> int:
        return sum(1 for r in self._results if r.status == "TERMINATED")

    def get_best_result(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Result:
        metric = metric or self._metric
        mode = mode or self._mode
        if not metric or not mode:
            raise ValueError(
                "No metric/mode given: pass get_best_result(metric=..., mode=...) or set them "
                "in TuneConfig(metric=..., mode=...)"
            )
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if scope not in ("last", "all", "avg") and not (
            scope.startswith("last-") and scope.endswith("-avg") and scope[5:-4].isdigit()
        ):
            raise ValueError(f"scope must be 'last', 'avg', 'last-N-avg' or 'all', got {scope!r}")
        scored = [
            (s, r) for r in self._results if (s := _score(r, metric, mode, scope)) is not None
        ]
        if not scored:
            raise RuntimeError(
                f"No trial reported the metric {metric!r}: cannot pick the best result"
            )
        pick = max if mode == "max" else min
        return pick(scored, key=lambda pair: pair[0])[1]

    def get_dataframe(
        self, filter_metric: str | None = None, filter_mode: str | None = None
    ) -> Any:
        import pandas as pd

        rows = []
        for r in self._results:
            if filter_metric and filter_mode:
                best = _score(r, filter_metric, filter_mode, "all")
                row = next(
                    (h for h in r.history() if h.get(filter_metric) == best), dict(r.metrics or {})
                )
            else:
                row = dict(r.metrics or {})
            for k, v in (r.config or {}).items():
                row[f"config/{k}"] = v
            row["logdir"] = r.path
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {r!r}" for r in self._results)
        return f"ResultGrid<[\n{inner}\n]>"

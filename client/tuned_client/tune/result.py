"""``Result`` and ``ResultGrid``: what ``Tuner.fit()`` returns, shaped as Ray's."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..protocol import unpack_user
from ..session import DEFAULT_METRIC
from .analysis.metrics import metric_analysis
from .analysis.trial_folder import read_trial_folder
from .trial_errors import ERROR_PICKLE, TrialError, TuneError, trial_error

# Ray's ``ray.tune.result.AUTO_RESULT_KEYS``: what it fills in on every result.
AUTO_RESULT_KEYS = (
    "training_iteration",
    "time_total_s",
    "episodes_total",
    "timesteps_total",
    "node_ip",
    "hostname",
    "pid",
    "time_total_s",
    "time_this_iter_s",
    "timestamp",
    "experiment_id",
    "date",
    "time_since_restore",
    "iterations_since_restore",
    "timesteps_since_restore",
    "config",
    "warmup_time",
)
# And what its console leaves out (``ray.tune.experimental.output.BLACKLISTED_KEYS``).
BLACKLISTED_KEYS = frozenset(
    {
        "config", "date", "done", "hostname", "iterations_since_restore", "node_ip", "pid",
        "time_since_restore", "timestamp", "trial_id", "experiment_tag", "should_checkpoint",
        "_report_on",
    }
)  # fmt: skip
# What a printed Result leaves out of its metrics: Ray's automatic keys, as the seed
# document shows it (Ray 2.0's one line: 'done', 'trial_id', 'experiment_tag' stay).
AUTO_KEYS = frozenset(AUTO_RESULT_KEYS) | {"checkpoint_dir_name"}


def unpack_metrics(packed: bytes, status: str) -> dict[str, Any]:
    """A trial's last result from the packed bytes the daemon sent; ``done`` once terminated."""
    metrics: dict[str, Any] = unpack_user(packed)
    if status == "TERMINATED":
        metrics["done"] = True
    return metrics


class TrialFolder:
    """A trial's folder as two strings: the experiment's, shared by its trials, and a leaf.

    ``fit()`` and its ResultGrid keep one per trial, so this saves the shared
    prefix (most of the path) on each.
    """

    __slots__ = ("_leaf", "_parent")

    @property
    def path(self) -> str:
        return self._parent + self._leaf

    @path.setter
    def path(self, value: str) -> None:
        parent, sep, leaf = value.rpartition("/")
        self._parent = sys.intern(parent + sep)
        self._leaf = leaf


class Result(TrialFolder):
    """One trial's outcome: its last metrics, config, error, folder and checkpoints.

    A ResultGrid holds one per trial for as long as the user keeps it, so the
    metrics may stay packed until first read, and ``best_checkpoints`` is
    listed from the trial's folder when first read.
    """

    __slots__ = (
        "_best",
        "_metrics",
        "_packed",
        "checkpoint",
        "config",
        "error",
        "status",
        "trial_id",
    )
    _packed: bytes | None

    def __init__(
        self,
        metrics: dict[str, Any] | None,
        config: dict[str, Any] | None,
        path: str,
        error: Exception | None = None,
        checkpoint: Checkpoint | None = None,
        best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] | None = None,
        trial_id: str = "",
        status: str = "",
        _packed_metrics: bytes | None = None,
    ) -> None:
        """``_packed_metrics``: the metrics as the daemon packed them, decoded when first read."""
        self._metrics = metrics
        self._packed = _packed_metrics
        self.config = config
        self.path = path
        self.error = error
        self.checkpoint = checkpoint
        self._best = best_checkpoints
        self.trial_id = trial_id
        self.status = status

    @property
    def metrics(self) -> dict[str, Any] | None:
        if self._metrics is None and self._packed is not None:
            self._metrics, self._packed = unpack_metrics(self._packed, self.status), None
        return self._metrics

    @metrics.setter
    def metrics(self, value: dict[str, Any] | None) -> None:
        self._metrics, self._packed = value, None

    def peek_metrics(self) -> dict[str, Any] | None:
        """The metrics, without keeping them decoded: for a pass over every result."""
        if self._metrics is None and self._packed is not None:
            return unpack_metrics(self._packed, self.status)
        return self._metrics

    @property
    def best_checkpoints(self) -> list[tuple[Checkpoint, dict[str, Any]]]:
        """The checkpoints kept, oldest first, each with the metrics reported with it."""
        if self._best is None:
            self._best = kept_checkpoints(self.path)
        return self._best

    @best_checkpoints.setter
    def best_checkpoints(self, value: list[tuple[Checkpoint, dict[str, Any]]]) -> None:
        self._best = value

    @property
    def log_dir(self) -> Path:
        return Path(self.path)

    @property
    def metrics_dataframe(self) -> Any:
        import pandas as pd

        progress = Path(self.path) / "progress.csv"
        return pd.read_csv(progress) if progress.exists() else pd.DataFrame()

    def metric_analysis(self, metric: str, scope: str = "all") -> dict[str, float] | None:
        """Ray's per-metric scores; the last result alone is enough for ``scope="last"``."""
        if scope == "last":
            metrics = self.peek_metrics()
            return metric_analysis([metrics], metric) if metrics else None
        rows, last = self.history(), self.peek_metrics() or {}
        if rows and last:  # exact: result.json holds no NaN or inf
            rows[-1] = {**rows[-1], **last}
        return metric_analysis(rows or [last], metric)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Result:
        """The Result of the trial whose folder is ``path`` (``ray.tune.Result.from_path``)."""
        found = read_trial_folder(Path(path))
        error = None
        if found.error_text is not None:
            error = trial_error(found.error_line, found.error_text, found.trial_id, str(path))
        return cls(
            found.last,
            found.config,
            str(found.path),
            error=error,
            checkpoint=found.checkpoint,
            trial_id=found.trial_id,
            status="ERROR" if error is not None else "TERMINATED",
        )

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
        """As the seed document prints it (Ray 2.0): one line, metrics without Ray's
        automatic keys, the error's type, the folder. (Ray 2.5+ prints a field a line.)"""
        metrics = self.peek_metrics()
        shown = (
            {k: v for k, v in metrics.items() if k not in AUTO_KEYS}
            if metrics is not None
            else None
        )
        error = None if self.error is None else type(self.error).__name__
        parts = [f"metrics={shown!r}", f"error={error!r}", f"log_dir={self.log_dir!r}"]
        if self.checkpoint is not None:
            parts.append(f"checkpoint={self.checkpoint!r}")
        return f"Result({', '.join(parts)})"


def kept_checkpoints(trial_dir: str) -> list[tuple[Checkpoint, dict[str, Any]]]:
    """The checkpoint folders left after pruning, each with the metrics reported with it."""
    if not trial_dir or not Path(trial_dir).is_dir():
        return []
    found = sorted(
        d for d in Path(trial_dir).iterdir() if d.is_dir() and d.name.startswith("checkpoint_")
    )
    metrics: dict[str, dict[str, Any]] = {}
    if found:
        with contextlib.suppress(OSError):
            for line in (Path(trial_dir) / "result.json").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict) and row.get("checkpoint_dir_name"):
                        metrics[row["checkpoint_dir_name"]] = row
    return [(Checkpoint(str(d)), metrics.get(d.name, {})) for d in found]


__all__ = [
    "AUTO_RESULT_KEYS",
    "BLACKLISTED_KEYS",
    "DEFAULT_METRIC",
    "ERROR_PICKLE",
    "Result",
    "TrialError",
    "TuneError",
    "trial_error",
]

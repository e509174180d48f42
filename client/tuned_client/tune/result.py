"""``Result`` and ``ResultGrid``: what ``Tuner.fit()`` returns, shaped as Ray's."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..protocol import unpack_user
from .analysis.dataframes import results_dataframe
from .analysis.metrics import best_index, check_scope, metric_analysis
from .analysis.trial_folder import read_trial_folder

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


ERROR_PICKLE = "error.pkl"  # the trial's exception, pickled by the worker when it fails


def trial_error(message: str, traceback: str, trial_id: str, trial_dir: str) -> TrialError:
    """The error of a failed trial, an instance of the exception class it raised too.

    As Ray's ``RayTaskError(ValueError)``: ``isinstance(result.error, ValueError)``
    holds for a trial that raised ValueError, and ``str()`` shows its traceback.
    The exception comes from ``error.pkl`` in the trial's folder; without one (a
    command trial, an exception that does not pickle, a trial killed by a
    signal) it is a plain ``TrialError``.
    """
    cause = _pickled_cause(trial_dir, message)
    if cause is None or isinstance(cause, TrialError):
        return cause or TrialError(message, traceback, trial_id)
    cls = type(cause)
    try:
        derived = type(
            f"TrialError({cls.__name__})", (TrialError, cls), {"__module__": cls.__module__}
        )
        err: TrialError = derived.__new__(derived, *cause.args)
    except TypeError:  # a class that cannot be combined (layout, final): the plain error
        return TrialError(message, traceback, trial_id)
    with contextlib.suppress(AttributeError, TypeError):
        err.__dict__.update(getattr(cause, "__dict__", {}))
    err.args = (message,)
    err.traceback = traceback
    err.trial_id = trial_id
    err.cause = cause  # type: ignore[attr-defined]
    return err


def _pickled_cause(trial_dir: str, message: str) -> BaseException | None:
    path = Path(trial_dir) / ERROR_PICKLE if trial_dir else None
    if path is None or not path.is_file():
        return None
    try:
        import cloudpickle

        with open(path, "rb") as f:
            cause = cloudpickle.load(f)
    except Exception:  # a class that no longer imports, a damaged file: the text is enough
        return None
    if not isinstance(cause, BaseException) or not message.startswith(type(cause).__name__):
        return None  # left over from an earlier attempt that failed differently
    return cause


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
        """The best trial's Result (Ray's rules: see ``analysis/metrics.py``).

        With a single trial that trial is the best, with or without a metric.
        """
        if len(self._results) == 1:
            return self._results[0]
        metric = metric or self._metric
        mode = mode or self._mode
        if not metric:
            raise ValueError(
                "No metric is provided. Either pass in a `metric` arg to `get_best_result` or "
                "specify a metric in the `TuneConfig` of your `Tuner`."
            )
        if not mode:
            raise ValueError(
                "No mode is provided. Either pass in a `mode` arg to `get_best_result` or "
                "specify a mode in the `TuneConfig` of your `Tuner`."
            )
        if mode not in ("min", "max"):
            raise ValueError("If set, `mode` has to be one of [min, max]")
        check_scope(scope)
        analyses = [r.metric_analysis(metric, scope) for r in self._results]
        best = best_index(analyses, mode, scope, filter_nan_and_inf)
        if best is None:
            message = (
                f"No best trial found for the given metric: {metric}. This means that no trial "
                "has reported this metric"
            )
            message += (
                ", or all values reported for this metric are NaN. To not ignore NaN values, "
                "you can set the `filter_nan_and_inf` arg to False."
                if filter_nan_and_inf
                else "."
            )
            raise RuntimeError(message)
        return self._results[best]

    def get_dataframe(
        self, filter_metric: str | None = None, filter_mode: str | None = None
    ) -> Any:
        """One row per trial: its last result, or with ``filter_metric`` and ``filter_mode``
        the result where the metric was best; nested metrics and config flattened with
        ``/`` (``config/nested/param``), and the trial's ``logdir``."""
        return results_dataframe(self._results, filter_metric, filter_mode)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {r!r}" for r in self._results)
        return f"ResultGrid<[\n{inner}\n]>"

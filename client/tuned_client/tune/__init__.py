"""The ``tune`` namespace, as Ray Tune's: ``from tuned_client import tune``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..checkpoint import Checkpoint
from ..session import DEFAULT_METRIC, TrialContext, require_session
from .config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from .resources import PlacementGroupFactory, with_resources

if TYPE_CHECKING:
    from . import analysis, schedulers, search, stopper, utils
    from .analysis import ExperimentAnalysis
    from .callback import Callback
    from .parameters import with_parameters
    from .progress_reporter import CLIReporter, JupyterNotebookReporter, ProgressReporter
    from .result import Result, TrialError, TuneError
    from .result_grid import ResultGrid
    from .search.sample import (
        choice,
        grid_search,
        lograndint,
        loguniform,
        qlograndint,
        qloguniform,
        qrandint,
        qrandn,
        quniform,
        randint,
        randn,
        sample_from,
        uniform,
    )
    from .stopper import Stopper
    from .trainable import Trainable
    from .tune import run
    from .tuner import Tuner

# Imported on first use (PEP 562): a trial's zygote unpickles a trainable that
# references this package, and must not pay for the Tuner, the searchers and
# the schedulers it never runs.
_LAZY = {
    "analysis": ".analysis",
    "schedulers": ".schedulers",
    "stopper": ".stopper",
    "search": ".search",
    "utils": ".utils",
    "Callback": ".callback",
    "CLIReporter": ".progress_reporter",
    "JupyterNotebookReporter": ".progress_reporter",
    "ProgressReporter": ".progress_reporter",
    "Result": ".result",
    "ResultGrid": ".result_grid",
    "TrialError": ".result",
    "TuneError": ".result",
    "ExperimentAnalysis": ".analysis",
    "Stopper": ".stopper",
    "run": ".tune",
    "Trainable": ".trainable",
    "with_parameters": ".parameters",
    "Tuner": ".tuner",
    **dict.fromkeys(
        [
            "choice",
            "grid_search",
            "lograndint",
            "loguniform",
            "qlograndint",
            "qloguniform",
            "qrandint",
            "qrandn",
            "quniform",
            "randint",
            "randn",
            "sample_from",
            "uniform",
        ],
        ".search.sample",
    ),
}
_SUBMODULES = {"analysis", "schedulers", "search", "stopper", "utils"}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(where, __name__)
    value = module if name in _SUBMODULES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def report(
    metrics: Any = None,
    *,
    checkpoint: Checkpoint | None = None,
    **kwargs: Any,
) -> None:
    """Report metrics (and optionally a checkpoint) from inside a trial.

    ``tune.report({"loss": x})`` as Ray 2 writes it; ``tune.report(loss=x)`` and
    ``tune.report(x)`` (recorded as ``_metric``) as Ray 1 scripts do.
    """
    if metrics is None:
        metrics = kwargs
    elif not isinstance(metrics, dict):
        metrics = {DEFAULT_METRIC: metrics, **kwargs}
    elif kwargs:
        raise TypeError("tune.report takes a metrics dict or keyword metrics, not both")
    require_session("report").report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint this trial attempt resumes from, or None on a fresh start."""
    return require_session("get_checkpoint").get_checkpoint()


def get_context() -> TrialContext:
    """The running trial's id, name and folder."""
    return TrialContext(require_session("get_context").assignment)


__all__ = [
    "CLIReporter",
    "Callback",
    "Checkpoint",
    "CheckpointConfig",
    "ExperimentAnalysis",
    "FailureConfig",
    "JupyterNotebookReporter",
    "PlacementGroupFactory",
    "ProgressReporter",
    "Result",
    "ResultGrid",
    "RunConfig",
    "Stopper",
    "Trainable",
    "TrialError",
    "TuneConfig",
    "TuneError",
    "Tuner",
    "analysis",
    "choice",
    "get_checkpoint",
    "get_context",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "report",
    "run",
    "sample_from",
    "schedulers",
    "search",
    "stopper",
    "uniform",
    "utils",
    "with_parameters",
    "with_resources",
]

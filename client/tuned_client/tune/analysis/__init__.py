"""``ray.tune.analysis``: ``ExperimentAnalysis``, reading an experiment back from its folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .experiment_analysis import ExperimentAnalysis


def __getattr__(name: str) -> Any:
    # Lazy: result.py imports this package's helpers, and ExperimentAnalysis imports result.py.
    if name == "ExperimentAnalysis":
        from .experiment_analysis import ExperimentAnalysis

        return ExperimentAnalysis
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ExperimentAnalysis"]

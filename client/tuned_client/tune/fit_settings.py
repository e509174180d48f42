"""What one ``fit()`` works from: the Tuner's arguments, as plain data.

The parts that run an experiment (building its spec, following its events,
steering it, restoring it) take this, never the ``Tuner``: so none of them
imports the module that composes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import RunConfig, TuneConfig


@dataclass
class FitSettings:
    trainable: Callable[..., Any]
    param_space: dict[str, Any] = field(default_factory=dict)
    tune_config: TuneConfig = field(default_factory=TuneConfig)
    run_config: RunConfig = field(default_factory=RunConfig)
    socket: str | None = None  # None: $TUNED_SOCKET or the default socket
    # Tuner.restore brought the searcher back with its state: it is not set up again.
    searcher_restored: bool = False


def trainable_name(trainable: Any) -> str:
    """The trainable's name as trial names and folders use it (``train_fn``)."""
    name = getattr(trainable, "__name__", None) or type(trainable).__name__
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "trainable"

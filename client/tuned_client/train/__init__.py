"""``ray.train``'s names, for trainables written against it: ``from tuned_client import train``.

Inside a Tune trial, ``train.report``, ``train.get_checkpoint`` and
``train.get_context`` are ``tune``'s; the configuration classes are the same
objects ``tune`` exports, so ``train.RunConfig`` and ``tune.RunConfig`` mix.
Kept light: a trial's zygote imports this when it unpickles a trainable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..checkpoint import Checkpoint
from ..tune import get_checkpoint, get_context, report
from ..tune.config import CheckpointConfig, FailureConfig, RunConfig
from .scaling import ScalingConfig

if TYPE_CHECKING:
    from ..tune.result import Result


def __getattr__(name: str) -> Any:
    if name == "Result":
        from ..tune.result import Result

        return Result
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "FailureConfig",
    "Result",
    "RunConfig",
    "ScalingConfig",
    "get_checkpoint",
    "get_context",
    "report",
]

"""``FunctionStopper``: a plain ``fn(trial_id, result) -> bool`` as a stopper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .stopper import Stopper


class FunctionStopper(Stopper):
    def __init__(self, function: Callable[[str, dict[str, Any]], bool]) -> None:
        self._fn = function

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(self._fn(trial_id, result))

    def stop_all(self) -> bool:
        return False

    @classmethod
    def is_valid_function(cls, fn: Any) -> bool:
        """True for a callable that is not a Stopper; an object with ``stop_all`` that is
        not a Stopper subclass is refused, since its ``stop_all`` would never be called."""
        is_function = callable(fn) and not isinstance(fn, Stopper)
        if is_function and hasattr(fn, "stop_all"):
            raise ValueError(
                "Stop object must be ray.tune.Stopper subclass to be detected correctly."
            )
        return is_function

"""``Stopper`` and ``CombinedStopper`` (``ray.tune.stopper``): stop trials or the whole run.

A stopper is called in the client with every result a trial reports
(``stopper(trial_id, result)``: True stops that trial) and asked after it
whether the whole experiment should end (``stop_all()``). It is pickled into
the experiment folder with its state, so ``Tuner.restore`` goes on with the
counters and budgets it had (see ``state.py``).
"""

from __future__ import annotations

from typing import Any


class Stopper:
    """Base class of experiment stoppers: override ``__call__`` and ``stop_all``."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        """True if the trial should end given this result."""
        raise NotImplementedError

    def stop_all(self) -> bool:
        """True if the whole experiment should end."""
        raise NotImplementedError


class CombinedStopper(Stopper):
    """Stops what any of ``stoppers`` would stop (a logical OR).

    Evaluated left to right and short-circuited, as Ray's: once one stopper says
    stop, the ones after it do not see that result (a stateful one such as
    ``MaximumIterationStopper`` does not count it).
    """

    def __init__(self, *stoppers: Stopper) -> None:
        self._stoppers = stoppers

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return any(s(trial_id, result) for s in self._stoppers)

    def stop_all(self) -> bool:
        return any(s.stop_all() for s in self._stoppers)


class NoopStopper(Stopper):
    """Stops nothing (what Ray uses when ``stop`` is not given)."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return False

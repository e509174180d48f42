"""``HyperBandScheduler`` under Ray's name, run as asynchronous brackets.

Ray's synchronous HyperBand pauses every trial of a bracket at each rung until
the whole rung has reported, then resumes the best ``1/eta``. tuned cannot hold
a paused process, and Ray's own documentation recommends the asynchronous form
(no stragglers, same theoretical guarantees), so this runs HyperBand's bracket
set (``s = 0 .. s_max``, ``s_max = floor(log_eta(max_t))``) as ASHA brackets:
a trial is assigned a bracket and stopped at a rung if it falls below the
``1 - 1/eta`` quantile of the trials that reached that rung before it.
"""

from __future__ import annotations

import math

from .async_hyperband import AsyncHyperBandScheduler


class HyperBandScheduler(AsyncHyperBandScheduler):
    """HyperBand's brackets with asynchronous promotion (see module doc)."""

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 81,
        reduction_factor: float = 3,
        stop_last_trials: bool = True,
        seed: int | None = None,
    ) -> None:
        if reduction_factor <= 1:
            raise ValueError("reduction_factor must be greater than 1")
        s_max = max(int(math.log(max_t) / math.log(reduction_factor) + 1e-9), 0)
        super().__init__(
            time_attr=time_attr,
            metric=metric,
            mode=mode,
            max_t=max_t,
            grace_period=1,
            reduction_factor=reduction_factor,
            brackets=s_max + 1,
            stop_last_trials=stop_last_trials,
            seed=seed,
        )

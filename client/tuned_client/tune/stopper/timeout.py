"""``TimeoutStopper``: end the whole experiment once a time budget is spent.

The budget is spent only while the experiment runs: the clock starts at the
first ``stop_all()`` (after set-up), and a restored stopper forgets when it
was last checked, so time between a crash and ``Tuner.restore`` is not
charged, exactly as Ray's.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from .stopper import Stopper

log = logging.getLogger("tuned_client")


class TimeoutStopper(Stopper):
    def __init__(self, timeout: float | datetime.timedelta) -> None:
        if isinstance(timeout, datetime.timedelta):
            self._timeout_seconds = timeout.total_seconds()
        elif isinstance(timeout, int | float) and not isinstance(timeout, bool):
            self._timeout_seconds = float(timeout)
        else:
            raise ValueError(
                "`timeout` parameter has to be either a number or a `datetime.timedelta` "
                f"object. Found: {type(timeout)}"
            )
        self._budget = self._timeout_seconds
        self._last_check: float | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        now = time.time()
        if self._last_check:
            self._budget -= now - self._last_check
        self._last_check = now
        if self._budget <= 0:
            log.info("Reached timeout of %s seconds. Stopping all trials.", self._timeout_seconds)
            return True
        return False

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_last_check"] = None
        self.__dict__.update(state)

"""The client's view of one trial, built from the event stream (Ray's ``Trial``)."""

from __future__ import annotations

from typing import Any

from ..protocol import unpack_user
from .result import TrialFolder, unpack_metrics


class TrialView(TrialFolder):
    """What the client knows about one trial, built from the event stream.

    ``fit()`` keeps one per trial until it returns, so a finished trial keeps
    only what its Result, the status table and callbacks read, compactly: its
    last result as the packed bytes the daemon sent (exact, decoded on each
    read; about a third of a decoded dict), its folder as a leaf name under a
    parent string every trial shares, and no resources (only running trials
    count towards the "Resources requested" line).
    """

    __slots__ = (
        "_packed",
        "_resources",
        "_result",
        "attempt",
        "checkpoint",
        "config",
        "error",
        "name",
        "pid",
        "status",
        "tag",
        "traceback",
        "trial_id",
    )
    _packed: bytes | None  # the last result as the daemon packed it
    _result: dict[str, Any] | None  # ... and decoded, while the trial is live
    _resources: dict[str, float] | None  # what it holds while it runs

    def __init__(
        self,
        trial_id: str,
        name: str,
        tag: str,
        config: dict[str, Any],
        status: str = "PENDING",
        pid: int = 0,
        path: str = "",
        last_result: dict[str, Any] | None = None,
        error: str = "",
        traceback: str = "",
        checkpoint: str = "",
        resources: dict[str, float] | None = None,
    ) -> None:
        self.trial_id = trial_id
        self.name = name
        self.tag = tag
        self.config = config
        self.status = status
        self.pid = pid
        self.path = path
        self.last_result = last_result
        self.error = error
        self.traceback = traceback
        self.checkpoint = checkpoint
        self.resources = resources
        self.attempt = 0

    @property
    def resources(self) -> dict[str, float]:
        return self._resources if self._resources is not None else {}

    @resources.setter
    def resources(self, value: dict[str, float] | None) -> None:
        self._resources = value or None

    @property
    def last_result(self) -> dict[str, Any] | None:
        """The last reported metrics (``done`` is True once the trial has terminated)."""
        if self._result is not None or self._packed is None:
            return self._result
        return unpack_metrics(self._packed, self.status)

    @last_result.setter
    def last_result(self, value: dict[str, Any] | None) -> None:
        self._result, self._packed = value, None

    def set_packed_result(self, packed: bytes) -> None:
        """A new result as the daemon packed it; decoded now if the trial still runs."""
        self._packed = packed
        self._result = None if self.finished else unpack_user(packed)

    def packed_result(self) -> bytes | None:
        """The last result, still packed, when that is all the view keeps (it has finished)."""
        return self._packed if self._result is None else None

    @property
    def finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")

    def finish(self, status: str, error: str, traceback: str) -> None:
        """The trial ended: keep its last result packed, drop what only a live trial needs."""
        self.status, self.error, self.traceback = status, error, traceback
        self._resources = None
        if self._packed is not None:
            self._result = None
        elif self._result is not None and status == "TERMINATED":  # set by hand, not by events
            self._result["done"] = True

    # ------------------------------------------------------------ Ray's Trial attributes

    @property
    def local_path(self) -> str:
        return self.path

    @property
    def logdir(self) -> str:
        return self.path

    @property
    def experiment_tag(self) -> str:
        return self.tag

    @property
    def error_file(self) -> str | None:
        """The trial's ``error.txt`` once it has failed (Ray's ``Trial.error_file``)."""
        return f"{self.path}/error.txt" if self.status == "ERROR" and self.path else None

    @property
    def evaluated_params(self) -> dict[str, Any]:
        return dict(self.config)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return self.name  # as Ray's Trial prints

"""What the journal holds besides events: accepted experiments and control requests.

Plain data, applied to the state by ``core.reducer`` exactly as events are,
whether they are new (the daemon) or replayed (start-up).
"""

from __future__ import annotations

from typing import Literal

import msgspec
from tuned_client.protocol import ExperimentSpec


class Submitted(msgspec.Struct, tag="submitted", tag_field="kind"):
    """An experiment as accepted, with the ids the daemon gave it."""

    experiment_id: str
    path: str
    trial_ids: list[str]
    spec: ExperimentSpec


class Control(msgspec.Struct, tag="control", tag_field="kind"):
    """A request that changes state without an event of its own, replayed at start-up.

    ``cancel`` (experiment or trial id), ``close`` (no more trials), ``stop``
    (a trial ends TERMINATED at its next report), ``interrupt`` (the script driving
    the experiment went away: no more trials, running ones stop at their next report
    and end unfinished), ``resume`` (``Tuner.restore`` re-opened the experiment;
    ``restart`` lists trials that lose their checkpoint, ``reopen`` that a steered one
    takes new trials again, ``path`` where its folder was moved, with ``resume`` the
    other trials queued again, which follow it),
    ``exploit`` (PBT: once its attempt ends, the trial runs again with ``config``
    from ``checkpoint``, a copy of a better trial's taken at ``iteration``).
    """

    action: Literal["cancel", "close", "stop", "interrupt", "resume", "exploit"]
    target: str
    restart: list[str] = []
    config: bytes = b""  # the packed config (a Raw cannot be optional in msgspec)
    checkpoint: str = ""
    iteration: int = 0
    time_total_s: float = 0.0
    resources: list[dict[str, float]] = []  # exploit: the next attempt's bundles, if new
    reopen: bool = False  # resume: a steered experiment takes new trials again
    path: str = ""  # resume: the experiment's folder was moved here
    resume: list[str] = []  # resume with a path: the trials queued again, moved with it


class Epoch(msgspec.Struct, tag="epoch", tag_field="kind"):
    """The first record of a journal begun by a compaction (``store.snapshot``).

    The snapshot of epoch ``number`` holds everything before this journal; a
    journal of an older epoch than the snapshot is wholly inside it.
    """

    number: int

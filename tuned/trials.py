"""Trial and experiment state: data with one transition function.

A trial's status changes only through ``transition``, which refuses moves the
life cycle does not allow; the daemon turns every transition into an event, and
the journal and the event stream carry the same events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from tuned_client.protocol import ExperimentSpec, TrialStatus

from .ledger import Allocation, Request

if TYPE_CHECKING:
    from .launcher import TrialProcess

ALLOWED: dict[TrialStatus, frozenset[TrialStatus]] = {
    "PENDING": frozenset({"RUNNING", "TERMINATED", "ERROR"}),  # start, or cancelled in the queue
    "RUNNING": frozenset({"PENDING", "TERMINATED", "ERROR"}),  # retry/requeue, or done
    "TERMINATED": frozenset(),
    "ERROR": frozenset({"PENDING"}),  # Tuner.restore(restart_errored=True)
}
FINAL: frozenset[TrialStatus] = frozenset({"TERMINATED", "ERROR"})


class TransitionError(RuntimeError):
    """A bug: the daemon tried a move the trial life cycle does not have."""


@dataclass(slots=True, eq=False)
class Trial:
    id: str
    index: int
    tag: str
    experiment: Experiment
    config: msgspec.Raw
    request: Request
    resources: list[dict[str, float]]
    status: TrialStatus = "PENDING"
    dir: Path | None = None
    attempt: int = 0
    failures: int = 0
    pid: int = 0
    process: TrialProcess | None = None  # while an attempt runs
    started_at: float = 0.0
    allocation: Allocation | None = None
    gpu_ids: str = ""
    token: str = ""
    iteration: int = 0
    time_total_s: float = 0.0
    last_result: msgspec.Raw | None = None
    checkpoint: str = ""
    checkpoint_iteration: int = 0
    checkpoint_time: float = 0.0
    # result.json and progress.csv sizes just after the latest checkpoint's row:
    # a retry from that checkpoint cuts the files back there, so no row repeats.
    checkpoint_offsets: tuple[int, int] = (0, 0)
    error: str = ""
    traceback: str = ""
    timed_out: bool = False
    stop_requested: bool = False
    exit_reported: bool = False
    exit_ok: bool = False
    usage: dict[str, Any] = field(default_factory=dict)
    # checkpoint folders kept (CheckpointConfig), oldest first, with their scores
    kept_checkpoints: list[tuple[str, float | None]] = field(default_factory=list)
    gpu_pids: set[int] = field(default_factory=set)  # processes seen holding GPU memory

    @property
    def name(self) -> str:
        return f"{self.experiment.spec.trainable_name}_{self.id}"


@dataclass(slots=True, eq=False)
class Experiment:
    id: str
    spec: ExperimentSpec
    path: Path
    seq: int  # admission order between experiments: first come, first served
    trials: list[Trial] = field(default_factory=list)
    queue: deque[Trial] = field(default_factory=deque)
    running: int = 0
    finished: int = 0
    cancelled: bool = False
    closed: bool = True  # no more trials will be added
    done: bool = False
    started_at: float = 0.0
    state_written: float = 0.0  # monotonic time experiment_state.msgpack was last written

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    @property
    def at_concurrency_limit(self) -> bool:
        limit = self.spec.max_concurrent_trials
        return limit > 0 and self.running >= limit

    @property
    def complete(self) -> bool:
        return self.closed and self.finished == len(self.trials)


def transition(trial: Trial, new: TrialStatus) -> None:
    """Move ``trial`` to ``new`` and keep the experiment's counters in step."""
    old = trial.status
    if new not in ALLOWED[old]:
        raise TransitionError(f"trial {trial.id}: {old} -> {new} is not a valid transition")
    exp = trial.experiment
    if old == "RUNNING":
        exp.running -= 1
    if new == "RUNNING":
        exp.running += 1
    if old in FINAL:
        exp.finished -= 1
    if new in FINAL:
        exp.finished += 1
    trial.status = new

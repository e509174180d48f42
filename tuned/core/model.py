"""Trial and experiment state: data with one transition function.

A trial's status changes only through ``transition``, which refuses moves the
life cycle does not allow; the daemon turns every transition into an event, and
the journal and the event stream carry the same events.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
from tuned_client.gridplan import Grid
from tuned_client.protocol import ExperimentSpec, TrialStatus

from .ledger import Allocation, Request

ALLOWED: dict[TrialStatus, frozenset[TrialStatus]] = {
    "PENDING": frozenset({"RUNNING", "TERMINATED", "ERROR"}),  # start, or cancelled in the queue
    "RUNNING": frozenset({"PENDING", "TERMINATED", "ERROR"}),  # retry/requeue, or done
    "TERMINATED": frozenset(),
    "ERROR": frozenset({"PENDING"}),  # Tuner.restore(restart_errored=True)
}
FINAL: frozenset[TrialStatus] = frozenset({"TERMINATED", "ERROR"})


class TransitionError(RuntimeError):
    """A bug: the daemon tried a move the trial life cycle does not have."""


class ProcessHandle(Protocol):
    """A running attempt's processes, wherever they run (``run.launcher.TrialProcess``)."""

    @property
    def pid(self) -> int: ...

    def signal(self, sig: signal.Signals) -> None: ...


class ArchiveIndex(Protocol):
    """Which of an experiment's finished trials are on disk (``store.archive``)."""

    count: int

    def holds(self, index: int) -> bool: ...


def trainable_file(path: Path, experiment_id: str) -> Path:
    """Where an experiment's pickled trainable is kept for its trials to load.

    One file per experiment, never shared: a second experiment with the same
    name (after the first has ended, or under another daemon) must not replace
    the code the first one's trials load when they are retried or resumed.
    """
    return path / f"trainable-{experiment_id}.pkl"


def trial_id(experiment_id: str, index: int) -> str:
    """A trial's id: its experiment's and its index there, so either gives the other."""
    return f"{experiment_id}_{index:05d}"


def split_trial_id(trial_id_: str) -> tuple[str, int] | None:
    """(experiment id, index) of a well-formed trial id, else None."""
    exp_id, _, index = trial_id_.rpartition("_")
    if not exp_id or not index.isdigit() or trial_id(exp_id, int(index)) != trial_id_:
        return None
    return exp_id, int(index)


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
    losses: int = 0  # attempts lost in a row through no fault of its own (its zygote died)
    pid: int = 0
    process: ProcessHandle | None = None  # while an attempt runs
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
    # By index; None: finished and moved to ``archive`` (tuned.store.archive), not in memory.
    trials: list[Trial | None] = field(default_factory=list)
    queue: deque[Trial] = field(default_factory=deque)
    running: int = 0
    finished: int = 0
    errors: int = 0  # of the finished, how many ended in ERROR
    cancelled: bool = False
    # The script driving it went away (``daemon.drivers``): no new trials, the running
    # ones stop at their next report, and it ends ``interrupted``, for Tuner.restore.
    interrupted: bool = False
    closed: bool = True  # no more trials will be added
    done: bool = False
    started_at: float = 0.0
    state_written: float = 0.0  # monotonic time experiment_state.msgpack was last written
    # Seconds between two writes of it: grows with what a write costs (tuned.recovery).
    state_every: float = 0.0
    state_writing: bool = False  # a large experiment's state is being written in steps
    state_pending: bool = False  # a write is due once the interval is over
    state_generation: int = 0  # bumped by each forced write: one in steps then gives up
    archive: ArchiveIndex | None = None
    # A plain grid described (``spec.grid``): its trials are made as the queue needs them.
    grid: Grid | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.spec.grid is not None:
            self.grid = Grid(self.spec.grid)

    @property
    def to_make(self) -> int:
        """Trials its grid will still make: none once it is closed (cancelled, out of time)."""
        if self.grid is None or self.closed:
            return 0
        return max(0, self.grid.total - len(self.trials))

    @property
    def total(self) -> int:
        """Its trials: those made, and those its grid will still make."""
        return len(self.trials) + self.to_make

    @property
    def trainable_path(self) -> Path:
        return trainable_file(self.path, self.id)

    def live(self) -> Iterator[Trial]:
        """The trials held in memory, in order: every unfinished one, and finished ones
        not archived (yet, or because the disk refused)."""
        return (t for t in self.trials if t is not None)

    def counts(self) -> dict[str, int]:
        """Trials by status, from the counters ``transition`` keeps: O(1), not O(trials)."""
        pending = self.total - self.running - self.finished
        counts = {
            "PENDING": pending,
            "RUNNING": self.running,
            "TERMINATED": self.finished - self.errors,
            "ERROR": self.errors,
        }
        return {status: n for status, n in counts.items() if n}

    @property
    def at_concurrency_limit(self) -> bool:
        limit = self.spec.max_concurrent_trials
        return limit > 0 and self.running >= limit

    @property
    def needs_driver(self) -> bool:
        """Whether its searcher, scheduler or stopper runs in a client (``daemon.drivers``)."""
        return self.spec.open_ended or self.spec.decide_results

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
    exp.errors += (new == "ERROR") - (old == "ERROR")
    trial.status = new


def move_experiment(exp: Experiment, new: Path) -> None:
    """``Tuner.restore`` of an experiment whose folder was moved to ``new``: the trials
    in memory (those to run again) find their folders and checkpoints there. Archived
    ones keep the old paths in their records; readers rebase those (as Ray's do)."""
    old = str(exp.path)

    def rebase(value: str) -> str:
        if value == old or value.startswith(old + "/"):
            return str(new) + value[len(old) :]
        return value

    for trial in exp.live():
        trial.dir = Path(rebase(str(trial.dir))) if trial.dir is not None else None
        trial.checkpoint = rebase(trial.checkpoint)
        trial.kept_checkpoints = [(rebase(c), score) for c, score in trial.kept_checkpoints]
    exp.path = new

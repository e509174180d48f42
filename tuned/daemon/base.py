"""The daemon's parts composed in one place, and the one way its state changes.

Every change of state is a record (an accepted experiment, a control request,
an event) that ``emit``/``control``/``accept`` journal, publish if it is an
event, and apply through ``core.reducer``: the same code start-up replays the
journal with. What is not state (processes, allocations, files) is done around
the records by the request verbs, each in a module of this package (``intake``,
``outcomes``, ``reports``, ``resume``), which ``Daemon`` puts together.

Everything runs on the one event loop and is synchronous except where it waits
for processes (``run.supervisor``) or the disk (``journal.sync``).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup
from tuned_client import protocol as p

from ..config import Settings
from ..core import reducer
from ..core.ledger import SCALE, Capacity, Ledger
from ..core.model import Experiment, Trial, transition
from ..core.outcome import Outcome
from ..core.records import Control, Submitted
from ..core.scheduler import Scheduler
from ..core.state import State
from ..errors import Refused
from ..run.inventory import GpuProbe, build_capacity
from ..run.launcher import ClusterLauncher, Launcher
from ..run.monitor import SAMPLE_INTERVAL_S, Sampler
from ..run.supervisor import Runner
from ..serve import views
from ..serve.access import Gate
from ..serve.decisions import Decisions
from ..serve.events import EventBus
from ..store.archive import Archive
from ..store.folderlock import FolderLocks
from ..store.journal import Journal, encode_record
from ..store.results import TrialFiles
from ..store.statefile import StateFiles

log = structlog.get_logger("tuned.daemon")

RESULT_FLUSH_S = 0.05  # how long a reported row may wait in memory before it is written


class DaemonBase:
    """The parts of the daemon and what changes its state; the request verbs build on it."""

    def __init__(self, settings: Settings, probe: GpuProbe, launcher: Launcher) -> None:
        self.settings = settings
        self.probe = probe
        self.launcher = launcher
        if isinstance(launcher, ClusterLauncher):
            self.capacity = launcher.capacity()
        else:
            self.capacity = build_capacity(settings, probe)
        self.state = State()
        self.ledger = Ledger(self.capacity)
        self.scheduler = Scheduler(self.ledger)
        self.bus = EventBus(settings.event_history_bytes, settings.subscriber_buffer_bytes)
        self.journal = Journal(settings.journal_path)
        self.archive = Archive(settings.state_dir / "archive")
        self.statefiles = StateFiles(settings.socket_path)
        self.runner = Runner(self)
        self.sampler = Sampler(probe, settings.low_memory_fraction)
        self.decisions = Decisions()  # trials waiting on their client's decision
        self.gate = Gate(settings)  # connections per client and in all
        self.locks = FolderLocks()  # each live experiment's folder
        self.started_at = time.time()
        self.connections = 0
        self._wakeup = anyio.Event()
        self.activity = anyio.Event()
        self.trial_started = anyio.Event()
        self._unflushed: set[TrialFiles] = set()
        self._flush_wakeup = anyio.Event()
        self.tg: TaskGroup | None = None
        self.shutdown_scope: anyio.CancelScope | None = None
        self.stopping = False
        self.epoch = 0  # the current journal's (store.snapshot)
        self.recovered = anyio.Event()  # the journal is replayed: requests may change state

    # What the request verbs (mixins of ``Daemon``) provide to the parts composed here.

    def settle(self, trial: Trial, outcome: Outcome) -> None:
        raise NotImplementedError  # outcomes.Outcomes

    def maybe_compact(self) -> None:
        """After a journal append: compact if the journal has grown (compaction.Compaction)."""

    def signal_trial(self, trial: Trial, sig: signal.Signals) -> None:
        """Signal a running trial's whole tree, wherever it runs."""
        if trial.process is not None:
            trial.process.signal(sig)

    @property
    def experiments(self) -> dict[str, Experiment]:
        return self.state.experiments

    def trial(self, trial_id: str) -> Trial | None:
        return self.state.trial(trial_id)

    def request_shutdown(self) -> None:
        """Graceful stop: cancels the root task group; trials are cleaned up shielded."""
        self.stopping = True
        if self.shutdown_scope is not None:
            self.shutdown_scope.cancel()

    def started(self, tg: TaskGroup) -> None:
        """The root task group exists: long state writes and time budgets may run in it."""
        self.tg = tg
        self.statefiles.spawn = self._spawn

    def _spawn(
        self, work: Callable[[Experiment], Coroutine[Any, Any, None]], exp: Experiment
    ) -> None:
        assert self.tg is not None
        self.tg.start_soon(work, exp)

    # ------------------------------------------------------------ records

    def emit(self, cls: type[Any], **fields: Any) -> Any:
        """Journal the event, publish it (encoded once for both), and apply it.

        A ``TrialResult`` is held to the end of the loop's turn, so that the
        results read together are journalled in one write. A daemon killed before
        that write loses them, and recovery does not need them: the trial was
        RUNNING, so it is queued again from its last checkpoint (its
        ``TrialCheckpoint`` is never held, and a checkpoint's report is synced
        before its ack) and its result files are cut back to that checkpoint's
        offsets, so the lost results are reported again by the retry. No client
        saw them either, so none knows a seq that the recovered daemon gives out
        again: events go to subscribers only after the write (``_send_batch``
        flushes first), and a reply taken in this turn (an ``ExperimentReply``'s
        seq) is written in a later one, anyio's send yielding to the loop first.
        """
        event = cls(seq=self.bus.next_seq(), ts=time.time(), **fields)
        body = encode_record(event)
        if cls is not p.ResourceSnapshot:  # usage samples are news, not state
            self.journal.append_encoded(body, hold=cls is p.TrialResult)
            self.maybe_compact()
        self.bus.publish_encoded(event, body)
        self._applied(reducer.apply(self.state, event, self.archive.revive))
        return event

    def control(self, action: Any, target: str, **fields: Any) -> reducer.Applied:
        """Journal a control request and apply it."""
        record = Control(action, target, **fields)
        self.journal.append(record)
        self.maybe_compact()
        return reducer.apply(self.state, record, self.archive.revive)

    def _applied(self, applied: reducer.Applied) -> None:
        for path in applied.dropped:  # CheckpointConfig(num_to_keep=...)
            shutil.rmtree(path, ignore_errors=True)

    def emit_queued(
        self, trial: Trial, *, front: bool = False, config: msgspec.Raw | None = None
    ) -> None:
        """A trial entered its queue: added, restarted, exploited (``config``) or resumed."""
        self.emit(
            p.TrialQueued,
            experiment_id=trial.experiment.id,
            trial_id=trial.id,
            name=trial.name,
            config=trial.config if config is None else config,
            attempt=trial.attempt,
            tag=trial.tag,
            resources=trial.resources,
            front=front,
        )

    # ------------------------------------------------------------ waking things up

    def results_pending(self, files: TrialFiles) -> None:
        """A trial's result rows wait in memory: write them within ``RESULT_FLUSH_S``."""
        self._unflushed.add(files)
        self._flush_wakeup.set()

    async def flush_results_forever(self) -> None:
        """Write result rows behind, in batches: a few writes per trial per interval."""
        while True:
            await self._flush_wakeup.wait()
            await anyio.sleep(RESULT_FLUSH_S)  # the batching window
            self._flush_wakeup = anyio.Event()
            batch, self._unflushed = self._unflushed, set()
            for files in batch:
                try:
                    files.flush()
                except OSError as exc:  # the trial learns it at its next report or its end
                    log.warning("cannot write results", dir=str(files.dir), error=str(exc))

    async def sample_forever(self) -> None:
        """Sample while trials run (usage, the memory watchdog); sleep when none do."""
        while True:
            if not any(True for _ in self.trials_running()):
                await self.trial_started.wait()
            victim = self.sampler.tick([t for t in self.trials_running() if t.pid])
            if victim is not None:
                self.signal_trial(victim, signal.SIGKILL)
            if self.bus.has_global_subscriber:
                status = views.status(self)
                self.emit(
                    p.ResourceSnapshot,
                    experiment_id="",
                    resources=status.resources,
                    gpus=status.gpus,
                    running=status.running,
                )
            await anyio.sleep(SAMPLE_INTERVAL_S)

    def wake(self) -> None:
        """Something freed or queued: let admission run."""
        self._wakeup.set()

    def touch(self) -> None:
        self.activity.set()
        self.activity = anyio.Event()

    def trials_running(self) -> Iterator[Trial]:
        """Running trials in admission order: O(running), not O(all trials)."""
        return self.runner.running()

    @property
    def busy(self) -> bool:
        return self.connections > 0 or any(True for _ in self.state.unfinished())

    def capacity_totals(self) -> dict[str, float]:
        cap = self.capacity
        totals = {"cpu": cap.cpu / SCALE, "gpu": float(len(cap.gpu_ids)), "memory": cap.memory}
        totals.update({k: v / SCALE for k, v in cap.custom.items()})
        return totals

    def resize(self, capacity: Capacity) -> None:
        """The machines changed (a cluster node joined or left): mirror them."""
        if capacity == self.capacity:
            return
        log.info(
            "capacity changed",
            cpus=capacity.cpu / SCALE,
            gpus=len(capacity.gpu_ids),
            memory=capacity.memory,
            custom={k: v / SCALE for k, v in capacity.custom.items()},
        )
        self.capacity = capacity
        self.ledger.resize(capacity)
        self.wake()

    # ------------------------------------------------------------ admission

    async def admission_loop(self, tg: TaskGroup) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            if self.stopping:
                continue
            growing = self.feed_grids()
            admitted = self.scheduler.admit()
            for trial, allocation in admitted:
                trial.allocation = allocation
                trial.token = secrets.token_hex(16)
                transition(trial, "RUNNING")  # TrialStarted says so once its process is up
                self.runner.start(tg, trial)
                self.trial_started.set()
                self.trial_started = anyio.Event()
            if admitted and growing:  # the grids make the next ones, in a turn of their own
                self.wake()

    # ------------------------------------------------------------ experiments

    def experiment(self, exp_id: str) -> Experiment:
        exp = self.experiments.get(exp_id)
        if exp is None:
            raise Refused("not_found", f"no experiment {exp_id!r} (see `tuned ls`)")
        return exp

    def accept(self, record: Submitted, *, journalled: bool = False) -> Experiment:
        """Apply an accepted experiment (journalling it first unless ``journalled``)."""
        if not journalled:
            self.journal.append(record)
        applied = reducer.apply(self.state, record)
        assert applied.experiment is not None
        return applied.experiment

    def after_submit(self, exp: Experiment) -> None:
        """What a new (or resumed, or recovered) experiment needs: its state file, its budget."""
        self.save_state(exp, force=True)
        self.statefiles.write_grid(exp)
        self.watch_budget(exp)

    def watch_budget(self, exp: Experiment) -> None:
        raise NotImplementedError  # outcomes.Outcomes

    def feed_grids(self) -> bool:
        """Make the trials grids need next (``intake.Intake``); whether any has more."""
        raise NotImplementedError

    def save_state(self, exp: Experiment, *, force: bool = False) -> None:
        self.statefiles.write(exp, force=force)

    def maybe_finish(self, exp: Experiment) -> None:
        if exp.done or not exp.complete:
            return
        self.emit(
            p.ExperimentFinished,
            experiment_id=exp.id,
            counts=exp.counts(),
            cancelled=exp.cancelled,
            interrupted=exp.interrupted,
        )
        self.scheduler.remove(exp)
        self.locks.release(exp.id)  # its folder may take another experiment now
        self.launcher.experiment_done(exp.id)  # its warm workers and spares go
        if exp.archive is not None:
            self.archive.of(exp).close()
        log.info("experiment finished", experiment=exp.id, counts=exp.counts())
        self.save_state(exp, force=True)
        self.touch()

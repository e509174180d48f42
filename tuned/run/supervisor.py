"""One trial attempt: spawn, watch, time out, kill the whole tree, say how it ended.

Runs as a task per running trial in the daemon's task group. The time limit is
a cancel scope; the cleanup (terminate, grace period, SIGKILL, reap, release the
resources) is shielded, so a daemon shutting down still leaves no process
behind and the ledger full. What comes of the attempt is decided by
``core.outcome`` and carried out by the host (the daemon), through ``settle``.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup
from tuned_client import protocol as p

from ..config import Settings
from ..core.ledger import Capacity, Ledger
from ..core.model import Trial
from ..core.outcome import Outcome, decide
from ..store.results import TrialFiles, write_params
from .inventory import GpuProbe
from .launch import launch_spec, prepare_dir, stderr_tail
from .launcher import Launcher, TrialProcess
from .monitor import wait_gpu_release

log = structlog.get_logger("tuned.run.supervisor")


class TrialHost(Protocol):
    """What running a trial needs of the daemon: its parts, and two ways to report."""

    settings: Settings
    capacity: Capacity
    launcher: Launcher
    probe: GpuProbe
    ledger: Ledger
    stopping: bool

    def emit(self, cls: type[Any], **fields: Any) -> Any: ...

    def results_pending(self, files: TrialFiles) -> None: ...

    def settle(self, trial: Trial, outcome: Outcome) -> None: ...


class Runner:
    """The trials admitted and not yet cleaned up, with their open result files.

    The sampler and ``tuned status`` walk these, never every trial of every
    experiment; a trial's files are open from its start to its cleanup.
    """

    def __init__(self, host: TrialHost) -> None:
        self.host = host
        self._trials: dict[str, Trial] = {}
        self._files: dict[str, TrialFiles] = {}

    def start(self, tg: TaskGroup, trial: Trial) -> None:
        self._trials[trial.id] = trial
        tg.start_soon(self.supervise, trial, name=f"trial {trial.id}")

    def running(self) -> Iterator[Trial]:
        """Running trials in admission order: O(running), not O(all trials)."""
        return (t for t in list(self._trials.values()) if t.status == "RUNNING")

    def files(self, trial: Trial) -> TrialFiles:
        """The open result files of a running trial (opened when it started)."""
        return self._files[trial.id]

    async def supervise(self, trial: Trial) -> None:
        host = self.host
        allocation = trial.allocation
        assert allocation is not None
        trial.attempt += 1
        trial.exit_reported = trial.exit_ok = trial.timed_out = False
        code: int | None = None
        proc: TrialProcess | None = None
        lost = ""
        try:
            proc = await self._start(trial)
            if proc is not None:
                limit = trial.experiment.spec.trial_timeout_s or math.inf
                with anyio.move_on_after(limit) as scope:
                    code = await proc.wait()
                if scope.cancelled_caught:
                    trial.timed_out = True
                    with anyio.CancelScope(shield=True):
                        code = await terminate(proc, host.settings.kill_grace_s)
        finally:
            with anyio.CancelScope(shield=True):
                if proc is not None:
                    if code is None:  # the daemon is stopping: take the trial down with it
                        code = await terminate(proc, host.settings.kill_grace_s)
                    proc.signal(signal.SIGKILL)  # anything it left in its group
                    lost = proc.lost
                    reason = proc.exit_reason(code) if code != 0 else ""
                    if reason and not trial.error:  # e.g. the Ray node running it died
                        trial.error = reason
                        trial.traceback = reason + stderr_tail(trial)
                await wait_gpu_release(host.probe, host.settings.gpu_release_timeout_s, trial)
                self._close_files(trial)
                host.ledger.release(allocation)
                trial.allocation = None
                trial.pid = 0
                trial.process = None
                self._trials.pop(trial.id, None)
        if host.stopping:
            return
        tail = stderr_tail(trial) if code not in (0, None) and not trial.error else ""
        host.settle(trial, decide(trial, code, lost, tail))

    async def _start(self, trial: Trial) -> TrialProcess | None:
        """Start the attempt's process and say so (TrialStarted); None if it could not."""
        host = self.host
        proc: TrialProcess | None = None
        try:
            trial_dir, fresh = prepare_dir(trial)
            files = self._files[trial.id] = TrialFiles(
                trial_dir, trial.checkpoint_offsets, fresh=fresh
            )
            files.on_pending = host.results_pending
            settings = host.settings
            spec = launch_spec(
                trial, host.capacity, settings.socket_path, settings.state_dir, trial_dir, fresh
            )
            proc = await host.launcher.start(spec)
            write_params(trial_dir, p.unpack_opaque(trial.config))  # a new config each attempt
        except Exception as exc:  # a bad trial fails alone: the daemon serves on
            log.warning("could not start trial", trial=trial.id, error=str(exc))
            trial.error = f"could not start the trial: {type(exc).__name__}: {exc}"
            trial.traceback = trial.error
            if proc is not None:  # it started, but its params.json could not be written
                proc.signal(signal.SIGTERM)
            return proc
        trial.pid = proc.pid
        trial.process = proc
        trial.started_at = time.time()
        if trial.stop_requested:  # cancelled or stopped while it was being spawned
            proc.signal(signal.SIGTERM)
        host.emit(
            p.TrialStarted,
            experiment_id=trial.experiment.id,
            trial_id=trial.id,
            pid=proc.pid,
            attempt=trial.attempt,
            resources=trial.resources[0] if trial.resources else {},
            gpu_ids=trial.gpu_ids,
            trial_dir=str(trial_dir),
        )
        return proc

    def _close_files(self, trial: Trial) -> None:
        """Write the rows still in memory; a disk that refused them fails the trial."""
        done = self._files.pop(trial.id, None)
        if done is None:
            return
        trial.checkpoint_offsets = done.checkpoint_offsets
        done.close()
        if done.failed is not None and not trial.error:
            trial.error = trial.traceback = (
                f"OSError: cannot write the trial's results in {done.dir}: "
                f"{done.failed.strerror or done.failed}"
            )
            trial.exit_reported, trial.exit_ok = True, False


async def terminate(proc: TrialProcess, grace_s: float) -> int:
    """SIGTERM to the whole tree, a grace period, then SIGKILL; returns the exit code."""
    proc.signal(signal.SIGTERM)
    with anyio.move_on_after(grace_s):
        return await proc.wait()
    proc.signal(signal.SIGKILL)
    return await proc.wait()

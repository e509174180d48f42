"""Live usage of running trials, the memory watchdog, and GPU memory hand-off.

The sampler reads each running trial's whole process tree with psutil (CPU %,
RSS) and NVML's per-process device memory, for ``tuned status`` and the event
stream. The watchdog acts before the kernel's OOM killer would pick a victim
at random: when the machine is nearly out of memory it stops the youngest
trial that uses more than it asked for, with an error that says so. And a
device is not handed to the next trial while processes of the last one still
hold memory on it (a bounded wait, logged): Ray's issue 23971.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import anyio
import psutil
import structlog
from tuned_client import protocol as p

from ..core.model import Trial
from ..serve import views

if TYPE_CHECKING:
    from ..daemon import Daemon

log = structlog.get_logger("tuned.run.monitor")

SAMPLE_INTERVAL_S = 2.0
GPU_RELEASE_POLL_S = 0.1


def _children_map() -> dict[int, list[int]]:
    """pid -> child pids of every process: one pass over /proc for all trials."""
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info["ppid"]
        if ppid:
            children.setdefault(ppid, []).append(proc.pid)
    return children


class Sampler:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._procs: dict[int, psutil.Process] = {}

    def _tree(self, pid: int, children: dict[int, list[int]] | None = None) -> list[psutil.Process]:
        """The process and its descendants, from one ``children`` map built per tick."""
        if children is None:
            children = _children_map()
        pids = [pid]
        for parent in pids:  # grows while walked: breadth first
            pids.extend(children.get(parent, ()))
        procs = []
        for p_ in pids:
            proc = self._procs.get(p_)
            if proc is None:
                try:
                    proc = self._procs[p_] = psutil.Process(p_)
                except psutil.Error:
                    continue
            procs.append(proc)
        return procs

    def sample(self, trial: Trial, tree: list[psutil.Process] | None = None) -> None:
        cpu = 0.0
        rss = 0
        pids = set()
        for proc in tree if tree is not None else self._tree(trial.pid):
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
                pids.add(proc.pid)
            except psutil.Error:
                continue
        gpu_mem = 0
        allocation = trial.allocation
        if allocation is not None:
            for index, _units in allocation.gpus:
                for pid, used in self.daemon.probe.process_memory(index).items():
                    if pid in pids:
                        gpu_mem += used
                        trial.gpu_pids.add(pid)
        trial.usage = {"cpu_percent": cpu, "rss": rss, "gpu_memory": gpu_mem}

    def forget_dead(self, live: set[int]) -> None:
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]

    def tick(self) -> None:
        running = [t for t in self.daemon.trials_running() if t.pid]
        live: set[int] = set()
        children = _children_map() if running else {}
        for trial in running:
            tree = self._tree(trial.pid, children)
            self.sample(trial, tree)
            live.update(proc.pid for proc in tree)
        self.forget_dead(live)
        if running:
            self.watch_memory(running)

    def watch_memory(self, running: list[Trial]) -> None:
        vm = psutil.virtual_memory()
        if vm.available >= vm.total * self.daemon.settings.low_memory_fraction:
            return
        over = [t for t in running if t.usage.get("rss", 0) > t.request.total_memory]
        if not over:
            return
        victim = max(over, key=lambda t: t.started_at)  # the youngest
        rss = int(victim.usage.get("rss", 0))
        victim.error = (
            f"MemoryError: stopped by tuned because the machine was nearly out of memory "
            f"({vm.available / 1024**3:.1f} GiB of {vm.total / 1024**3:.1f} GiB available) "
            f"and this trial used {rss / 1024**3:.2f} GiB, above the "
            f"{victim.request.total_memory / 1024**3:.2f} GiB of memory it requested"
        )
        victim.traceback = victim.error
        log.warning("stopping trial for memory", trial=victim.id, rss=rss)
        self.daemon.signal_trial(victim, signal.SIGKILL)


async def sample_forever(daemon: Daemon) -> None:
    """Sample while trials run; sleep on the daemon's activity when none do."""
    sampler = daemon.sampler
    while True:
        if not any(True for _ in daemon.trials_running()):
            await daemon.trial_started.wait()
        sampler.tick()
        if daemon.bus.has_global_subscriber:
            status = views.status(daemon)
            daemon.emit(
                p.ResourceSnapshot,
                experiment_id="",
                resources=status.resources,
                gpus=status.gpus,
                running=status.running,
            )
        await anyio.sleep(SAMPLE_INTERVAL_S)


async def wait_gpu_release(daemon: Daemon, trial: Trial) -> None:
    """Hold the trial's devices until no process of it (or a dead one) holds their memory."""
    allocation = trial.allocation
    if allocation is None or not allocation.gpus:
        return
    devices = [index for index, _ in allocation.gpus]
    deadline = time.monotonic() + daemon.settings.gpu_release_timeout_s
    waited = False
    while True:
        held = [
            (index, pid)
            for index in devices
            for pid in daemon.probe.process_memory(index)
            if pid in trial.gpu_pids or not psutil.pid_exists(pid)
        ]
        if not held:
            break
        if time.monotonic() >= deadline:
            log.warning(
                "GPU memory still held after the trial ended; handing the device on anyway",
                trial=trial.id,
                held=held,
                waited_s=daemon.settings.gpu_release_timeout_s,
            )
            return
        if not waited:
            log.info("waiting for GPU memory to be released", trial=trial.id, held=held)
            waited = True
        await anyio.sleep(GPU_RELEASE_POLL_S)
    if waited:
        log.info("GPU memory released", trial=trial.id)

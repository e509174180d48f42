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

import time

import anyio
import psutil
import structlog

from ..core.model import Trial
from .inventory import GpuProbe

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
    """Usage of running trials, read from their process trees and NVML."""

    def __init__(self, probe: GpuProbe, low_memory_fraction: float) -> None:
        self.probe = probe
        self.low_memory_fraction = low_memory_fraction
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
                for pid, used in self.probe.process_memory(index).items():
                    if pid in pids:
                        gpu_mem += used
                        trial.gpu_pids.add(pid)
        trial.usage = {"cpu_percent": cpu, "rss": rss, "gpu_memory": gpu_mem}

    def forget_dead(self, live: set[int]) -> None:
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]

    def tick(self, running: list[Trial]) -> Trial | None:
        """Sample every running trial; the one to stop if the machine runs out of memory."""
        live: set[int] = set()
        children = _children_map() if running else {}
        for trial in running:
            tree = self._tree(trial.pid, children)
            self.sample(trial, tree)
            live.update(proc.pid for proc in tree)
        self.forget_dead(live)
        return self.watch_memory(running) if running else None

    def watch_memory(self, running: list[Trial]) -> Trial | None:
        vm = psutil.virtual_memory()
        if vm.available >= vm.total * self.low_memory_fraction:
            return None
        over = [t for t in running if t.usage.get("rss", 0) > t.request.total_memory]
        if not over:
            return None
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
        return victim


async def wait_gpu_release(probe: GpuProbe, timeout_s: float, trial: Trial) -> None:
    """Hold the trial's devices until no process of it (or a dead one) holds their memory."""
    allocation = trial.allocation
    if allocation is None or not allocation.gpus:
        return
    devices = [index for index, _ in allocation.gpus]
    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        held = [
            (index, pid)
            for index in devices
            for pid in probe.process_memory(index)
            if pid in trial.gpu_pids or not psutil.pid_exists(pid)
        ]
        if not held:
            break
        if time.monotonic() >= deadline:
            log.warning(
                "GPU memory still held after the trial ended; handing the device on anyway",
                trial=trial.id,
                held=held,
                waited_s=timeout_s,
            )
            return
        if not waited:
            log.info("waiting for GPU memory to be released", trial=trial.id, held=held)
            waited = True
        await anyio.sleep(GPU_RELEASE_POLL_S)
    if waited:
        log.info("GPU memory released", trial=trial.id)

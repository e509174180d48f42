"""What the machine has: CPUs and memory from psutil, GPUs from an injected probe.

The GPU probe is an interface so tests run a fake multi-GPU machine on a
CPU-only box; the real one asks NVML through nvidia-ml-py. ``--num-gpus N``
overrides detection like ``ray start --num-gpus``: a faked GPU gets an id and is
scheduled like a real one; only NVML queries (names, memory) know it is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil
import structlog

from ..config import Settings
from ..core.ledger import Capacity, to_units

log = structlog.get_logger("tuned.run.inventory")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    memory_total: int


class GpuProbe(Protocol):
    def devices(self) -> list[GpuInfo]: ...

    def memory_used(self, index: int) -> int: ...

    def process_memory(self, index: int) -> dict[int, int]:
        """pid -> bytes of device memory held by that process."""
        ...

    def utilization(self, index: int) -> float:
        """Percent of the last sample period in which a kernel ran on the device."""
        ...


class NoGpus:
    def devices(self) -> list[GpuInfo]:
        return []

    def memory_used(self, index: int) -> int:
        return 0

    def process_memory(self, index: int) -> dict[int, int]:
        return {}

    def utilization(self, index: int) -> float:
        return 0.0


class FakeGpus:
    """A made-up inventory: N devices with the given memory, used by tests."""

    def __init__(self, count: int, memory: int = 16 * 1024**3, name: str = "Fake GPU") -> None:
        self._devices = [GpuInfo(i, name, memory) for i in range(count)]
        self.used: dict[int, dict[int, int]] = {i: {} for i in range(count)}

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def memory_used(self, index: int) -> int:
        return sum(self.used[index].values())

    def process_memory(self, index: int) -> dict[int, int]:
        return dict(self.used[index])

    def utilization(self, index: int) -> float:
        return 0.0


class FileFakeGpus(FakeGpus):
    """A fake inventory whose per-process memory a test writes to a JSON file.

    The file maps a device index to ``{pid: bytes}``; a missing file means idle
    devices. It lets a test on a CPU-only box stand in for a process that keeps
    holding GPU memory after its trial ended.
    """

    def __init__(self, count: int, path: Path) -> None:
        super().__init__(count)
        self.path = path

    def process_memory(self, index: int) -> dict[int, int]:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {int(pid): int(n) for pid, n in state.get(str(index), {}).items()}

    def memory_used(self, index: int) -> int:
        return sum(self.process_memory(index).values())


class NvmlGpus:
    """The real probe; construction raises if NVML is absent."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handles = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
        ]

    def devices(self) -> list[GpuInfo]:
        out = []
        for i, h in enumerate(self._handles):
            name = self._nvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            out.append(GpuInfo(i, name, int(self._nvml.nvmlDeviceGetMemoryInfo(h).total)))
        return out

    def memory_used(self, index: int) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handles[index]).used)

    def process_memory(self, index: int) -> dict[int, int]:
        procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handles[index])
        return {int(p.pid): int(p.usedGpuMemory or 0) for p in procs}

    def utilization(self, index: int) -> float:
        return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handles[index]).gpu)


def detect_gpus(settings: Settings | None = None) -> GpuProbe:
    if settings is not None and settings.fake_gpu_state is not None:
        return FileFakeGpus(settings.num_gpus or 0, settings.fake_gpu_state)
    try:
        return NvmlGpus()
    except Exception as exc:  # NVML missing or no driver: a CPU-only machine
        log.info("no NVIDIA GPUs detected (NVML unavailable)", reason=str(exc))
        return NoGpus()


def build_capacity(settings: Settings, probe: GpuProbe) -> Capacity:
    """The ledger's capacity: detected, then overridden by the settings."""
    cpus = settings.num_cpus if settings.num_cpus is not None else psutil.cpu_count() or 1
    memory = settings.memory if settings.memory is not None else psutil.virtual_memory().total
    if settings.num_gpus is not None:
        ids = [str(i) for i in range(settings.num_gpus)]
    else:
        ids = [str(d.index) for d in probe.devices()]
    if settings.visible_gpus is not None:
        allowed = list(settings.visible_gpus)
        ids = allowed[: len(ids)] if settings.num_gpus is None else allowed[: settings.num_gpus]
    custom = {
        name: to_units(amount, resource=name) for name, amount in settings.custom_resources.items()
    }
    return Capacity(
        cpu=to_units(cpus, resource="cpu"),
        memory=int(memory),
        gpu_ids=tuple(ids),
        custom=custom,
    )

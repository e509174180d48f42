"""Trainables for ``bench.gpu_check``: what each check runs inside a trial.

With ``config["real"]`` they use torch on the GPU they were given; without it
(``--dry-run``, a machine with no GPU) they do the same bookkeeping against the
daemon's fake inventory, writing their pid into its state file where a real
process would hold device memory. Importing this module touches no GPU, so the
daemon forks these trials from its warm worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GiB = 2**30


def _hold_memory(config: dict[str, Any], gib: float) -> Any:
    """Take ``gib`` of device memory (real), or say so in the fake inventory's file."""
    if config["real"]:
        import torch

        return torch.empty(int(gib * GiB), dtype=torch.uint8, device="cuda")
    with locked(Path(config["fake_state"])) as held:
        held.setdefault(os.environ["CUDA_VISIBLE_DEVICES"], {})[str(os.getpid())] = int(gib * GiB)
    return None


@contextlib.contextmanager
def locked(state: Path) -> Iterator[dict[str, dict[str, int]]]:
    """The fake inventory's state, read and written back under a lock (trials race)."""
    with open(state.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = json.loads(state.read_text()) if state.exists() else {}
        yield held
        tmp = state.with_suffix(f".{os.getpid()}")
        tmp.write_text(json.dumps(held))
        tmp.replace(state)


def _seen(config: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "start": time.time(),
    }
    if config["real"]:
        import torch

        seen["device_count"] = torch.cuda.device_count()
        seen["device_name"] = torch.cuda.get_device_name(0)
    else:
        seen["device_count"] = len(seen["cuda_visible_devices"].split(","))
    return seen


def sharing(config: dict[str, Any]) -> dict[str, Any]:
    """A quarter of a GPU: hold memory there, meet the other three, report what it saw."""
    seen = _seen(config)
    block = _hold_memory(config, 0.5)
    barrier = Path(config["barrier"])
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(os.listdir(barrier)) < config["together"] and time.time() < deadline:
        time.sleep(0.05)  # other processes: nothing to wait on but the folder
    seen["met"] = len(os.listdir(barrier))
    del block
    return seen


def holder(config: dict[str, Any]) -> dict[str, Any]:
    """Hold device memory until ``config["until"]`` exists (or a minute has passed)."""
    seen = _seen(config)
    block = _hold_memory(config, config["gib"])
    until = Path(config["until"]) if config.get("until") else None
    deadline = time.time() + (60 if until else config.get("seconds", 0))
    while time.time() < deadline and not (until and until.exists()):
        time.sleep(0.05)
    seen["end"] = time.time()
    if config["real"]:
        import pynvml

        pynvml.nvmlInit()
        index = int(os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0])
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        seen["nvml_pids_at_end"] = [int(p.pid) for p in procs]
    del block
    return seen


def first_look(config: dict[str, Any]) -> dict[str, Any]:
    """What holds memory on this trial's devices the moment it starts."""
    seen = _seen(config)
    if config["real"]:
        import pynvml
        import torch

        pynvml.nvmlInit()
        pids = []
        for index in os.environ["CUDA_VISIBLE_DEVICES"].split(","):
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(index))
            pids += [int(p.pid) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
        seen["nvml_pids"] = pids
        free, total = torch.cuda.mem_get_info()
        seen["free_fraction"] = free / total
    else:
        state = Path(config["fake_state"])
        held = json.loads(state.read_text()) if state.exists() else {}
        seen["nvml_pids"] = [int(pid) for device in held.values() for pid in device]
    return seen


def release_pair(config: dict[str, Any]) -> dict[str, Any]:
    """Trial 0 holds memory for a moment and ends; trial 1 looks at what is still held."""
    return holder(config) if config["i"] == 0 else first_look(config)

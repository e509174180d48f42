"""``tune.utils``: helpers Ray Tune users call from trainables."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from typing import Any


def _gpu_memory_used_fraction(gpu_id: str) -> float | None:
    """Used/total memory of one device via nvidia-smi (the client depends on no NVML binding)."""
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                f"--id={gpu_id}",
                "--query-gpu=memory.used,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    used, total = (float(x) for x in out.stdout.strip().splitlines()[0].split(","))
    return used / total if total else None


def wait_for_gpu(
    gpu_id: int | str | None = None,
    target_util: float = 0.01,
    retry: int = 20,
    delay_s: int = 5,
    gpu_memory_limit: float | None = None,
) -> bool:
    """Wait until the trial's GPU memory is (nearly) free, as ``ray.tune.utils.wait_for_gpu``.

    Unlike Ray's it never loops forever: after ``retry`` tries it raises.
    """
    if gpu_memory_limit is not None:
        target_util = gpu_memory_limit
    if gpu_id is None:
        visible = [x for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x]
        if not visible:
            raise RuntimeError("wait_for_gpu: this trial was given no GPU (CUDA_VISIBLE_DEVICES)")
        gpu_id = visible[0]
    for _ in range(retry):
        used = _gpu_memory_used_fraction(str(gpu_id))
        if used is None:
            raise RuntimeError(f"wait_for_gpu: cannot read the memory of GPU {gpu_id}")
        if used <= target_util:
            return True
        time.sleep(delay_s)
    raise RuntimeError(f"wait_for_gpu: GPU {gpu_id} memory still in use after {retry} tries")


def flatten_dict(
    dt: Mapping[str, Any], delimiter: str = "/", prevent_delimiter: bool = False
) -> dict[str, Any]:
    """Nested dicts as one level, keys joined by ``delimiter`` (``ray.tune.utils.flatten_dict``).

    As Ray's: an empty nested dict leaves no key, and ``prevent_delimiter``
    refuses keys that already hold the delimiter.
    """
    out: dict[str, Any] = {}
    for key, value in dt.items():
        if prevent_delimiter and delimiter in str(key):
            raise ValueError(f"Found delimiter `{delimiter}` in key when trying to flatten array.")
        if isinstance(value, dict):
            for sub, v in flatten_dict(value, delimiter, prevent_delimiter).items():
                out[f"{key}{delimiter}{sub}"] = v
        else:
            out[key] = value
    return out

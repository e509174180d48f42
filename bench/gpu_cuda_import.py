"""A trainable whose module initialises CUDA when imported (``bench.gpu_check``).

Forking a process that holds a CUDA context breaks CUDA in the child, so the
daemon's warm worker, seeing CUDA initialised by this import, refuses to fork
and the daemon starts these trials as fresh processes. The trial reports its
parent's command line, which shows which of the two started it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch  # under --dry-run, a stand-in whose CUDA is always "initialised"

torch.cuda.init()


def cuda_at_import(config: dict[str, Any]) -> dict[str, Any]:
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ")
    seen: dict[str, Any] = {"pid": os.getpid(), "parent": parent.decode(errors="replace")}
    seen["start"] = time.time()
    if config["real"]:
        seen["sum"] = float(torch.ones(1024, device="cuda").sum().item())  # CUDA works here
    return seen

"""bench/gpu_check.py is for a machine with a real GPU; its --dry-run keeps it working here.

The dry run drives the same five checks through a real daemon on a faked one-GPU
inventory (trials write their device memory into its state file, a stand-in
driver frees a dead process's memory a second late, a stand-in torch counts as
CUDA initialised), so a broken check is found before a GPU machine is lent.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_the_gpu_check_passes_its_dry_run() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--dry-run", "--timeout", "200"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "5/5 checks passed" in out.stdout
    assert '"gpu_memory": 1073741824' in out.stdout  # the running trial's, in status --json
    assert "the daemon waited for the release: yes" in out.stdout

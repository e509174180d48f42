"""Replies that grow with an experiment are paged: no legitimate request exceeds the frame cap.

1,500 trials reporting 3,000 metrics each made a 93 MB ``GetExperiment`` reply,
over the 64 MB cap: ``Tuner.restore(...).fit()`` and ``tuned tail EXP`` died.
Here the daemon's cap is 2 MB and 40 trials report 120 KB each (4.8 MB).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune

TRIALS = 40


def wide(config: dict[str, Any]) -> dict[str, Any]:
    return {f"m{i:05d}": float(i) for i in range(6000)} | {"i": config["i"]}  # ~120 KB


@pytest.mark.daemon_args("--num-cpus", "4", "--max-frame-bytes", "2000000")
def test_an_experiment_larger_than_a_frame_is_read_in_pages(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = tune.Tuner(
        wide,
        param_space={"i": tune.grid_search(list(range(TRIALS)))},
        run_config=tune.RunConfig(name="wide", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert results.num_terminated == TRIALS
    with daemon.connect() as conn:
        exp_id = results[0].trial_id[:5]
        first = conn.request(p.GetExperiment(experiment_id=exp_id, page_bytes=1_000_000))
        assert isinstance(first, p.ExperimentReply)
        assert 0 < len(first.trials) < TRIALS and first.next_start == len(first.trials)
        whole = conn.get_experiment(first.experiment_id)
    assert [t.trial_id for t in whole.trials] == [r.trial_id for r in results]
    assert {p.unpack_user(t.last_result)["i"] for t in whole.trials} == set(range(TRIALS))

    # What died before: restoring it, and following it with `tuned tail`.
    restored = tune.Tuner.restore(str(tmp_path / "wide"), wide).fit()
    assert sorted(r.metrics["i"] for r in restored) == list(range(TRIALS))
    tail = subprocess.run(
        [sys.executable, "-m", "tuned", "tail", first.experiment_id, "--json",
         "--socket", str(daemon.socket)],
        env=daemon.env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    assert "exceeds" not in tail.stderr

"""Two experiments with the same name and folder never run each other's code.

A second experiment named like one still running is refused, saying which one
and how to go on. Once the first has ended, the second reuses the folder (as
Ray Tune does) with trials and a trainable file of its own. After a crash, an
unfinished experiment's trials load the trainable it was submitted with, even if
its file in the results folder was replaced meanwhile.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from conftest import RunningDaemon, restart_daemon
from gates import Gate

SCRIPT = """
import fcntl, json, sys
from tuned_client import tune

WHO, BARRIER = sys.argv[1], sys.argv[2]


class Started(tune.Callback):
    def on_trial_start(self, iteration, trials, trial, **info):
        print("started", flush=True)  # the script follows its experiment: it was accepted

def train(config):
    if config["i"] == 0:
        with open(BARRIER) as gate:
            fcntl.flock(gate, fcntl.LOCK_SH)  # until the test opens it
    return {"who": WHO}

results = tune.Tuner(
    train,
    param_space={"i": tune.grid_search(list(range(4)))},
    tune_config=tune.TuneConfig(max_concurrent_trials=1),
    run_config=tune.RunConfig(
        name="same", storage_path=sys.argv[3], verbose=0, callbacks=[Started()]
    ),
).fit()
print(json.dumps(sorted(r.metrics["who"] for r in results)), flush=True)
"""


def run(d: RunningDaemon, tmp_path: Path, who: str, barrier: Gate) -> subprocess.Popen[str]:
    script = tmp_path / "same.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), who, str(barrier), str(tmp_path / "results")],
        env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_started(proc: subprocess.Popen[str]) -> None:
    """Until the script says a trial started: its experiment was accepted and is live."""
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started", proc.communicate()


def last_line(out: str) -> list[str]:
    return list(json.loads(out.strip().splitlines()[-1]))


def test_a_second_live_experiment_with_the_same_name_is_refused(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    barrier = Gate(tmp_path / "go")
    first = run(daemon, tmp_path, "A", barrier)
    wait_started(first)
    second = run(daemon, tmp_path, "B", barrier)
    _out, err = second.communicate(timeout=60)
    assert second.returncode != 0
    assert "is still running in" in err and "same" in err and "tuned cancel" in err
    barrier.open()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert last_line(out) == ["A"] * 4

    # The first has ended: the name may be used again, in the same folder.
    again = run(daemon, tmp_path, "B", barrier)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert last_line(out) == ["B"] * 4
    folder = tmp_path / "results" / "same"
    assert len(list(folder.glob("trainable-*.pkl"))) == 2
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 8  # 4 trials each


def test_recovery_loads_the_trainable_that_was_submitted(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    barrier = Gate(tmp_path / "go")
    first = run(daemon, tmp_path, "A", barrier)
    wait_started(first)
    [trainable] = (tmp_path / "results" / "same").glob("trainable-*.pkl")
    trainable.write_bytes(b"not the submitted trainable")  # replaced behind its back
    daemon.stop(signal.SIGKILL)
    again = restart_daemon(daemon)
    try:
        barrier.open()
        out, err = first.communicate(timeout=180)
        assert first.returncode == 0, err
        assert last_line(out) == ["A"] * 4
    finally:
        again.stop()

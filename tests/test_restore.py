"""``Tuner.restore``: finish an experiment whose client (and daemon) went down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import (
    RunningDaemon,
    ledger_in_use,
    next_event,
    restart_daemon,
    start_script,
    use_daemon,
)
from gates import Gate, pass_gate, wait_until
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune.restore import load_state

STEPS = 4


def train_counting(config: dict) -> None:
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = json.loads((Path(checkpoint.path) / "state.json").read_text())["step"]
    with open(config["log"], "a") as f:
        f.write(f"start {config['x']} {start}\n")
    for step in range(start + 1, STEPS + 1):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report(
                {"step": step, "ppid": os.getppid()},
                checkpoint=tune.Checkpoint.from_directory(d),
            )
        if config["x"] == 1:
            pass_gate(config["gate"])  # trial 1 is mid-run until the test has interrupted it
    with open(config["log"], "a") as f:
        f.write(f"done {config['x']}\n")


CLIENT = """
import sys
sys.path.insert(0, {tests!r})
from test_restore import train_counting
from tuned_client import tune
tune.Tuner(
    train_counting,
    param_space={{"x": tune.grid_search([0, 1, 2, 3]), "log": {log!r}, "gate": {gate!r}}},
    tune_config=tune.TuneConfig(max_concurrent_trials=1),
    run_config=tune.RunConfig(name="restorable", verbose=0),
).fit()
"""


def _start_client(
    daemon: RunningDaemon, tmp_path: Path
) -> tuple[subprocess.Popen[bytes], Path, Gate]:
    """The experiment's client, once trial 1 has reported and waits at the returned gate."""
    log = tmp_path / "starts.log"
    gate = Gate(tmp_path / "gate")
    source = CLIENT.format(tests=str(Path(__file__).parent), log=str(log), gate=str(gate))
    client = start_script(daemon, tmp_path / "client.py", source, stderr=subprocess.DEVNULL)
    with daemon.connect() as conn:
        conn.send(p.Subscribe(since=0))
        next_event(conn, p.TrialResult, lambda e: e.trial_id.endswith("_00001"))
    return client, log, gate


def _check_finished(results: tune.ResultGrid, log: Path) -> None:
    assert results.num_terminated == 4 and results.num_errors == 0
    assert sorted(r.config["x"] for r in results) == [0, 1, 2, 3]
    assert all(r.metrics is not None and r.metrics["step"] == STEPS for r in results)
    starts = [line.split() for line in log.read_text().splitlines() if line.startswith("start")]
    assert [s for s in starts if s[1] == "0"] == [["start", "0", "0"]]  # not rerun
    for r in results:
        rows = [json.loads(x) for x in (Path(r.path) / "result.json").read_text().splitlines()]
        assert [row["step"] for row in rows] == list(range(1, STEPS + 1))


def test_restore_after_client_and_daemon_were_killed(daemon: RunningDaemon, tmp_path: Path) -> None:
    client, log, gate = _start_client(daemon, tmp_path)
    client.kill()
    client.wait()
    daemon.stop(signal.SIGKILL)
    again = restart_daemon(daemon)
    gate.open()
    try:
        path = daemon.storage / "restorable"
        assert tune.Tuner.can_restore(str(path))
        assert not tune.Tuner.can_restore(str(tmp_path))
        restored = tune.Tuner.restore(
            str(path), train_counting, run_config=tune.RunConfig(verbose=0)
        )
        _check_finished(restored.fit(), log)
        assert ledger_in_use(again) == {"cpu": 0, "gpu": 0, "memory": 0}
    finally:
        again.stop()


def test_ctrl_c_stops_the_experiment_and_restore_resumes_it(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    client, log, gate = _start_client(daemon, tmp_path)
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=60) == 0
    status = daemon.status()
    assert status.running == []
    assert status.experiments[0].finished
    assert "done 1" not in log.read_text() and "start 2" not in log.read_text()
    gate.open()
    restored = tune.Tuner.restore(
        str(daemon.storage / "restorable"), train_counting, run_config=tune.RunConfig(verbose=0)
    )
    results = restored.fit()
    _check_finished(results, log)
    starts = log.read_text().splitlines()
    assert "start 1 0" in starts and any(s.startswith("start 1 ") for s in starts[1:])
    assert ledger_in_use(daemon) == {"cpu": 0, "gpu": 0, "memory": 0}


def test_restore_after_the_daemon_lost_the_experiment_resumes_from_checkpoints(
    daemon: RunningDaemon,
    daemon_factory: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its journal gone (a daemon that never saw it): trials go on from their checkpoints.

    Ray's restore reads ``experiment_state`` and the trial folders; so does this
    one: trial 1 had checkpointed its first step when everything died, and goes
    on from it, its result files holding each step once.
    """
    client, log, gate = _start_client(daemon, tmp_path)  # trial 1 reported step 1, waits
    client.kill()
    client.wait()
    [trial_dir] = (daemon.storage / "restorable").glob("train_counting_*_00001_*")
    rows = trial_dir / "result.json"
    # The daemon writes result rows behind: the checkpoint's row is on disk before it dies.
    wait_until(lambda: rows.exists() and rows.read_text().endswith("\n"), "trial 1's first row")
    first = json.loads(rows.read_text().splitlines()[0])
    # What restore reads: the state file, written half a second at most after a change.
    wait_until(
        lambda: (
            (state := load_state(daemon.storage / "restorable")) is not None
            and state.trials[0].status == "TERMINATED"
        ),
        "trial 0's end in experiment_state.msgpack",
    )
    daemon.stop(signal.SIGKILL)
    procs = []
    for pid in (first["pid"], first["ppid"]):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert alive == []  # its trial and zygote died with it: none writes to its folder any more
    fresh = daemon_factory(*daemon.args, name="fresh")  # another journal: it never saw it
    use_daemon(fresh, monkeypatch)
    assert fresh.status().experiments == []
    gate.open()

    path = daemon.storage / "restorable"
    results = tune.Tuner.restore(str(path), train_counting, run_config=tune.RunConfig(verbose=0))
    _check_finished(results.fit(), log)  # trial 0 not rerun; no row twice in result.json
    starts = log.read_text().splitlines()
    assert [s for s in starts if s.startswith("start 1")] == ["start 1 0", "start 1 1"]
    assert ledger_in_use(fresh) == {"cpu": 0, "gpu": 0, "memory": 0}


EARLY_CTRL_C = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_restore import train_counting
from tuned_client import tune

class CtrlCAtSetup(tune.Callback):
    def setup(self, **info):  # before fit() follows its experiment: as early as a user can be
        os.kill(os.getpid(), signal.SIGINT)

grid = tune.Tuner(
    train_counting,
    param_space={{"x": tune.grid_search([1, 1]), "log": {log!r}, "gate": {gate!r}}},
    tune_config=tune.TuneConfig({tune_config}),
    run_config=tune.RunConfig(name="early", verbose=0, callbacks=[CtrlCAtSetup()]),
).fit()
print("RETURNED", sorted(r.error is not None for r in grid))
"""


@pytest.mark.parametrize(
    ("tune_config", "returned"),
    [
        ("", "RETURNED [True, True]"),  # both trials cancelled, in the grid it returned
        # steered: the Ctrl-C comes before the scheduler's loop adds any trial
        ('scheduler=tune.schedulers.ASHAScheduler(metric="step", mode="max")', "RETURNED []"),
    ],
    ids=["detached", "steered"],
)
def test_ctrl_c_before_fit_follows_stops_the_experiment_as_later(
    daemon: RunningDaemon, tmp_path: Path, tune_config: str, returned: str
) -> None:
    """Ctrl-C between the submit and fit()'s loop is not lost: fit() cancels the
    experiment and returns, as it does for one during the loop; nothing runs on."""
    gate = Gate(tmp_path / "gate")  # the trials wait there until they are cancelled
    source = EARLY_CTRL_C.format(
        tests=str(Path(__file__).parent),
        log=str(tmp_path / "log"),
        gate=str(gate),
        tune_config=tune_config,
    )
    client = start_script(daemon, tmp_path / "client.py", source, stdout=subprocess.PIPE, text=True)
    out, _ = client.communicate(timeout=120)
    assert client.returncode == 0
    assert returned in out
    status = daemon.status()
    assert status.running == []
    assert status.experiments[0].finished
    assert ledger_in_use(daemon) == {"cpu": 0, "gpu": 0, "memory": 0}

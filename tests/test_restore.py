"""``Tuner.restore``: finish an experiment whose client (and daemon) went down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import RunningDaemon, ledger_in_use, restart_daemon, use_daemon
from tuned_client import protocol as p
from tuned_client import tune

STEPS = 4


def train_counting(config: dict) -> None:
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = json.loads((Path(checkpoint.path) / "state.json").read_text())["step"]
    with open(config["log"], "a") as f:
        f.write(f"start {config['x']} {start}\n")
    for step in range(start + 1, STEPS + 1):
        time.sleep(0.1)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(d))
    with open(config["log"], "a") as f:
        f.write(f"done {config['x']}\n")


CLIENT = """
import sys
sys.path.insert(0, {tests!r})
from test_restore import train_counting
from tuned_client import tune
tune.Tuner(
    train_counting,
    param_space={{"x": tune.grid_search([0, 1, 2, 3]), "log": {log!r}}},
    tune_config=tune.TuneConfig(max_concurrent_trials=1),
    run_config=tune.RunConfig(name="restorable", verbose=0),
).fit()
"""


def _start_client(daemon: RunningDaemon, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "starts.log"
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(tests=str(Path(__file__).parent), log=str(log)))
    client = subprocess.Popen(
        [sys.executable, str(script)], env=daemon.env(), stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while "start 1" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the experiment made no progress"
        time.sleep(0.02)  # watching another process's output
    return client, log


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
    client, log = _start_client(daemon, tmp_path)
    client.kill()
    client.wait()
    daemon.stop(signal.SIGKILL)
    again = restart_daemon(daemon)
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
    client, log = _start_client(daemon, tmp_path)
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=20) == 0
    with daemon.connect() as conn:
        status = conn.request(p.GetStatus())
    assert isinstance(status, p.StatusReply) and status.running == []
    assert status.experiments[0].finished
    assert "done 3" not in log.read_text()
    restored = tune.Tuner.restore(
        str(daemon.storage / "restorable"), train_counting, run_config=tune.RunConfig(verbose=0)
    )
    results = restored.fit()
    _check_finished(results, log)
    starts = log.read_text().splitlines()
    assert "start 1 0" in starts and any(s.startswith("start 1 ") for s in starts[1:])
    assert ledger_in_use(daemon) == {"cpu": 0, "gpu": 0, "memory": 0}


def train_stalling(config: dict) -> None:
    """``train_counting``'s steps; x=1's first attempt stalls after two (killed there)."""
    checkpoint = tune.get_checkpoint()
    start = 0
    if checkpoint is not None:
        start = json.loads((Path(checkpoint.path) / "state.json").read_text())["step"]
    with open(config["log"], "a") as f:
        f.write(f"start {config['x']} {start}\n")
    for step in range(start + 1, STEPS + 1):
        if config["x"] == 1 and checkpoint is None and step == 3:
            threading.Event().wait()  # until the test kills its daemon
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report(
                {"step": step, "ppid": os.getppid()}, checkpoint=tune.Checkpoint.from_directory(d)
            )
    with open(config["log"], "a") as f:
        f.write(f"done {config['x']}\n")


STALLING = CLIENT.replace("train_counting", "train_stalling")


def test_restore_after_the_daemon_lost_the_experiment_resumes_from_checkpoints(
    daemon: RunningDaemon,
    daemon_factory: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its journal gone (a daemon that never saw it): trials go on from their checkpoints."""
    log = tmp_path / "starts.log"
    script = tmp_path / "client.py"
    script.write_text(STALLING.format(tests=str(Path(__file__).parent), log=str(log)))
    client = subprocess.Popen([sys.executable, str(script)], env=daemon.env())
    pids: set[int] = set()  # the trials' processes and the zygote that forked them
    try:
        with daemon.connect() as conn:
            conn.send(p.Subscribe(since=0))
            while True:  # until x=1 has checkpointed twice (and stalls)
                event = conn.recv()
                assert not isinstance(event, p.Error | p.Lagged), event
                if isinstance(event, p.TrialResult):
                    row = p.unpack_user(event.metrics)
                    pids.update((row["pid"], row["ppid"]))
                second = isinstance(event, p.TrialCheckpoint) and event.iteration == 2
                if second and event.trial_id.endswith("_00001"):
                    break  # it stalls before its third
    finally:
        client.kill()
        client.wait()
    daemon.stop(signal.SIGKILL)
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert alive == []  # its trials died with it: none writes to its folder any more
    fresh = daemon_factory(*daemon.args, name="fresh")  # another journal: it never saw it
    use_daemon(fresh, monkeypatch)
    with fresh.connect() as conn:
        status = conn.request(p.GetStatus())
    assert isinstance(status, p.StatusReply) and status.experiments == []

    path = daemon.storage / "restorable"
    results = tune.Tuner.restore(str(path), train_stalling, run_config=tune.RunConfig(verbose=0))
    _check_finished(results.fit(), log)  # trial 0 not rerun; no row twice in result.json
    starts = log.read_text().splitlines()
    assert [s for s in starts if s.startswith("start 1")] == ["start 1 0", "start 1 2"]
    assert ledger_in_use(fresh) == {"cpu": 0, "gpu": 0, "memory": 0}

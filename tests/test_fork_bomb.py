"""A trial that fork-bombs its own children leaves no process behind, however it ends.

The bomb is bounded: the trial starts 240 descendants in two generations.
Some leave its process group (``setsid``, ``setpgid``), some are double-forked
so that their parent exits and they are orphaned, and every one ignores
SIGTERM. Each writes its pid to a file. After the trial ends normally, at its
time limit, or cancelled, not one of those pids may still run.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune

WIDTH = 15  # 15 children, each with 15 children of its own
TOTAL = WIDTH + WIDTH * WIDTH


def bomb(config: dict) -> dict:
    """Start TOTAL descendants that hide in every way, then end as ``config["end"]`` says."""
    pidfile = config["pids"]
    ready_r, ready_w = os.pipe()

    def register() -> None:
        fd = os.open(pidfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        os.write(ready_w, b".")

    def become(kind: int) -> None:
        """In a new child: hide as ``kind`` says, register, maybe breed, then wait forever."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if kind == 1:
            os.setsid()
        elif kind == 2:
            os.setpgid(0, 0)
        elif kind == 3 and os.fork() != 0:  # double fork: the middle one exits at once
            os._exit(0)
        register()

    def spawn(depth: int) -> None:
        for i in range(WIDTH):
            if os.fork() == 0:
                try:
                    become(i % 4)
                    if depth == 0:
                        spawn(1)
                    while True:
                        signal.pause()
                finally:
                    os._exit(0)

    spawn(0)
    got = 0
    while got < TOTAL:  # every descendant has registered
        got += len(os.read(ready_r, TOTAL))
    tune.report({"armed": got})
    if config["end"] == "normal":
        return {"armed": got}
    while True:
        signal.pause()


def run_bomb(tmp_path: Path, end: str, **tune_config: Any) -> tune.ResultGrid:
    return tune.Tuner(
        bomb,
        param_space={"pids": str(tmp_path / f"{end}.pids"), "end": end},
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(name=f"bomb-{end}", verbose=0),
    ).fit()


def survivors(tmp_path: Path, end: str, armed: int = TOTAL) -> list[int]:
    """The bomb's descendants still running; at least ``armed`` of them must have started."""
    pids = [int(line) for line in (tmp_path / f"{end}.pids").read_text().split()]
    assert len(pids) >= armed, f"the bomb started only {len(pids)} processes"
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    for pid in alive:  # never leave them to the next test
        os.kill(pid, signal.SIGKILL)
    return alive


@pytest.mark.daemon_args("--num-cpus", "2", "--num-gpus", "0")
def test_every_descendant_dies_when_the_trial_returns(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = run_bomb(tmp_path, "normal")
    assert not results.errors
    assert results[0].metrics["armed"] >= TOTAL
    assert survivors(tmp_path, "normal") == []


@pytest.mark.daemon_args("--num-cpus", "2", "--num-gpus", "0")
def test_every_descendant_dies_when_the_trial_times_out(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = run_bomb(tmp_path, "timeout", trial_timeout_s=5.0)
    assert "time limit" in str(results.errors[0])
    # Usually armed well within the limit; on a loaded machine the limit may strike
    # mid-bomb, forks in flight: a harder case, and still nothing may survive it.
    assert survivors(tmp_path, "timeout", armed=1) == []


@pytest.mark.daemon_args("--num-cpus", "2", "--num-gpus", "0")
def test_every_descendant_dies_when_the_trial_is_cancelled(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    outcome: dict[str, tune.ResultGrid] = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault("grid", run_bomb(tmp_path, "cancel")), daemon=True
    )
    with daemon.connect() as watch:
        watch.send(p.Subscribe())
        runner.start()
        while True:
            event = watch.recv()
            if isinstance(event, p.TrialResult):
                metrics = msgspec.msgpack.decode(event.metrics)
                if isinstance(metrics, dict) and "armed" in metrics:
                    break
    with daemon.connect() as conn:
        conn.request(p.Cancel(target=event.trial_id))
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert "cancelled" in str(outcome["grid"].errors[0])
    assert survivors(tmp_path, "cancel") == []

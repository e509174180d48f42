"""The daemon is SIGKILLed twice at random moments mid-experiment; nothing is lost."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from conftest import RunningDaemon, ledger_in_use, restart_daemon
from tuned_client import tune

STEPS = 8


def train_checkpointing(config: dict) -> None:
    """Counts to STEPS from its checkpoint, with a grandchild process running all along."""
    sleeper = subprocess.Popen(["sleep", "300"])
    with open(config["pids"], "a") as f:
        f.write(f"{sleeper.pid}\n")
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = json.loads((Path(checkpoint.path) / "state.json").read_text())["step"]
    for step in range(start + 1, STEPS + 1):
        time.sleep(0.08)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report(
                {"step": step, "x": config["x"]}, checkpoint=tune.Checkpoint.from_directory(d)
            )


CLIENT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_chaos import train_checkpointing
from tuned_client import tune
results = tune.Tuner(
    train_checkpointing,
    param_space={{"x": tune.grid_search(list(range(6))), "pids": {pids!r}}},
    run_config=tune.RunConfig(name="chaos", verbose=0),
).fit()
print(json.dumps([[r.status, r.config["x"], (r.metrics or {{}}).get("step"), r.path]
                  for r in results]))
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_rows(storage: Path, at_least: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(f.read_bytes().splitlines()) for f in storage.glob("*/*/result.json")) < at_least:
        assert time.monotonic() < deadline, "the experiment made no progress"
        time.sleep(0.02)  # watching another process's output


def test_sigkilled_daemon_twice_loses_nothing(daemon: RunningDaemon, tmp_path: Path) -> None:
    pids = tmp_path / "pids.log"
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(tests=str(Path(__file__).parent), pids=str(pids)))
    client = subprocess.Popen(
        [sys.executable, str(script)], env=daemon.env(), stdout=subprocess.PIPE, text=True
    )
    rng = random.Random()
    current = daemon
    try:
        for kill in range(2):
            _wait_for_rows(daemon.storage, at_least=rng.randint(3, 10) + 14 * kill)
            time.sleep(rng.uniform(0, 0.15))  # a random moment, mid-report or not
            current.stop(signal.SIGKILL)
            current = restart_daemon(current)
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0
        results = json.loads(out.strip().splitlines()[-1])
        assert sorted(x for _, x, _, _ in results) == list(range(6))
        for status, _x, step, path in results:
            assert status == "TERMINATED" and step == STEPS
            rows = [json.loads(x) for x in (Path(path) / "result.json").read_text().splitlines()]
            assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), path
            assert [r["training_iteration"] for r in rows] == list(range(1, STEPS + 1))
            csv = (Path(path) / "progress.csv").read_text().splitlines()
            assert len(csv) == STEPS + 1
        leftovers = [int(x) for x in pids.read_text().split() if _alive(int(x))]
        assert leftovers == [], "processes of the experiment outlived it"
        assert ledger_in_use(current) == {"cpu": 0, "gpu": 0, "memory": 0}
    finally:
        if client.poll() is None:
            client.kill()
        current.stop()

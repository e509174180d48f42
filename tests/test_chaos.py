"""The daemon is SIGKILLed twice at random moments mid-experiment; nothing is lost."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import RunningDaemon, alive, ledger_in_use, restart_daemon, start_script
from gates import wait_until
from tuned_client import tune

STEPS = 8
# Read at import: each test's environment is private (conftest's ``isolated``).
SEED = int(os.environ.get("TUNED_CHAOS_SEED") or random.randrange(2**32))


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


def _rows(storage: Path) -> int:
    return sum(len(f.read_bytes().splitlines()) for f in storage.glob("*/*/result.json"))


def test_sigkilled_daemon_twice_loses_nothing(daemon: RunningDaemon, tmp_path: Path) -> None:
    pids = tmp_path / "pids.log"
    source = CLIENT.format(tests=str(Path(__file__).parent), pids=str(pids))
    client = start_script(daemon, tmp_path / "client.py", source, stdout=subprocess.PIPE, text=True)
    print(f"seed {SEED} (TUNED_CHAOS_SEED={SEED} makes the same choices)")  # shown on failure
    rng = random.Random(SEED)
    current = daemon
    try:
        for kill in range(2):
            rows, delay = rng.randint(3, 10) + 14 * kill, rng.uniform(0, 0.15)
            print(f"kill {kill + 1}: after {rows} result rows and {delay:.3f} s more")
            wait_until(lambda: _rows(daemon.storage) >= rows, f"{rows} result rows")  # noqa: B023
            time.sleep(delay)  # a random moment, mid-report or not
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
        leftovers = [int(x) for x in pids.read_text().split() if alive(int(x))]
        assert leftovers == [], "processes of the experiment outlived it"
        assert ledger_in_use(current) == {"cpu": 0, "gpu": 0, "memory": 0}
    finally:
        if client.poll() is None:
            client.kill()
        current.stop()

"""A trial that streams reports: read in batches, yet nothing acknowledged is lost.

The daemon reads a trial that streams plain reports in batches (``ReportBatcher``),
acknowledges only the reports whose answer matters (a checkpoint, a stop) and
journals the results read together in one write (``Journal.append_encoded(hold=)``).
These tests stream well past the point where batching starts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from conftest import RunningDaemon, restart_daemon, start_script
from gates import wait_until
from tuned_client import protocol as p
from tuned_client import tune

from tuned.serve.workers import REPORTS_BEFORE_BATCHING

STEPS = 200
CHECKPOINT_AT = 120  # after more plain reports than it takes for batching to start
assert CHECKPOINT_AT > REPORTS_BEFORE_BATCHING + 10


def _log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def train_streaming(config: dict[str, Any]) -> None:
    """Streams STEPS reports, one with a checkpoint; the first attempt then hangs on.

    Past its checkpoint the first attempt streams a few more reports and waits
    to be killed with the daemon; the second resumes from the checkpoint.
    """
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = json.loads((Path(checkpoint.path) / "state.json").read_text())["step"]
    _log(config["log"], f"start {start}")
    for step in range(start + 1, STEPS + 1):
        if step == CHECKPOINT_AT:
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "state.json").write_text(json.dumps({"step": step}))
                tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(d))
            if start == 0:  # acknowledged: the test may kill the daemon from now on
                Path(config["log"] + ".checkpointed").touch()
        else:
            tune.report({"step": step, "tag": 'a,b "c"'})
        if start == 0 and step == CHECKPOINT_AT + 30:
            signal.pause()  # until the daemon's death takes it down


CLIENT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_report_stream import train_streaming
from tuned_client import tune
results = tune.Tuner(
    train_streaming,
    param_space={{"log": {log!r}}},
    run_config=tune.RunConfig(name="stream", verbose=0),
).fit()
print(json.dumps([[r.status, (r.metrics or {{}}).get("step"), r.path] for r in results]))
"""


def test_a_daemon_killed_right_after_a_checkpoint_loses_nothing_acknowledged(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    log = str(tmp_path / "attempts.log")
    source = CLIENT.format(tests=str(Path(__file__).parent), log=log)
    client = start_script(daemon, tmp_path / "client.py", source, stdout=subprocess.PIPE, text=True)
    current = daemon
    try:
        marker = Path(log + ".checkpointed")  # the trial's word: its checkpoint was acknowledged
        wait_until(lambda: marker.exists() or client.poll() is not None, "the checkpoint")
        assert client.poll() is None, "the client ended early"
        current.stop(signal.SIGKILL)  # right after the checkpoint's acknowledgement
        current = restart_daemon(current)
        out, _ = client.communicate(timeout=120)
        assert client.returncode == 0
        ((status, step, path),) = json.loads(out.strip().splitlines()[-1])
        assert status == "TERMINATED" and step == STEPS
        # The acknowledged checkpoint survived: the retry resumed from it.
        assert Path(log).read_text().split("\n")[:-1] == ["start 0", f"start {CHECKPOINT_AT}"]
        # The rows after it, reported (held or written) before the crash, were cut
        # back and reported again: each step exactly once, in order.
        rows = [json.loads(x) for x in (Path(path) / "result.json").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
        assert [r["training_iteration"] for r in rows] == list(range(1, STEPS + 1))
        assert len((Path(path) / "progress.csv").read_text().splitlines()) == STEPS + 1
    finally:
        if client.poll() is None:
            client.kill()
        current.stop()


def train_until_stopped(config: dict[str, Any]) -> None:
    step = 0
    while True:
        step += 1
        tune.report({"step": step})
        time.sleep(0.002)


def test_a_stop_reaches_a_trial_that_streams_reports(daemon: RunningDaemon) -> None:
    """Plain reports get no acknowledgement, but a stop still rides on the next one."""
    watcher = daemon.connect()
    watcher.send(p.Subscribe())
    tuner = tune.Tuner(train_until_stopped, run_config=tune.RunConfig(name="endless", verbose=0))
    fit = threading.Thread(target=tuner.fit)
    fit.start()
    try:
        results = 0
        while results < 3 * REPORTS_BEFORE_BATCHING:  # well into batched reading
            msg = watcher.recv()
            if isinstance(msg, p.TrialResult):
                results += 1
                trial_id = msg.trial_id
        with daemon.connect() as conn:
            assert isinstance(conn.request(p.StopTrial(trial_id=trial_id)), p.Ok)
        fit.join(timeout=30)
        assert not fit.is_alive(), "the stop never reached the trial"
        (result,) = tuner.get_results()
        assert result.error is None
        assert result.metrics is not None and result.metrics["step"] > 3 * REPORTS_BEFORE_BATCHING
        lines = Path(result.path, "result.json").read_text().splitlines()
        steps = [json.loads(x)["step"] for x in lines]
        assert steps == list(range(1, len(steps) + 1))  # every report, once, in order
    finally:
        watcher.close()
        if fit.is_alive():
            with daemon.connect() as conn:
                conn.request(p.Cancel(target=trial_id))
            fit.join(timeout=30)

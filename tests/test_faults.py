"""Failures inside trials: retries from checkpoints, fail_fast, time limits, the ledger after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from conftest import RunningDaemon, alive, ledger_in_use, start_script
from gates import wait_until
from tuned_client import protocol as p
from tuned_client import tune


def _log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def train_crash_once(config: dict) -> None:
    """Counts to 5, checkpointing each step; dies right after reporting step 3 the first time."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "state.json").read_text())["step"]
    _log(config["log"], f"start {start}")
    for step in range(start + 1, 6):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(d))
        if step == 3 and not os.path.exists(config["log"] + ".crashed"):
            Path(config["log"] + ".crashed").touch()
            os._exit(3)  # a hard crash: no exception, no goodbye to the daemon


def test_a_crash_resumes_from_the_latest_checkpoint(daemon: RunningDaemon, tmp_path: Path) -> None:
    log = str(tmp_path / "attempts.log")
    results = tune.Tuner(
        train_crash_once,
        param_space={"log": log},
        run_config=tune.RunConfig(
            name="crash", verbose=0, failure_config=tune.FailureConfig(max_failures=1)
        ),
    ).fit()
    assert results.num_errors == 0, results.errors
    result = results[0]
    assert Path(log).read_text().split("\n")[:-1] == ["start 0", "start 3"]
    assert result.metrics is not None and result.metrics["step"] == 5
    rows = [json.loads(x) for x in (Path(result.path) / "result.json").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5]
    assert len((Path(result.path) / "progress.csv").read_text().splitlines()) == 6
    assert result.checkpoint is not None and result.checkpoint.path.endswith("checkpoint_000004")
    assert not any(ledger_in_use(daemon).values())  # all given back


def train_always_fails(config: dict) -> None:
    _log(config["log"], f"attempt {config['i']}")
    raise ValueError(f"cannot train {config['i']}")


def test_fail_fast_stops_the_experiment_after_the_retries(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    log = str(tmp_path / "attempts.log")
    results = tune.Tuner(
        train_always_fails,
        param_space={"i": tune.grid_search([0, 1, 2]), "log": log},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(
            verbose=0, failure_config=tune.FailureConfig(max_failures=1, fail_fast=True)
        ),
    ).fit()
    assert Path(log).read_text().split("\n")[:-1] == ["attempt 0", "attempt 0"]
    assert results.num_errors == 3
    first = results[0].error
    assert first is not None and "ValueError: cannot train 0" in str(first)
    assert "train_always_fails" in first.traceback  # the traceback names the function
    assert (Path(results[0].path) / "error.txt").read_text().count("ValueError") >= 1
    assert [str(r.error) for r in list(results)[1:]] == ["cancelled", "cancelled"]
    assert not any(ledger_in_use(daemon).values())  # all given back


def train_hangs(config: dict) -> None:
    child = subprocess.Popen(["sleep", "600"])
    _log(config["log"], str(child.pid))
    tune.report({"started": 1})
    threading.Event().wait()  # forever: only the time limit ends it


@pytest.mark.timeout(120)  # a trial never stopped fails here
def test_a_hanging_trial_is_killed_at_its_time_limit_with_its_children(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    hanging_trial_is_killed_with_its_children(daemon, tmp_path, limit_s=1.0)


def hanging_trial_is_killed_with_its_children(
    daemon: RunningDaemon, tmp_path: Path, limit_s: float
) -> None:
    """The limit counts from the attempt's start: on a loaded machine an attempt may meet
    it before it started its child, so each child that was started must be gone, and
    at least one must have been (else the test proves nothing)."""
    log = tmp_path / "children.log"
    results = tune.Tuner(  # a trial never stopped would hang here until the test's timeout
        train_hangs,
        param_space={"log": str(log)},
        tune_config=tune.TuneConfig(trial_timeout_s=limit_s),
        run_config=tune.RunConfig(verbose=0, failure_config=tune.FailureConfig(max_failures=1)),
    ).fit()
    error = results[0].error
    assert error is not None and "time limit" in str(error)
    trial = daemon.ask(p.GetTrial(trial_id=results[0].trial_id), p.TrialReply)
    assert trial.attempt == 2  # the timeout counted as a failure: one retry, then an error
    children = [int(x) for x in log.read_text().split()] if log.exists() else []
    assert 1 <= len(children) <= 2, children
    for pid in children:
        assert not alive(pid), f"the trial's child {pid} outlived it"
    assert not any(ledger_in_use(daemon).values())  # all given back


def test_a_daemon_killed_with_sigkill_takes_its_trials_down(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """The worker dies with the daemon (parent-death signal); the next daemon kills the rest."""
    from conftest import restart_daemon

    log = tmp_path / "children.log"
    tests = str(Path(__file__).parent)
    client = start_script(
        daemon,
        tmp_path / "submit.py",
        f"import sys; sys.path.insert(0, {tests!r})\n"
        "from test_faults import train_hangs\n"
        "from tuned_client import tune\n"
        f"tune.Tuner(train_hangs, param_space={{'log': {str(log)!r}}},"
        " run_config=tune.RunConfig(name='hang', verbose=0)).fit()\n",
    )
    try:
        wait_until(lambda: log.exists() and log.read_text().strip(), "the trial to start")
        child = int(log.read_text().split()[0])
        status = daemon.status()
        assert len(status.running) == 1
        worker = status.running[0].pid
        daemon.stop(signal.SIGKILL)
        wait_until(lambda: not alive(worker), "the worker to die with its daemon")
        again = restart_daemon(daemon)
        try:
            assert not alive(child)  # the grandchild, found through the journal
            with again.connect() as conn:
                conn.request(p.Cancel(target=status.running[0].experiment_id))
            assert client.wait(timeout=20) == 0
        finally:
            again.stop()
    finally:
        if client.poll() is None:
            client.kill()


def train_forever(config: dict) -> None:
    step = 0
    while True:
        step += 1
        with tempfile.TemporaryDirectory() as d:
            checkpoint = tune.Checkpoint.from_directory(d) if config.get("ckpt") else None
            score = [1, 5, 2, 3, 0][step - 1] if step <= 5 else 0
            tune.report({"step": step, "score": score}, checkpoint=checkpoint)
        if step >= config.get("steps", 10**9):
            return


def train_reports_then_waits(config: dict) -> None:
    tune.report({"step": 1})  # on a loaded machine the budget may end before this
    threading.Event().wait()  # until stopped


@pytest.mark.timeout(120)  # a budget that stops nothing fails here
def test_the_time_budget_stops_running_trials_and_starts_no_more(daemon: RunningDaemon) -> None:
    results = tune.Tuner(  # a running trial not stopped would hang here until the timeout
        train_reports_then_waits,
        param_space={"i": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(time_budget_s=1.5, max_concurrent_trials=1),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert results[0].status == "TERMINATED"  # stopped, reported or not: the budget is no error
    assert [r.status for r in list(results)[1:]] == ["ERROR", "ERROR"]
    assert "time budget" in str(results[1].error)
    assert not any(ledger_in_use(daemon).values())  # all given back


def test_checkpoints_are_pruned_by_score_keeping_the_latest(daemon: RunningDaemon) -> None:
    results = tune.Tuner(
        train_forever,
        param_space={"ckpt": True, "steps": 5},
        run_config=tune.RunConfig(
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="score", checkpoint_score_order="max"
            ),
        ),
    ).fit()
    result = results[0]
    assert result.status == "TERMINATED"
    kept = sorted(p.name for p in Path(result.path).glob("checkpoint_*"))
    assert kept == ["checkpoint_000001", "checkpoint_000003", "checkpoint_000004"]  # 5, 3, latest
    assert result.checkpoint is not None and result.checkpoint.path.endswith("checkpoint_000004")
    assert [m["score"] for _c, m in result.best_checkpoints] == [5, 3, 0]


def test_a_stop_callable_ends_the_trial_cleanly(daemon: RunningDaemon) -> None:
    seen: list[str] = []

    def stop(trial_id: str, result: dict) -> bool:
        seen.append(trial_id)
        return bool(result["step"] >= 3)

    results = tune.Tuner(
        train_forever, param_space={}, run_config=tune.RunConfig(verbose=0, stop=stop)
    ).fit()
    result = results[0]
    assert result.status == "TERMINATED" and result.error is None
    # the trial waits on the client's decision after each result (issue 17): none past it
    assert result.metrics is not None and result.metrics["step"] == 3
    assert seen and set(seen) == {result.trial_id}

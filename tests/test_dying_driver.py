"""A script that steers its experiment and dies: nothing hangs, nothing runs on, restore goes on.

Issue 16, through real daemons and real scripts killed with SIGKILL. An
experiment whose searcher and scheduler live in the script waits a grace
period for the script to come back; then it is interrupted: queued trials
never start, running ones stop at their next report, its zygote and trials
are gone, and ``Tuner.restore`` finishes it with the searcher and scheduler
the script had saved. A script that comes back within the grace drives on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import RunningDaemon, ledger_in_use, restart_daemon, use_daemon
from gates import Gate, pass_gate
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection

from tuned.config import Settings
from tuned.daemon import Daemon
from tuned.daemon.recovery import recover
from tuned.run.inventory import NoGpus
from tuned.run.launcher import SpawnLauncher
from tuned.serve.decisions import Decisions, Held

STEPS = 30
SAMPLES = 6


def steps(config: dict[str, Any]) -> None:
    """Counts to STEPS with a checkpoint at each step; says where it started, and who runs it.

    With ``DYING_GATE`` set (the script's environment, which its trials inherit), a
    trial waits at that gate after its third report: none ends before the test says so.
    """
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = json.loads((Path(checkpoint.path) / "state.json").read_text())["step"]
    with open("starts.log", "a") as f:  # in the trial's own folder (its working directory)
        f.write(f"{start}\n")
    for step in range(start + 1, STEPS + 1):
        time.sleep(0.02)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report(
                {
                    "loss": config["x"] / step,
                    "step": step,
                    "pid": os.getpid(),
                    "ppid": os.getppid(),
                },
                checkpoint=tune.Checkpoint.from_directory(d),
            )
        if step == 3 and os.environ.get("DYING_GATE"):
            pass_gate(os.environ["DYING_GATE"])


STEERED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_dying_driver import SAMPLES, steps
    from tuned_client import tune
    from tuned_client.tune.schedulers import ASHAScheduler
    from tuned_client.tune.search.optuna import OptunaSearch

    results = tune.Tuner(
        steps,
        param_space={{"x": tune.uniform(0.1, 1.0)}},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", num_samples=SAMPLES,
            search_alg=OptunaSearch(seed=7), scheduler=ASHAScheduler(max_t=30, grace_period=10),
        ),
        run_config=tune.RunConfig(name="steered", verbose=0),
    ).fit()
    print("RESULTS", len(results), results.num_terminated, results.num_errors)
    """
)


DETACHED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_dying_driver import steps
    from tuned_client import tune

    tune.Tuner(
        steps,
        param_space={{"x": tune.grid_search([0.25, 0.5, 1.0])}},
        run_config=tune.RunConfig(name="detached", stop={{"training_iteration": 1000}}, verbose=0),
    ).fit()
    """
)


def _script(
    tmp_path: Path, daemon: RunningDaemon, source: str = STEERED, gate: Gate | None = None
) -> subprocess.Popen[str]:
    script = tmp_path / "script.py"
    script.write_text(source.format(tests=str(Path(__file__).parent)))
    env = {**daemon.env(), **({"DYING_GATE": str(gate)} if gate is not None else {})}
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _until(conn: Connection, done: Any) -> p.Event:
    """Read events until ``done(event)``; returns that event."""
    while True:
        msg = conn.recv()
        assert not isinstance(msg, p.Error | p.Lagged), msg
        if isinstance(msg, p.Event) and done(msg):
            return msg


def _processes_of(experiment_id: str) -> list[psutil.Process]:
    """Every live process of the experiment: its trials (by their TUNED_TRIAL_ID), and its
    zygote and spares (their command line names its trainable file, as forks keep it)."""
    found = []
    trainable = f"trainable-{experiment_id}.pkl"
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            ours = any(trainable in part for part in proc.cmdline())
            if ours or proc.environ().get("TUNED_TRIAL_ID", "").startswith(experiment_id + "_"):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _gone(pids: set[int]) -> list[int]:
    """Those of ``pids`` still alive after a bounded wait for them to exit."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=20)
    still = []
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() != psutil.STATUS_ZOMBIE:  # exited, not reaped yet by its parent
                still.append(proc.pid)
    return still


def _rows(trial_dir: Path) -> list[int]:
    text = (trial_dir / "result.json").read_text()
    return [json.loads(line)["step"] for line in text.splitlines()]


def _kill_the_steering_script(daemon: RunningDaemon, tmp_path: Path) -> tuple[str, set[int]]:
    """Start the steered script, SIGKILL it mid-search; return once its experiment ended.

    Returns the experiment's id and the processes of its trials and their zygotes.
    """
    gate = Gate(tmp_path / "gate")  # trials wait after step 3: none ends, no more are suggested
    script = _script(tmp_path, daemon, gate=gate)
    pids: set[int] = set()

    def seen(e: p.Event) -> p.Event:
        if isinstance(e, p.TrialResult):
            metrics = p.unpack_user(e.metrics)
            pids.update((metrics["pid"], metrics["ppid"]))
        return e

    try:
        with daemon.connect() as conn:
            conn.sock.settimeout(300)  # a daemon that never ends it fails the test, not hangs
            conn.send(p.Subscribe(since=0))
            # A trial is under way, its checkpoints on disk; the search is not over.
            first = _until(
                conn, lambda e: isinstance(seen(e), p.TrialCheckpoint) and e.iteration >= 3
            )
            os.kill(script.pid, signal.SIGKILL)
            script.wait()
            gate.open()  # the trials report again: nobody decides, and they stop there
            end = _until(conn, lambda e: isinstance(seen(e), p.ExperimentFinished))
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    assert isinstance(end, p.ExperimentFinished) and end.interrupted and not end.cancelled
    return first.experiment_id, pids


@pytest.mark.daemon_args("--num-cpus", "3", "--driver-grace", "1")
def test_a_killed_steering_script_leaves_an_interrupted_experiment_that_restore_finishes(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    exp_id, pids = _kill_the_steering_script(daemon, tmp_path)
    with daemon.connect() as conn:
        reply = conn.get_experiment(exp_id)
        status = conn.request(p.GetStatus())
    assert reply.interrupted and reply.finished
    assert 0 < len(reply.trials) < SAMPLES  # the script had not suggested them all
    assert {(t.status, t.error) for t in reply.trials} == {("ERROR", p.INTERRUPTED)}
    assert isinstance(status, p.StatusReply) and status.running == []
    assert [e.interrupted for e in status.experiments] == [True]
    assert set(ledger_in_use(daemon).values()) == {0}  # its resources are free
    listing = subprocess.run(
        [sys.executable, "-m", "tuned", "ls"], env=daemon.env(), capture_output=True, text=True
    )
    assert f"{exp_id}  steered  interrupted" in listing.stdout
    # Nothing of it runs on: no trial process, no zygote, no spare.
    assert _gone(pids) == []
    assert _gone({proc.pid for proc in _processes_of(exp_id)}) == []  # spares die with it

    stopped = _stopped_at(reply)
    results = tune.Tuner.restore(str(daemon.storage / "steered"), steps).fit()
    _check_resumed(results, stopped)  # searcher and scheduler as saved
    assert "interrupted" in daemon.log


def _stopped_at(reply: p.ExperimentReply) -> dict[str, int]:
    """Each trial folder's last step on disk, when the experiment ended."""
    return {Path(t.path).name: ([0, *_rows(Path(t.path))])[-1] for t in reply.trials if t.path}


def _check_resumed(results: tune.ResultGrid, stopped: dict[str, int]) -> None:
    """The search went on to SAMPLES; each interrupted trial from the checkpoint it had."""
    assert len(results) == SAMPLES, [r.path for r in results]
    assert results.num_terminated == SAMPLES and results.num_errors == 0
    for r in results:
        trial_dir = Path(r.path)
        rows = _rows(trial_dir)
        assert rows == list(range(1, rows[-1] + 1))  # nothing reported twice
        starts = [int(x) for x in (trial_dir / "starts.log").read_text().split()]
        assert starts[0] == 0
        if trial_dir.name in stopped:  # it went on from the checkpoint it had
            assert starts[-1] == stopped[trial_dir.name], (trial_dir.name, starts)
    assert stopped.keys() <= {Path(r.path).name for r in results}  # in the folders they had


@pytest.mark.daemon_args("--num-cpus", "3", "--driver-grace", "1")
def test_restore_of_a_steered_experiment_the_daemon_lost_goes_on_from_its_checkpoints(
    daemon: RunningDaemon,
    daemon_factory: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interrupted, then its daemon's journal is gone: the folder alone is enough, as in Ray."""
    exp_id, _ = _kill_the_steering_script(daemon, tmp_path)
    with daemon.connect() as conn:
        stopped = _stopped_at(conn.get_experiment(exp_id))
    daemon.stop(signal.SIGKILL)
    fresh = daemon_factory(*daemon.args, name="fresh")  # another journal: it never saw it
    use_daemon(fresh, monkeypatch)
    assert fresh.status().experiments == []
    results = tune.Tuner.restore(str(daemon.storage / "steered"), steps).fit()
    _check_resumed(results, stopped)
    assert set(ledger_in_use(fresh).values()) == {0}


@pytest.mark.daemon_args("--num-cpus", "3", "--driver-grace", "1")
def test_an_interrupted_experiment_stays_interrupted_through_a_snapshot_and_a_restart(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """Compacted away from the journal, it is still interrupted, and restore still finishes it."""
    exp_id, _ = _kill_the_steering_script(daemon, tmp_path)
    daemon.stop(signal.SIGKILL)
    settings = Settings(
        socket_path=tmp_path / "unused.sock", state_dir=daemon.state_dir, num_cpus=3, num_gpus=0
    )
    compacting = Daemon(settings, NoGpus(), SpawnLauncher())
    anyio.run(recover, compacting)
    compacting.compact_now()  # the snapshot holds it; the new journal holds nothing of it
    compacting.journal.close()
    assert (daemon.state_dir / "snapshot.bin").exists()
    again = restart_daemon(daemon)
    try:
        status = again.status()
        assert [(e.experiment_id, e.finished, e.interrupted) for e in status.experiments] == [
            (exp_id, True, True)
        ]
        results = tune.Tuner.restore(str(daemon.storage / "steered"), steps).fit()
        assert results.num_terminated == SAMPLES and results.num_errors == 0
    finally:
        again.stop()


@pytest.mark.daemon_args("--num-cpus", "3", "--driver-grace", "0")
def test_a_killed_script_of_a_plain_grid_leaves_an_experiment_that_runs_to_its_end(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """Grid search, FIFO, a stop dict (checked in the trials): the daemon needs no script.

    No grace at all: were it waiting for a driver, it would interrupt the trials at
    the reports they make once the gate opens.
    """
    gate = Gate(tmp_path / "gate")  # the trials wait after step 3, until the script is dead
    script = _script(tmp_path, daemon, DETACHED, gate)
    try:
        with daemon.connect() as conn:
            conn.send(p.Subscribe(since=0))
            first = _until(conn, lambda e: isinstance(e, p.TrialCheckpoint) and e.iteration >= 3)
        os.kill(script.pid, signal.SIGKILL)
        script.wait()
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    gate.open()
    results = tune.Tuner.restore(str(daemon.storage / "detached"), steps).fit()  # follows it

    assert len(results) == 3 and results.num_terminated == 3 and results.num_errors == 0
    for r in results:
        assert _rows(Path(r.path)) == list(range(1, STEPS + 1))  # to its end, in one go
        assert (Path(r.path) / "starts.log").read_text().split() == ["0"]
    with daemon.connect() as conn:
        reply = conn.get_experiment(first.experiment_id)
    assert reply.finished and not reply.interrupted and not reply.cancelled
    assert "went away" not in daemon.log


@pytest.mark.daemon_args("--num-cpus", "2", "--driver-grace", "60")
def test_a_script_that_reconnects_after_a_daemon_restart_drives_on(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    script = _script(tmp_path, daemon)
    again: RunningDaemon | None = None
    try:
        with daemon.connect() as conn:
            conn.send(p.Subscribe(since=0))
            _until(conn, lambda e: isinstance(e, p.TrialCheckpoint) and e.iteration >= 3)
        daemon.stop(signal.SIGKILL)
        again = restart_daemon(daemon)  # the script reconnects and resubscribes as its driver
        out, err = script.communicate(timeout=300)
        assert script.returncode == 0, err
        assert f"RESULTS {SAMPLES} {SAMPLES} 0" in out, err
        with again.connect() as conn:
            status = conn.request(p.GetStatus())
        assert isinstance(status, p.StatusReply)
        assert [(e.finished, e.interrupted) for e in status.experiments] == [(True, False)]
    finally:
        if script.poll() is None:
            script.kill()
            script.communicate()
        if again is not None:
            again.stop()


def stop_rule(trial_id: str, result: dict[str, Any]) -> bool:
    return False


@pytest.mark.daemon_args("--num-cpus", "2", "--driver-grace", "60")
def test_a_driver_back_within_the_grace_decides_on_the_held_result(
    daemon: RunningDaemon,
) -> None:
    """Its first connection closes while a trial waits on a decision; a second one takes over."""
    tuner = tune.Tuner(
        steps,
        param_space={"x": 1.0},
        run_config=tune.RunConfig(name="held", stop=stop_rule, verbose=0),
    )
    spec = tuner._experiment_spec()
    assert spec.decide_results  # a stop function decides on each result, in the script
    first = daemon.connect()
    accepted = first.request(p.Submit(experiment=spec))
    assert isinstance(accepted, p.Accepted)
    first.send(p.Subscribe(experiment_id=accepted.experiment_id, since=0, decide=True))
    held = _until(first, lambda e: isinstance(e, p.TrialResult) and e.decide)
    first.close()  # no decision: the trial waits for one
    with daemon.connect() as second:
        second.send(
            p.Subscribe(experiment_id=accepted.experiment_id, since=held.seq - 1, decide=True)
        )
        result = _until(second, lambda e: isinstance(e, p.TrialResult))
        assert result.seq == held.seq and isinstance(result, p.TrialResult) and result.decide
        second.send(p.Decide(trial_id=result.trial_id, seq=result.seq, stop=True))
        finished = _until(second, lambda e: isinstance(e, p.TrialFinished))
        end = _until(second, lambda e: isinstance(e, p.ExperimentFinished))
    assert isinstance(finished, p.TrialFinished) and finished.status == "TERMINATED"
    assert isinstance(end, p.ExperimentFinished) and not end.interrupted
    [trial_dir] = (daemon.storage / "held").glob("steps_*")
    assert _rows(trial_dir) == [1]  # it went no further than the result decided on


def test_an_orphaned_experiment_holds_reports_until_a_driver_is_back_or_it_is_given_up() -> None:
    decisions = Decisions()
    first, second = object(), object()
    decisions.add_decider("e", first)
    decisions.hold(Held("e_00000", "e", worker=None, report_seq=1, event_seq=10))
    decisions.hold(Held("e_00001", "e", worker=None, report_seq=1, event_seq=12))
    assert decisions.decider_gone(first) == ["e"]
    wait = decisions.orphan("e")
    assert decisions.deciding("e") and decisions.orphaned("e", wait)  # reports still wait
    decisions.add_decider("e", second)  # back within the grace: the wait is over
    assert not decisions.orphaned("e", wait)
    # It subscribed after event 11: the report of event 10 will not come to it again.
    assert [h.trial_id for h in decisions.seen("e", 11)] == ["e_00000"]
    assert decisions.decider_gone(second) == ["e"]
    again = decisions.orphan("e")
    assert [h.trial_id for h in decisions.abandon("e")] == ["e_00001"]
    assert not decisions.deciding("e") and not decisions.orphaned("e", again)

"""Finished trials leave the daemon's memory for disk, and every view of them stays the same.

``trials_in_memory`` in the status reply counts the ``Trial`` objects the
daemon holds; the rest of each test asks the daemon, over its socket, what it
answered before trials were archived: status counts, ``GetExperiment``,
``GetTrial``, ``tuned ls`` and ``tuned logs``, the experiment's state file,
cancel and stop of a finished trial, ``Tuner.restore``, and a restart that
replays the journal. The unit tests at the end check the archive's record
round trip and the state file's hand-made encoding against msgspec's.
"""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import RunningDaemon, ask, next_event, restart_daemon, start_script, tuned_ok
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection, DaemonError


def flaky(config: dict[str, Any]) -> None:
    """Reports twice with a checkpoint; x == 2 fails until its ``fixed`` file exists."""
    print(f"hello from {config['x']}")
    for step in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report(
                {"score": config["x"] * 10 + step},
                checkpoint=tune.Checkpoint.from_directory(d),
            )
    if config["x"] == 2 and not Path(config["fixed"]).exists():
        raise ValueError("x is 2")


def status(conn: Connection) -> p.StatusReply:
    return ask(conn, p.GetStatus(), p.StatusReply)


def experiment(conn: Connection, exp_id: str) -> p.ExperimentReply:
    return ask(conn, p.GetExperiment(experiment_id=exp_id), p.ExperimentReply)


def trial(conn: Connection, trial_id: str) -> p.TrialReply:
    return ask(conn, p.GetTrial(trial_id=trial_id), p.TrialReply)


def sweep(tmp_path: Path) -> tune.Tuner:
    return tune.Tuner(
        flaky,
        param_space={"x": tune.grid_search([0, 1, 2, 3]), "fixed": str(tmp_path / "fixed")},
        run_config=tune.RunConfig(name="archived", verbose=0),
    )


@pytest.mark.daemon_args("--num-cpus", "2")
def test_a_finished_experiment_leaves_memory_and_reads_back_the_same(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = sweep(tmp_path).fit()
    assert results.num_terminated == 3 and results.num_errors == 1
    by_x = {r.config["x"]: r for r in results}
    with daemon.connect() as conn:
        st = status(conn)
        (row,) = st.experiments
        assert st.trials_in_memory == 0
        assert row.finished and row.counts == {"TERMINATED": 3, "ERROR": 1}
        reply = experiment(conn, row.experiment_id)
        assert reply.finished and not reply.cancelled and len(reply.trials) == 4
        for info in reply.trials:
            x = p.unpack_user(info.config)["x"]
            result = by_x[x]
            assert info.trial_id == result.metrics["trial_id"]
            assert info.status == ("ERROR" if x == 2 else "TERMINATED")
            assert info.path == result.path
            assert p.unpack_user(info.last_result)["score"] == x * 10 + 2
            assert info.checkpoint == result.checkpoint.path
            assert ("ValueError: x is 2" in info.error) == (x == 2)
            got = trial(conn, info.trial_id)
            assert (got.experiment_id, got.name, got.status) == (
                row.experiment_id,
                info.name,
                info.status,
            )
            assert (got.path, got.error, got.attempt, got.pid) == (info.path, info.error, 1, 0)
        # The state file Tuner.restore reads holds the same trials, in the same order.
        state = msgspec.msgpack.decode(
            (Path(row.path) / p.EXPERIMENT_STATE_FILE).read_bytes(), type=p.ExperimentState
        )
        assert state.finished and state.trials == reply.trials
        assert state.resources == [[{"cpu": 1.0}]] * 4
        # Cancelling or stopping a trial that has ended is still no error.
        first = reply.trials[0].trial_id
        assert isinstance(conn.request(p.Cancel(target=first)), p.Ok)
        assert isinstance(conn.request(p.StopTrial(trial_id=first)), p.Ok)
        with pytest.raises(DaemonError, match="no trial"):
            conn.request(p.GetTrial(trial_id=f"{row.experiment_id}_00004"))
    assert f"{row.experiment_id}  archived  finished  4/4" in tuned_ok(daemon, "ls")
    assert tuned_ok(daemon, "logs", reply.trials[1].trial_id) == "hello from 1\n"

    # Tuner.restore runs the failed trial again: it comes back from disk, then goes again.
    (tmp_path / "fixed").touch()
    restored = tune.Tuner.restore(
        row.path, flaky, restart_errored=True, run_config=tune.RunConfig(verbose=0)
    ).fit()
    assert restored.num_terminated == 4 and restored.num_errors == 0
    with daemon.connect() as conn:
        st = status(conn)
        assert st.trials_in_memory == 0 and st.experiments[0].counts == {"TERMINATED": 4}
        again = experiment(conn, row.experiment_id)
        assert [t.trial_id for t in again.trials] == [t.trial_id for t in reply.trials]
        assert again.trials[:2] == reply.trials[:2] and again.trials[3] == reply.trials[3]
        redone = trial(conn, reply.trials[2].trial_id)
        assert (redone.status, redone.attempt, redone.error) == ("TERMINATED", 2, "")


BLOCKER = """
import signal
from tuned_client import tune

def quick_then_block(config):
    if config["x"] == 20:
        signal.pause()  # holds the daemon's one CPU until cancelled
    return {"x": config["x"]}

tune.Tuner(quick_then_block, param_space={"x": tune.grid_search(list(range(30)))},
           run_config=tune.RunConfig(name="long", verbose=0)).fit()
"""


@pytest.mark.daemon_args("--num-cpus", "1")
def test_a_running_experiment_keeps_only_its_unfinished_trials_in_memory(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    watcher = daemon.connect()
    watcher.send(p.Subscribe())
    client = start_script(daemon, tmp_path / "client.py", BLOCKER)
    try:
        for _ in range(20):  # trials 0..19 end; 20 then holds the CPU, 21..29 wait
            next_event(watcher, p.TrialFinished)
        started = next_event(watcher, p.TrialStarted)
        with daemon.connect() as conn:
            st = status(conn)
            assert st.experiments[0].counts == {"PENDING": 9, "RUNNING": 1, "TERMINATED": 20}
            assert st.trials_in_memory == 10
            assert [t.trial_id for t in st.running] == [started.trial_id]
            reply = experiment(conn, started.experiment_id)
            statuses = [t.status for t in reply.trials]
            assert statuses == ["TERMINATED"] * 20 + ["RUNNING"] + ["PENDING"] * 9
            assert [p.unpack_user(t.config)["x"] for t in reply.trials] == list(range(30))
            assert [p.unpack_user(t.last_result)["x"] for t in reply.trials[:20]] == list(range(20))
            assert trial(conn, reply.trials[5].trial_id).status == "TERMINATED"

            # A restart replays the journal: what had finished goes straight back to disk.
            daemon.stop(signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
        watcher.close()
    again = restart_daemon(daemon)
    try:
        with again.connect() as conn, again.connect() as events:
            st = status(conn)
            assert st.trials_in_memory == 10  # 20 goes again (it was running), 21..29 wait
            replayed = experiment(conn, started.experiment_id)
            assert replayed.trials[:20] == reply.trials[:20]
            assert [t.status for t in replayed.trials[21:]] == ["PENDING"] * 9
            events.send(p.Subscribe(experiment_id=started.experiment_id))
            conn.request(p.Cancel(target=started.experiment_id))
            next_event(events, p.ExperimentFinished)
            st = status(conn)
            assert st.trials_in_memory == 0
            assert st.experiments[0].counts == {"TERMINATED": 20, "ERROR": 10}
    finally:
        again.stop()

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

import dataclasses
import json
import signal
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import anyio.lowlevel
import msgspec
import pytest
from conftest import RunningDaemon, ask, next_event, restart_daemon, start_script, tuned_ok
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection, DaemonError

from tuned import archive, recovery
from tuned.daemon import Daemon
from tuned.ledger import parse_request
from tuned.trials import Experiment, Trial, share_spec, transition


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


# ------------------------------------------------------------------ the archive itself


def _daemon(tmp_path: Path) -> Daemon:
    """What the archive and the state file use of a daemon, without starting one."""
    settings = SimpleNamespace(state_dir=tmp_path / "state", socket_path=tmp_path / "s.sock")
    return cast(Daemon, SimpleNamespace(settings=settings, trials={}, experiments={}, tg=None))


def _experiment(daemon: Daemon, tmp_path: Path, n: int) -> Experiment:
    spec = p.ExperimentSpec(
        name="unit", storage_path=str(tmp_path), trainable_name="f", trainable=b"",
        python=sys.executable, cwd=str(tmp_path), sys_path=[], env={}, trials=[],
    )  # fmt: skip
    exp = Experiment("abcde", spec, tmp_path, 1)
    daemon.experiments[exp.id] = exp
    for i in range(n):
        bundles = [{"cpu": 1.0 + i % 2}]
        t = Trial(
            id=f"abcde_{i:05d}", index=i, tag=f"{i}_x={i}", experiment=exp,
            config=msgspec.Raw(p.pack_user({"x": i})), request=parse_request(bundles),
            resources=bundles,
        )  # fmt: skip
        exp.trials.append(t)
        daemon.trials[t.id] = t
    return exp


def _finish(t: Trial, i: int) -> None:
    transition(t, "RUNNING")
    t.dir = Path(f"/results/f_{t.id}")
    t.attempt, t.failures, t.started_at, t.gpu_ids = 2, 1, 1234.5, "0"
    t.iteration, t.time_total_s = 7, 3.25
    t.last_result = msgspec.Raw(p.pack_user({"score": i, "training_iteration": 7}))
    t.checkpoint, t.checkpoint_iteration, t.checkpoint_time = f"/c/{i}", 6, 3.0
    t.checkpoint_offsets, t.kept_checkpoints = (100, 50), [(f"/c/{i}", 0.5), ("/c/0", None)]
    t.error, t.traceback, t.timed_out = ("boom", "Traceback...", True) if i % 2 else ("", "", False)
    transition(t, "ERROR" if i % 2 else "TERMINATED")


TRANSIENT = {"pid", "process", "allocation", "token", "stop_requested", "exit_reported",
             "exit_ok", "usage", "gpu_pids", "request"}  # fmt: skip


def test_an_archived_trial_comes_back_as_it_finished(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    exp = _experiment(daemon, tmp_path, 5)
    originals = [t for t in exp.live()]
    for i, t in enumerate(originals[:4]):
        _finish(t, i)
        assert archive.evict(daemon, t)
    assert exp.trials[:4] == [None] * 4 and list(daemon.trials) == ["abcde_00004"]
    assert exp.counts() == {"PENDING": 1, "TERMINATED": 2, "ERROR": 2}
    assert archive.is_archived(daemon, "abcde_00001")
    assert not archive.is_archived(daemon, "abcde_00004")  # in memory
    assert not archive.is_archived(daemon, "abcde_1") and archive.locate(daemon, "x_00001") is None
    for i, before in enumerate(originals[:4]):
        after = archive.revive(daemon, exp, i)
        assert exp.trials[i] is after and daemon.trials[after.id] is after
        for f in dataclasses.fields(Trial):
            if f.name not in TRANSIENT:
                assert getattr(after, f.name) == getattr(before, f.name), f.name
        assert after.request == before.request
    # Revived trials with the same bundles share them, as submitted ones do.
    assert exp.trials[0] is not None and exp.trials[2] is not None
    assert exp.trials[0].request is exp.trials[2].request
    assert exp.archive is not None and exp.archive.count == 0


def test_the_state_file_encoded_by_hand_is_what_msgspec_would_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path)
    exp = _experiment(daemon, tmp_path, 6)
    for i, t in enumerate(list(exp.live())[:4]):
        _finish(t, i)
    expected = p.ExperimentState(
        experiment_id=exp.id,
        socket=str(daemon.settings.socket_path),
        spec=exp.spec,
        trials=[archive.trial_info(t) for t in exp.live()],
        resources=[t.resources for t in exp.live()],
    )
    for t in [t for t in exp.live()][1:3]:  # some archived, some not, out of order
        assert archive.evict(daemon, t)
    monkeypatch.setattr(recovery, "STATE_CHUNK_BYTES", 64)  # many pieces
    assert recovery.state_of(cast(Daemon, daemon), exp) == expected
    frame = b"".join(recovery.state_chunks(daemon, exp))
    assert msgspec.msgpack.decode(frame, type=p.ExperimentState) == expected


def test_experiments_from_one_environment_share_it(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    first, second, other = (_experiment(daemon, tmp_path, 0).spec for _ in range(3))
    second.env = dict(first.env, HOME="/home/u")
    first.env = dict(second.env)
    other.env = dict(second.env, HOME="/elsewhere")
    for spec in (first, second, other):
        share_spec(spec)
    assert second.env is first.env and second.sys_path is first.sys_path
    assert other.env is not first.env and other.env["HOME"] == "/elsewhere"


def _add_trial(daemon: Daemon, exp: Experiment) -> None:
    i = len(exp.trials)
    t = Trial(
        id=f"abcde_{i:05d}", index=i, tag=str(i), experiment=exp,
        config=msgspec.Raw(p.pack_user({"x": i})), request=parse_request([{"cpu": 1.0}]),
        resources=[{"cpu": 1.0}],
    )  # fmt: skip
    exp.trials.append(t)
    daemon.trials[t.id] = t


def _state(exp: Experiment) -> p.ExperimentState:
    data = (exp.path / p.EXPERIMENT_STATE_FILE).read_bytes()
    return msgspec.msgpack.decode(data, type=p.ExperimentState)


def test_a_large_state_file_is_written_in_steps_while_trials_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "STATE_STEPS_FROM", 10)
    monkeypatch.setattr(recovery, "STATE_CHUNK_BYTES", 200)  # a piece or two per trial
    daemon = _daemon(tmp_path)
    exp = _experiment(daemon, tmp_path, 40)
    for i, t in enumerate(list(exp.live())[:20]):
        _finish(t, i)
        archive.evict(daemon, t)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            daemon.tg = tg
            recovery.write_state(daemon, exp)
            assert exp.state_writing  # started, not done: the loop goes on meanwhile
            await anyio.lowlevel.checkpoint()  # one turn of the loop
            archive.revive(daemon, exp, 0)  # its turn has passed
            for i, t in enumerate(list(exp.live())[1:11]):  # 20..29: their turn is to come
                _finish(t, 100 + i)
                assert archive.evict(daemon, t)
            _add_trial(daemon, exp)  # after the write began: in the next one

    anyio.run(main)
    state = _state(exp)
    assert [t.trial_id for t in state.trials] == [f"abcde_{i:05d}" for i in range(40)]
    assert [t.status for t in state.trials[20:30]] == ["TERMINATED", "ERROR"] * 5
    assert [t.status for t in state.trials[30:]] == ["PENDING"] * 10
    assert len(state.resources) == 40
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_forced_state_write_overtakes_one_in_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "STATE_STEPS_FROM", 10)
    monkeypatch.setattr(recovery, "STATE_CHUNK_BYTES", 200)
    daemon = _daemon(tmp_path)
    exp = _experiment(daemon, tmp_path, 30)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            daemon.tg = tg
            recovery.write_state(daemon, exp)
            await anyio.lowlevel.checkpoint()  # one turn of the loop
            for i, t in enumerate(list(exp.live())):
                _finish(t, i)
            exp.done = True
            recovery.write_state(daemon, exp, force=True)  # the experiment's end

    anyio.run(main)
    assert _state(exp) == recovery.state_of(daemon, exp)
    assert _state(exp).finished and not list(tmp_path.glob(".*.tmp"))
    assert not exp.state_writing

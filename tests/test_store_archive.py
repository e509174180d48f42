"""Finished trials on disk (the archive) and each experiment's state file, as units.

No daemon: the store's parts on a ``State`` built by hand, in a temporary folder.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest
from tuned_client import protocol as p

from tuned.core.ledger import parse_request
from tuned.core.model import Experiment, Trial, transition
from tuned.core.state import State
from tuned.store import archive, statefile
from tuned.store.archive import Archive
from tuned.store.statefile import StateFiles

SOCKET = Path("/run/tuned-test/tuned.sock")


def _experiment(state: State, tmp_path: Path, n: int) -> Experiment:
    spec = p.ExperimentSpec(
        name="unit", storage_path=str(tmp_path), trainable_name="f", trainable=b"",
        python=sys.executable, cwd=str(tmp_path), sys_path=[], env={}, trials=[],
    )  # fmt: skip
    exp = Experiment("abcde", spec, tmp_path, 1)
    state.experiments[exp.id] = exp
    for i in range(n):
        bundles = [{"cpu": 1.0 + i % 2}]
        t = Trial(
            id=f"abcde_{i:05d}", index=i, tag=f"{i}_x={i}", experiment=exp,
            config=msgspec.Raw(p.pack_user({"x": i})), request=parse_request(bundles),
            resources=bundles,
        )  # fmt: skip
        exp.trials.append(t)
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
    state, store = State(), Archive(tmp_path / "archive")
    exp = _experiment(state, tmp_path, 5)
    originals = [t for t in exp.live()]
    for i, t in enumerate(originals[:4]):
        _finish(t, i)
        assert store.evict(t)
    assert exp.trials[:4] == [None] * 4 and state.trials_in_memory() == 1
    assert exp.counts() == {"PENDING": 1, "TERMINATED": 2, "ERROR": 2}
    assert state.is_archived("abcde_00001")
    assert not state.is_archived("abcde_00004")  # in memory
    assert not state.is_archived("abcde_1") and state.locate("x_00001") is None
    for i, before in enumerate(originals[:4]):
        after = store.revive(exp, i)
        assert exp.trials[i] is after and state.trial(after.id) is after
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
    state, store = State(), Archive(tmp_path / "archive")
    exp = _experiment(state, tmp_path, 6)
    for i, t in enumerate(list(exp.live())[:4]):
        _finish(t, i)
    expected = p.ExperimentState(
        experiment_id=exp.id,
        socket=str(SOCKET),
        spec=exp.spec,
        trials=[archive.trial_info(t) for t in exp.live()],
        resources=[t.resources for t in exp.live()],
    )
    for t in [t for t in exp.live()][1:3]:  # some archived, some not, out of order
        assert store.evict(t)
    monkeypatch.setattr(statefile, "STATE_CHUNK_BYTES", 64)  # many pieces
    assert statefile.state_of(exp, SOCKET) == expected
    frame = b"".join(statefile.state_chunks(exp, SOCKET))
    assert msgspec.msgpack.decode(frame, type=p.ExperimentState) == expected


def test_experiments_from_one_environment_share_it(tmp_path: Path) -> None:
    state = State()
    first, second, other = (_experiment(state, tmp_path, 0).spec for _ in range(3))
    second.env = dict(first.env, HOME="/home/u")
    first.env = dict(second.env)
    other.env = dict(second.env, HOME="/elsewhere")
    for spec in (first, second, other):
        state.shared.share(spec)
    assert second.env is first.env and second.sys_path is first.sys_path
    assert other.env is not first.env and other.env["HOME"] == "/elsewhere"


def _add_trial(exp: Experiment) -> None:
    i = len(exp.trials)
    t = Trial(
        id=f"abcde_{i:05d}", index=i, tag=str(i), experiment=exp,
        config=msgspec.Raw(p.pack_user({"x": i})), request=parse_request([{"cpu": 1.0}]),
        resources=[{"cpu": 1.0}],
    )  # fmt: skip
    exp.trials.append(t)


def _state(exp: Experiment) -> p.ExperimentState:
    data = (exp.path / p.EXPERIMENT_STATE_FILE).read_bytes()
    return msgspec.msgpack.decode(data, type=p.ExperimentState)


def test_a_large_state_file_is_written_in_steps_while_trials_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statefile, "STATE_STEPS_FROM", 10)
    monkeypatch.setattr(statefile, "STATE_CHUNK_BYTES", 200)  # a piece or two per trial
    state, store = State(), Archive(tmp_path / "archive")
    exp = _experiment(state, tmp_path, 40)
    for i, t in enumerate(list(exp.live())[:20]):
        _finish(t, i)
        store.evict(t)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            files = StateFiles(SOCKET, lambda write, e: tg.start_soon(write, e))
            files.write(exp)
            assert exp.state_writing  # started, not done: the loop goes on meanwhile
            await anyio.lowlevel.checkpoint()  # one turn of the loop
            store.revive(exp, 0)  # its turn has passed
            for i, t in enumerate(list(exp.live())[1:11]):  # 20..29: their turn is to come
                _finish(t, 100 + i)
                assert store.evict(t)
            _add_trial(exp)  # after the write began: in the next one

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
    monkeypatch.setattr(statefile, "STATE_STEPS_FROM", 10)
    monkeypatch.setattr(statefile, "STATE_CHUNK_BYTES", 200)
    exp = _experiment(State(), tmp_path, 30)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            files = StateFiles(SOCKET, lambda write, e: tg.start_soon(write, e))
            files.write(exp)
            await anyio.lowlevel.checkpoint()  # one turn of the loop
            for i, t in enumerate(list(exp.live())):
                _finish(t, i)
            exp.done = True
            files.write(exp, force=True)  # the experiment's end

    anyio.run(main)
    assert _state(exp) == statefile.state_of(exp, SOCKET)
    assert _state(exp).finished and not list(tmp_path.glob(".*.tmp"))
    assert not exp.state_writing

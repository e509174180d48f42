"""The journal stays small whatever the history: compactions, and restarts from a snapshot.

A compaction writes the state to ``snapshot.bin`` and begins a new journal; a
start loads the snapshot and replays only what came after. Every result and
checkpoint reference survives a crash at any point of it: the windows of a
compaction are made exactly (in-process, on a real state folder), and a real
daemon is SIGKILLed while it compacts every few records.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from conftest import RunningDaemon, restart_daemon, start_daemon
from tuned_client import protocol as p
from tuned_client import tune

from tuned.config import Settings
from tuned.daemon import Daemon
from tuned.daemon.recovery import recover
from tuned.run.inventory import NoGpus
from tuned.run.launcher import SpawnLauncher
from tuned.store.archive import trial_info
from tuned.store.journal import retired_path


def steps(config: dict[str, Any]) -> None:
    """Three steps, a checkpoint each; a retry goes on from the last one."""
    import tempfile
    from pathlib import Path

    from tuned_client import tune

    checkpoint = tune.get_checkpoint()
    done = int((Path(checkpoint.path) / "step").read_text()) if checkpoint else 0
    for step in range(done + 1, 4):
        folder = tempfile.mkdtemp(dir=config["dir"])
        (Path(folder) / "step").write_text(str(step))
        tune.report({"step": step, "x": config["x"]}, checkpoint=tune.Checkpoint(folder))


def run_grid(name: str, tmp_path: Path, n: int = 4) -> tune.ResultGrid:
    return tune.Tuner(
        steps,
        param_space={"x": tune.grid_search(list(range(n))), "dir": str(tmp_path)},
        run_config=tune.RunConfig(name=name, verbose=0),
    ).fit()


def everything(d: RunningDaemon) -> dict[str, list[bytes]]:
    """Every experiment's trials as the daemon reports them, encoded for comparison."""
    with d.connect() as conn:
        status = conn.request(p.GetStatus())
        assert isinstance(status, p.StatusReply)
        return {
            e.experiment_id: [
                msgspec.msgpack.encode(t) for t in conn.get_experiment(e.experiment_id).trials
            ]
            for e in status.experiments
        }


@pytest.mark.daemon_args("--num-cpus", "2", "--compact-bytes", "20000")
def test_a_compacted_history_restarts_from_its_snapshot_with_everything(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    for i in range(4):
        assert run_grid(f"g{i}", tmp_path).num_terminated == 4
    state = daemon.state_dir
    assert (state / "snapshot.bin").exists()
    assert (state / "journal.bin").stat().st_size < 40_000  # compacted, not the whole history
    before = everything(daemon)
    daemon.stop(signal.SIGKILL)
    again = restart_daemon(daemon)
    try:
        assert everything(again) == before
        with again.connect() as conn:
            reply = conn.get_experiment(next(iter(before)))
        assert all(t.checkpoint.endswith("checkpoint_000002") for t in reply.trials)
    finally:
        again.stop()


# ------------------------------------------------------------------ the windows of a compaction


def in_process(state_dir: Path) -> Daemon:
    settings = Settings(
        socket_path=state_dir / "unused.sock", state_dir=state_dir, num_cpus=2, num_gpus=0
    )
    daemon = Daemon(settings, NoGpus(), SpawnLauncher())
    anyio.run(recover, daemon)
    daemon.recovered.set()
    return daemon


def trials_of(daemon: Daemon) -> dict[str, list[bytes]]:
    out = {}
    for exp in daemon.experiments.values():
        rows = []
        for i, t in enumerate(exp.trials):
            if t is None:
                record = daemon.archive.record(exp, i)
                assert record is not None
                rows.append(bytes(record.info))
            else:
                rows.append(msgspec.msgpack.encode(trial_info(t)))
        out[exp.id] = rows
    return out


@pytest.mark.parametrize("crash", ["after the new journal began", "before the old one went"])
def test_a_crash_at_any_point_of_a_compaction_loses_nothing(
    daemon: RunningDaemon, tmp_path: Path, crash: str
) -> None:
    for i in range(2):
        run_grid(f"w{i}", tmp_path)
    daemon.stop(signal.SIGTERM)  # a clean stop compacts only past 1 MB: not here
    state = daemon.state_dir
    first = in_process(state)
    expected = trials_of(first)
    data, files, old = first._begin()  # the snapshot taken, the next journal begun
    if crash == "before the old one went":
        from tuned.store import snapshot

        snapshot.persist(state / "snapshot.bin", data, files)
    first.journal.close()  # ...and the daemon dies here
    assert old == retired_path(state / "journal.bin", 0) and old.exists()
    second = in_process(state)
    assert trials_of(second) == expected
    second.journal.close()
    # The old journal goes once a snapshot holds it; until then it is still needed.
    assert old.exists() == (crash == "after the new journal began")


@pytest.mark.daemon_args("--num-cpus", "2", "--compact-bytes", "4000")
def test_sigkill_while_compacting_every_few_records_loses_nothing(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """A grid runs through two SIGKILLs while the daemon compacts all the time."""
    outcome: dict[str, tune.ResultGrid] = {}
    runner = threading.Thread(target=lambda: outcome.update(g=run_grid("kill", tmp_path, 8)))
    runner.start()
    current = daemon
    try:
        for _ in range(2):
            with current.connect() as conn:  # wait for a result after the last restart
                conn.send(p.Subscribe(since=-1))
                while not isinstance(conn.recv(), p.TrialResult):
                    pass
            current.stop(signal.SIGKILL)
            current = restart_daemon(current)
        runner.join(timeout=180)
        grid = outcome["g"]
        assert grid.num_terminated == 8 and not grid.errors
        for result in grid:
            rows = [r["step"] for r in result.metrics_dataframe.to_dict("records")]
            assert rows == [1, 2, 3]  # every result once, none lost, none repeated
    finally:
        current.stop()


def test_a_torn_tail_after_a_compaction_is_skipped(daemon: RunningDaemon, tmp_path: Path) -> None:
    run_grid("torn", tmp_path)
    daemon.stop(signal.SIGTERM)
    first = in_process(daemon.state_dir)
    expected = trials_of(first)
    first.compact_now()
    first.journal.close()
    journal = daemon.state_dir / "journal.bin"
    whole = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(whole[: len(whole) // 2])  # a record cut short by a crash mid-write
    second = in_process(daemon.state_dir)
    assert trials_of(second) == expected
    second.journal.close()
    assert journal.read_bytes() == whole  # cut back to its last whole record


def test_status_answers_while_the_journal_replays(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    d = start_daemon(tmp_path, ["--num-cpus", "1", "--recovery-gate", str(gate)], name="gated")
    try:
        with d.connect() as status_conn, d.connect() as submit_conn:
            status = status_conn.request(p.GetStatus())
            assert isinstance(status, p.StatusReply) and status.recovering
            submit_conn.send(p.GetExperiment(experiment_id="nope0", page_bytes=1))
            status = status_conn.request(p.GetStatus())  # still answered; the other waits
            assert isinstance(status, p.StatusReply) and status.recovering
            with open(gate, "w") as word:
                word.write("go")
            reply = submit_conn.recv()
            assert isinstance(reply, p.Error) and reply.code == "not_found"
            status = status_conn.request(p.GetStatus())
            assert isinstance(status, p.StatusReply) and not status.recovering
    finally:
        d.stop()

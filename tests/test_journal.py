"""The journal: a torn last record is skipped and cut off, never fatal; replay rebuilds state."""

from __future__ import annotations

import signal
from pathlib import Path

import msgspec
import pytest
from conftest import RunningDaemon, next_event, restart_daemon, start_script
from tuned_client import protocol as p
from tuned_client import tune

from tuned.core.records import Control
from tuned.store.journal import Journal


def _event(seq: int) -> p.TrialResult:
    return p.TrialResult(
        seq=seq, ts=0.0, experiment_id="e", trial_id="t", metrics=p.pack_user({"i": seq})
    )


def test_a_torn_last_record_is_skipped_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    journal = Journal(path)
    journal.open()
    for seq in (1, 2):
        journal.append(_event(seq))
    journal.append(Control("close", "e"))
    journal.close()
    intact = path.stat().st_size
    whole = path.read_bytes()
    first_record = whole[: 8 + int.from_bytes(whole[:4], "big")]
    with open(path, "ab") as f:
        f.write(first_record[: len(first_record) // 2])  # a record cut short mid-write
    records = list(Journal.replay(path))
    assert [getattr(r, "seq", None) for r in records] == [1, 2, None]
    assert path.stat().st_size == intact
    # a record whose bytes were damaged fails its checksum: replay stops before it
    damaged = bytearray(path.read_bytes())
    damaged[-3] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert len(list(Journal.replay(path))) == 2


def train_short(config: dict) -> None:
    tune.report({"x": config["x"]})


def test_a_restarted_daemon_still_lists_finished_experiments(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = tune.Tuner(
        train_short,
        param_space={"x": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(name="kept", verbose=0),
    ).fit()
    assert results.num_terminated == 2
    daemon.stop(signal.SIGKILL)
    with open(daemon.state_dir / "journal.bin", "ab") as f:
        f.write(b"\x00\x00\x10\x00torn")  # announces 4 KiB, holds 4 bytes
    again = restart_daemon(daemon)
    try:
        with again.connect() as conn:
            status = conn.request(p.GetStatus())
            assert isinstance(status, p.StatusReply)
            (row,) = status.experiments
            assert row.name == "kept" and row.finished and row.counts == {"TERMINATED": 2}
            reply = conn.request(p.GetExperiment(experiment_id=row.experiment_id))
        assert isinstance(reply, p.ExperimentReply)
        metrics = [p.unpack_user(t.last_result) for t in reply.trials if t.last_result]
        assert sorted(m["x"] for m in metrics) == [1, 2]
        assert reply.seq > 0  # the event sequence goes on after the journalled one
        state = msgspec.msgpack.decode(
            (Path(row.path) / p.EXPERIMENT_STATE_FILE).read_bytes(), type=p.ExperimentState
        )
        assert state.finished and [t.status for t in state.trials] == ["TERMINATED"] * 2
    finally:
        again.stop()


HANGING_PAIR = """
import signal
from tuned_client import tune

def hang(config):
    signal.pause()  # until the daemon's death takes it down

tune.Tuner(hang, param_space={"x": tune.grid_search([1, 2])},
           run_config=tune.RunConfig(name="pbt-crash", verbose=0)).fit()
"""


@pytest.mark.daemon_args("--num-cpus", "1")
def test_a_pbt_restart_with_a_new_config_survives_a_daemon_crash(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    watcher = daemon.connect()
    watcher.send(p.Subscribe())
    client = start_script(daemon, tmp_path / "client.py", HANGING_PAIR)
    try:
        started = next_event(watcher, p.TrialStarted)  # one runs, the other waits for the cpu
        with daemon.connect() as conn:
            reply = conn.request(p.GetExperiment(experiment_id=started.experiment_id))
            assert isinstance(reply, p.ExperimentReply)
            (waiting,) = [t for t in reply.trials if t.status == "PENDING"]
            conn.request(p.RestartTrial(trial_id=waiting.trial_id, config=p.pack_user({"x": 99})))
        daemon.stop(signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
        watcher.close()
    again = restart_daemon(daemon)
    try:
        with again.connect() as conn:
            reply = conn.request(p.GetExperiment(experiment_id=started.experiment_id))
        assert isinstance(reply, p.ExperimentReply)
        configs = {t.trial_id: p.unpack_user(t.config) for t in reply.trials}
        assert configs[waiting.trial_id] == {"x": 99}  # the exploit's config, not the first one
        assert sorted(c["x"] for c in configs.values()) == [1, 99]
    finally:
        again.stop()

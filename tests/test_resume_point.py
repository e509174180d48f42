"""A lost experiment's trials go on from their folders: the point read there, and its checks.

``Tuner.restore`` of an experiment its daemon lost submits the unfinished
trials again, each with where it goes on (``TrialResume``), read from its
folder (``resume_point``); the daemon takes it only inside the experiment's
folder, and its reducer puts the trial there, as a retry from that checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import DaemonError
from tuned_client.tune.resume_point import resume_point

from tuned.core import reducer
from tuned.core.records import Submitted
from tuned.core.state import State


def _folder(tmp_path: Path) -> Path:
    """A trial that reported 3 rows, checkpoints at rows 1 and 2, and was torn mid-row 4."""
    trial = tmp_path / "train_ab12c_00000_0_2026"
    (trial / "checkpoint_000000").mkdir(parents=True)
    (trial / "checkpoint_000001").mkdir()
    rows = [
        b'{"loss": 3, "training_iteration": 1, "time_total_s": 1.5, '
        b'"checkpoint_dir_name": "checkpoint_000000"}\n',
        b'{"loss": 2, "training_iteration": 2, "time_total_s": 2.5, '
        b'"checkpoint_dir_name": "checkpoint_000001"}\n',
        b'{"loss": 1, "training_iteration": 3, "time_total_s": 3.5, '
        b'"checkpoint_dir_name": "checkpoint_000002"}\n',  # its folder never made it to disk
        b'{"loss": 0, "training_it',
    ]
    (trial / "result.json").write_bytes(b"".join(rows))
    csv = [b"loss,note\r\n", b'3,"one\nline"\r\n', b"2,two\r\n", b"1,three\r\n"]
    (trial / "progress.csv").write_bytes(b"".join(csv))
    return trial


def test_the_point_is_the_latest_checkpoint_on_disk_and_the_rows_up_to_it(tmp_path: Path) -> None:
    trial = _folder(tmp_path)
    at = resume_point(trial)
    assert at.checkpoint == str(trial / "checkpoint_000001")
    assert (at.iteration, at.time_total_s) == (2, 2.5)
    rows = (trial / "result.json").read_bytes()[: at.result_bytes].splitlines()
    assert [msgspec.json.decode(r)["loss"] for r in rows] == [3, 2]
    progress = (trial / "progress.csv").read_bytes()[: at.progress_bytes]
    assert progress == b'loss,note\r\n3,"one\nline"\r\n2,two\r\n'  # a quoted newline is one row


def test_a_trial_without_a_checkpoint_starts_over_in_its_folder(tmp_path: Path) -> None:
    trial = tmp_path / "train_ab12c_00001_1_2026"
    trial.mkdir()
    (trial / "result.json").write_bytes(b'{"loss": 1, "training_iteration": 1}\n')
    assert resume_point(trial) == p.TrialResume(dir=str(trial))  # its files are emptied


def _spec(trials: list[p.TrialSpec]) -> p.ExperimentSpec:
    return p.ExperimentSpec(
        name="e", storage_path="/r", trainable_name="train", trainable=b"",
        python="python", cwd="/", sys_path=[], env={}, trials=trials,
    )  # fmt: skip


def test_the_reducer_puts_a_resumed_trial_at_its_checkpoint(tmp_path: Path) -> None:
    trial_dir = tmp_path / "t"
    at = p.TrialResume(
        dir=str(trial_dir), checkpoint=str(trial_dir / "checkpoint_000001"),
        iteration=2, time_total_s=2.5, result_bytes=180, progress_bytes=40,
    )  # fmt: skip
    fresh = p.TrialSpec(tag="1", config=msgspec.Raw(msgspec.msgpack.encode({})))
    resumed = p.TrialSpec(tag="0", config=msgspec.Raw(msgspec.msgpack.encode({})), resume=at)
    ids = ["abcde_00000", "abcde_00001"]
    record = Submitted("abcde", str(tmp_path), ids, _spec([resumed, fresh]))
    applied = reducer.apply(State(), record)
    assert applied.experiment is not None
    first, second = applied.experiment.trials
    assert first is not None and second is not None
    assert (first.dir, first.checkpoint) == (trial_dir, at.checkpoint)
    assert (first.iteration, first.checkpoint_iteration, first.checkpoint_time) == (2, 2, 2.5)
    assert first.checkpoint_offsets == (180, 40)
    assert first.status == "PENDING" and list(applied.experiment.queue) == [first, second]
    assert (second.dir, second.checkpoint, second.checkpoint_offsets) == (None, "", (0, 0))


def test_a_resume_outside_the_experiment_folder_is_refused(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    spec = tune.Tuner(  # a random domain: its trial is listed, as a restore lists them
        lambda config: None,
        param_space={"x": tune.uniform(0, 1)},
        run_config=tune.RunConfig(name="elsewhere"),
    )._experiment_spec()
    spec.trials[0].resume = p.TrialResume(dir=str(tmp_path))  # not one of its trial folders
    with daemon.connect() as conn, pytest.raises(DaemonError) as refused:
        conn.request(p.Submit(experiment=spec))
    assert refused.value.code == "bad_request"
    assert "is not a trial folder of" in refused.value.message
    inside = daemon.storage / "elsewhere" / "t"
    spec.trials[0].resume = p.TrialResume(dir=str(inside), checkpoint=str(tmp_path))
    with daemon.connect() as conn, pytest.raises(DaemonError) as refused:
        conn.request(p.Submit(experiment=spec))
    assert "is not in" in refused.value.message
    with daemon.connect() as conn:
        status = conn.request(p.GetStatus())
    assert isinstance(status, p.StatusReply) and status.experiments == []  # nothing taken

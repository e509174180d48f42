"""The one reducer: records in, state out, the same for the live daemon and for a replay.

Unit cases build records by hand; the last case runs a real daemon, then replays
its journal into a fresh state and finds every trial as the daemon reported it.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune

from tuned.core import reducer
from tuned.core.model import Experiment, Trial
from tuned.core.records import Control, Submitted
from tuned.core.state import State
from tuned.store.archive import trial_info
from tuned.store.journal import Journal

SPEC = {
    "storage_path": "/results",
    "trainable_name": "f",
    "trainable": b"",
    "python": "python3",
    "cwd": "/",
    "sys_path": [],
    "env": {},
}


def submitted(n: int, exp_id: str = "abcde") -> Submitted:
    trials = [p.TrialSpec(tag=str(i), config=p.pack_user({"x": i})) for i in range(n)]
    spec = p.ExperimentSpec(name="unit", trials=trials, **SPEC)  # type: ignore[arg-type]
    return Submitted(exp_id, "/results/unit", [f"{exp_id}_{i:05d}" for i in range(n)], spec)


def ev(cls: type[Any], trial: str = "", **fields: Any) -> Any:
    extra = {"trial_id": trial} if trial else {}
    return cls(seq=0, ts=100.0, experiment_id="abcde", **extra, **fields)


def started(trial: str, attempt: int = 1) -> p.TrialStarted:
    return ev(
        p.TrialStarted, trial, pid=4242, attempt=attempt, resources={}, trial_dir=f"/r/{trial}"
    )


def queue(exp: Experiment) -> list[str]:
    return [t.id for t in exp.queue]


def state_with(n: int) -> tuple[State, Experiment]:
    state = State()
    exp = reducer.apply(state, submitted(n)).experiment
    assert exp is not None
    return state, exp


def test_an_accepted_experiment_queues_its_trials_in_order_sharing_requests() -> None:
    state, exp = state_with(3)
    assert queue(exp) == ["abcde_00000", "abcde_00001", "abcde_00002"]
    assert exp.counts() == {"PENDING": 3}
    trials = list(exp.live())
    assert trials[0].request is trials[2].request  # one Request per distinct bundles
    assert exp.spec.trials == [] and exp.spec.trainable == b""  # held by the trials now
    for t in trials:  # the first TrialQueued of each changes nothing
        reducer.apply(state, ev(p.TrialQueued, t.id, name=t.name, config=t.config))
    assert queue(exp) == ["abcde_00000", "abcde_00001", "abcde_00002"]


def test_a_start_takes_a_trial_off_its_queue_and_a_retry_puts_it_in_front() -> None:
    state, exp = state_with(3)
    reducer.apply(state, started("abcde_00001"))
    trial = state.trial("abcde_00001")
    assert trial is not None and trial.status == "RUNNING" and trial.pid == 4242
    assert queue(exp) == ["abcde_00000", "abcde_00002"]
    reducer.apply(state, ev(p.TrialRetrying, "abcde_00001", attempt=1, error="boom"))
    assert queue(exp) == ["abcde_00001", "abcde_00000", "abcde_00002"]
    assert trial.status == "PENDING" and trial.failures == 1 and trial.pid == 0
    reducer.apply(state, ev(p.TrialRetrying, "abcde_00001", attempt=2, error="x", counted=False))
    assert trial.failures == 1 and trial.losses == 1  # lost with its zygote: not counted


def test_checkpoints_rewind_a_requeued_trial_and_are_pruned() -> None:
    state, exp = state_with(1)
    exp.spec.num_to_keep = 1
    reducer.apply(state, started("abcde_00000"))
    dropped = []
    for i in (1, 2):
        row = p.pack_user({"training_iteration": i, "time_total_s": float(i)})
        reducer.apply(state, ev(p.TrialResult, "abcde_00000", metrics=msgspec.Raw(row)))
        applied = reducer.apply(
            state, ev(p.TrialCheckpoint, "abcde_00000", path=f"/c/{i}", iteration=i,
                      time_total_s=float(i), result_bytes=10 * i, progress_bytes=5 * i),
        )  # fmt: skip
        dropped += applied.dropped
    trial = state.trial("abcde_00000")
    assert trial is not None and trial.checkpoint == "/c/2" and dropped == ["/c/1"]
    row = p.pack_user({"training_iteration": 3, "time_total_s": 3.0})
    reducer.apply(state, ev(p.TrialResult, "abcde_00000", metrics=msgspec.Raw(row)))
    assert trial.iteration == 3
    reducer.apply(state, ev(p.TrialQueued, "abcde_00000", name="", config=trial.config, front=True))
    assert trial.status == "PENDING" and (trial.iteration, trial.time_total_s) == (2, 2.0)


def test_a_cancelled_experiment_marks_its_trials_and_they_finish() -> None:
    state, exp = state_with(2)
    reducer.apply(state, started("abcde_00000"))
    reducer.apply(state, Control("cancel", "abcde"))
    running, waiting = (state.trial(f"abcde_0000{i}") for i in (0, 1))
    assert running is not None and waiting is not None
    assert exp.cancelled and exp.closed
    assert running.stop_requested and running.error == waiting.error == "cancelled"
    reducer.apply(state, ev(p.TrialFinished, waiting.id, status="ERROR", error="cancelled"))
    assert queue(exp) == [] and exp.counts() == {"RUNNING": 1, "ERROR": 1}


def test_an_exploit_waits_for_the_attempt_then_queues_the_trial_in_front() -> None:
    state, exp = state_with(2)
    reducer.apply(state, started("abcde_00000"))
    new = p.pack_user({"x": 99})
    reducer.apply(state, Control("exploit", "abcde_00000", config=new, checkpoint="/s"))
    trial = state.trial("abcde_00000")
    assert trial is not None and trial.stop_requested and "abcde_00000" in state.exploits
    reducer.apply(state, ev(p.TrialQueued, trial.id, name="", config=msgspec.Raw(new), front=True))
    assert state.exploits == {} and not trial.stop_requested
    assert p.unpack_user(trial.config) == {"x": 99} and queue(exp)[0] == trial.id


def test_trials_added_to_an_open_experiment_arrive_as_queued_events() -> None:
    state, exp = state_with(0)
    reducer.apply(state, ev(p.TrialQueued, "abcde_00000", name="", config=p.pack_user({})))
    assert queue(exp) == ["abcde_00000"] and len(exp.trials) == 1


def test_a_record_about_an_archived_trial_brings_it_back() -> None:
    state, exp = state_with(1)
    trial = state.trial("abcde_00000")
    assert trial is not None
    reducer.apply(state, started(trial.id))
    reducer.apply(state, ev(p.TrialFinished, trial.id, status="ERROR", error="boom"))
    exp.trials[0] = None  # archived
    revived: list[int] = []

    def revive(e: Experiment, index: int) -> Trial:
        revived.append(index)
        e.trials[index] = trial
        return trial

    reducer.apply(state, Control("resume", "abcde", restart=[trial.id]), revive)
    reducer.apply(state, ev(p.TrialQueued, trial.id, name="", config=trial.config), revive)
    assert revived == [0] and trial.status == "PENDING" and queue(exp) == [trial.id]
    assert trial.error == "" and trial.failures == 0  # Tuner.restore(resume_errored=True)
    with pytest.raises(LookupError):  # without a store, an archived trial cannot be read
        exp.trials[0] = None
        reducer.apply(state, ev(p.TrialResult, trial.id, metrics=p.pack_user({})))


def test_a_resume_into_a_moved_folder_moves_the_trials_it_queues_again() -> None:
    """Tuner.restore of a moved experiment: replayed, its archived trials (those that
    run again) find their folders and checkpoints in the new place, as live."""
    state, exp = state_with(2)
    exp.path = Path("/results/unit")
    archived: dict[int, Trial] = {}
    for index, trial in enumerate(list(exp.live())):
        reducer.apply(state, started(trial.id))
        trial.dir = Path(f"/results/unit/t{index}")
        trial.checkpoint = f"/results/unit/t{index}/checkpoint_000001"
        trial.kept_checkpoints = [(trial.checkpoint, 1.0)]
        reducer.apply(state, ev(p.TrialFinished, trial.id, status="ERROR", error="boom"))
        archived[index], exp.trials[index] = trial, None

    def revive(e: Experiment, index: int) -> Trial:
        e.trials[index] = archived[index]
        return archived[index]

    ids = [t.id for t in archived.values()]
    reducer.apply(
        state,
        Control("resume", "abcde", restart=ids[1:], path="/moved/unit", resume=ids[:1]),
        revive,
    )
    first, second = archived[0], archived[1]
    assert exp.path == Path("/moved/unit")
    assert first.dir == Path("/moved/unit/t0")
    assert first.checkpoint == "/moved/unit/t0/checkpoint_000001"
    assert first.kept_checkpoints == [("/moved/unit/t0/checkpoint_000001", 1.0)]
    assert second.dir == Path("/moved/unit/t1") and second.checkpoint == ""  # restarted


# ------------------------------------------------------------------ live and replayed agree


def flaky(config: dict[str, Any]) -> None:
    import tempfile

    from tuned_client import tune

    checkpoint = tune.get_checkpoint()
    for step in range(1, 4):
        folder = tempfile.mkdtemp(dir=config["dir"])
        tune.report({"step": step, "x": config["x"]}, checkpoint=tune.Checkpoint(folder))
        if config["x"] == 1 and checkpoint is None and step == 2:
            raise RuntimeError("fails once, then resumes from its checkpoint")


def test_replaying_the_journal_gives_the_state_the_live_daemon_had(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    grid = tune.Tuner(
        flaky,
        param_space={"x": tune.grid_search([0, 1, 2]), "dir": str(tmp_path)},
        run_config=tune.RunConfig(
            name="agree", verbose=0, failure_config=tune.FailureConfig(max_failures=1)
        ),
    ).fit()
    assert grid.num_errors == 0
    with daemon.connect() as conn:
        live = {e.experiment_id: conn.get_experiment(e.experiment_id).trials for e in
                conn.request(p.GetStatus()).experiments}  # type: ignore[union-attr]  # fmt: skip
    daemon.stop(signal.SIGTERM)
    replayed = State()
    for record in Journal.replay(daemon.state_dir / "journal.bin"):
        reducer.apply(replayed, record)
    for exp_id, trials in live.items():
        exp = replayed.experiments[exp_id]
        again = [trial_info(t) for t in exp.live()]
        assert [msgspec.msgpack.encode(t) for t in again] == [
            msgspec.msgpack.encode(t) for t in trials
        ]

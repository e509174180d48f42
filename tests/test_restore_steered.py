"""``Tuner.restore`` of steered experiments, and what a restored experiment shows.

Issue 17's "Restore" items beyond Ray's own tests (``test_ray_tuner_restore.py``):
a searcher stopped with Ctrl-C goes on to its ``num_samples`` after a restore
(it stopped at half, with a traceback, before), ``Callback.setup`` comes before
the first trial, ``tune.with_parameters`` objects stay in the experiment's
store across a restore, and ``tuned tail`` follows an experiment that runs
again after it had finished.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RunningDaemon
from gates import Gate, pass_gate, wait_until
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune.parameters import INLINE_LIMIT, PARAMETERS_DIR
from tuned_client.tune.search import ConcurrencyLimiter, restore_searcher
from tuned_client.tune.search.optuna import OptunaSearch

TESTS = str(Path(__file__).parent)


# ------------------------------------------------------------ Ctrl-C, then restore


def train_gated(config: dict[str, Any]) -> None:
    """Reports once, then waits for the test's go-ahead (``go`` exists) before its last."""
    folder = Path(config["folder"])
    with open(folder / "starts.log", "a") as f:
        f.write(f"{tune.get_context().get_trial_id()}\n")
    tune.report({"loss": (config["x"] - 0.5) ** 2 + 1.0})
    pass_gate(folder / "go")  # the test's go-ahead
    tune.report({"loss": (config["x"] - 0.5) ** 2})


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_restore_steered import train_gated
from tuned_client import tune
from tuned_client.tune.search import ConcurrencyLimiter
from tuned_client.tune.search.optuna import OptunaSearch
tune.Tuner(
    train_gated,
    param_space={{"x": tune.uniform(0, 1), "folder": {folder!r}}},
    tune_config=tune.TuneConfig(
        metric="loss", mode="min", num_samples=6,
        search_alg=ConcurrencyLimiter(OptunaSearch(seed=3), max_concurrent=2),
    ),
    run_config=tune.RunConfig(name="searched", storage_path={storage!r}, verbose=1),
).fit()
"""


def test_ctrl_c_then_restore_runs_every_sample_of_the_search(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    go = Gate(tmp_path / "go")  # before any trial can reach it
    script = tmp_path / "search.py"
    script.write_text(
        SCRIPT.format(tests=TESTS, folder=str(tmp_path), storage=str(daemon.storage))
    )
    client = subprocess.Popen(
        [sys.executable, str(script)],
        env=daemon.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    starts = tmp_path / "starts.log"
    wait_until(
        lambda: starts.exists() and len(starts.read_text().split()) >= 2, "no trial started"
    )
    client.send_signal(signal.SIGINT)  # two trials wait on "go": both are cut short
    _, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert "Traceback" not in err and "takes no more trials" not in err

    go.open()
    path = daemon.storage / "searched"
    restored = tune.Tuner.restore(str(path), train_gated)
    assert restored.tune_config.metric == "loss" and restored.tune_config.mode == "min"
    results = restored.fit()

    assert len(results) == 6 and results.num_errors == 0
    assert all(r.metrics["training_iteration"] == 2 for r in results)
    # the two cut short went on from where they were (resumed, not run afresh) ...
    first_two = starts.read_text().split()[:2]
    assert sorted(starts.read_text().split()).count(first_two[0]) == 2
    # ... and the search learnt from all six, in one study (its state was restored)
    assert results.get_best_result().metrics["loss"] == min(r.metrics["loss"] for r in results)
    searcher = restore_searcher(path)
    assert isinstance(searcher, ConcurrencyLimiter)
    assert isinstance(searcher.searcher, OptunaSearch)
    states = [t.state.name for t in searcher.searcher._study.trials]
    assert states == ["COMPLETE"] * 6


# ------------------------------------------------------------ Callback.setup comes first


class SetupSeesNoTrial(tune.Callback):
    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.queued_at_setup: int | None = None
        self.setup_kwargs: dict[str, Any] = {}

    def setup(self, **info: Any) -> None:
        from tuned_client.connection import Connection

        with Connection.open(self.socket, autostart=False) as conn:
            status = conn.request(p.GetStatus())
        assert isinstance(status, p.StatusReply)
        self.queued_at_setup = sum(sum(e.counts.values()) for e in status.experiments)
        self.setup_kwargs = info


def test_callback_setup_comes_before_the_first_trial_with_a_searcher(
    daemon: RunningDaemon,
) -> None:
    callback = SetupSeesNoTrial(str(daemon.socket))
    tune.Tuner(
        lambda config: {"loss": config["x"]},
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", num_samples=3, search_alg=OptunaSearch(seed=1)
        ),
        run_config=tune.RunConfig(callbacks=[callback], verbose=0),
    ).fit()
    assert callback.queued_at_setup == 0  # Ray calls setup before it adds a trial
    assert callback.setup_kwargs["num_samples"] == 3


# ------------------------------------------------------------ with_parameters' store


def train_with_data(config: dict[str, Any], data: Any = None) -> None:
    checkpoint = tune.get_checkpoint()
    start = 0 if checkpoint is None else json.loads((Path(checkpoint.path) / "s").read_text())
    for step in range(start + 1, 3):
        folder = Path(config["folder"]) / f"ckpt-{tune.get_context().get_trial_id()}-{step}"
        folder.mkdir()
        (folder / "s").write_text(json.dumps(step))
        tune.report({"sum": float(data.sum()), "step": step}, checkpoint=tune.Checkpoint(folder))
        if Path(config["fail"]).exists():
            raise RuntimeError("failing until the marker goes")


def test_restore_keeps_with_parameters_objects_in_the_experiment_store(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    data = np.arange(100_000, dtype=np.float64)  # 800 KB: over the inline limit
    fail = tmp_path / "fail"
    fail.write_text("")
    trainable = tune.with_parameters(train_with_data, data=data)
    tune.Tuner(
        trainable,
        param_space={"folder": str(tmp_path), "fail": str(fail)},
        run_config=tune.RunConfig(name="withdata", verbose=0),
    ).fit()
    path = daemon.storage / "withdata"
    stored = list((path / PARAMETERS_DIR).iterdir())
    assert len(stored) == 1

    fail.unlink()
    restored = tune.Tuner.restore(
        str(path), tune.with_parameters(train_with_data, data=data), resume_errored=True
    )
    results = restored.fit()
    assert results.num_errors == 0 and results[0].metrics["step"] == 2
    assert results[0].metrics["sum"] == float(data.sum())
    # the restore's trainable names the same stored object; nothing travelled inline
    assert list((path / PARAMETERS_DIR).iterdir()) == stored
    trainables = list(path.glob("trainable-*.pkl"))
    assert trainables and all(t.stat().st_size < INLINE_LIMIT for t in trainables)


# ------------------------------------------------------------ tuned tail


def train_waiting(config: dict[str, Any]) -> None:
    tune.report({"i": 0})
    if Path(config["fail"]).exists():
        raise RuntimeError("failing until the marker goes")
    pass_gate(config["go"])  # the test's go-ahead
    tune.report({"i": 1})


def test_tuned_tail_follows_an_experiment_restored_after_it_finished(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    fail, go = tmp_path / "fail", Gate(tmp_path / "go")
    fail.write_text("")
    space = {"fail": str(fail), "go": str(go)}
    grid = tune.Tuner(
        train_waiting, param_space=space, run_config=tune.RunConfig(name="tailed", verbose=0)
    ).fit()
    assert grid.num_errors == 1
    fail.unlink()
    restored = tune.Tuner.restore(grid.experiment_path, train_waiting, resume_errored=True)

    done: list[tune.ResultGrid] = []
    fitting = threading.Thread(target=lambda: done.append(restored.fit()))
    fitting.start()
    try:
        exp_id = grid[0].trial_id.split("_")[0]
        with daemon.connect() as conn:
            wait_until(
                lambda: not conn.request(p.GetExperiment(experiment_id=exp_id)).finished,
                "the restored experiment did not start",
            )
        tail = subprocess.Popen(
            [sys.executable, "-m", "tuned", "tail", exp_id, "--json"],
            env=daemon.env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert tail.stdout is not None
        first = json.loads(tail.stdout.readline())  # it has subscribed: history comes
        assert first["kind"] == "experiment_accepted"
        go.open()
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(tail.stdout or []))
        reader.start()
        reader.join(timeout=60)
        assert tail.wait(timeout=10) == 0, "tuned tail did not end with the experiment"
    finally:
        go.open()
        fitting.join(timeout=60)
    events = [first] + [json.loads(line) for line in lines]
    kinds = [e["kind"] for e in events]
    # the first run's end did not end the tail: it went on to the restored run's end
    assert kinds.count("experiment_finished") == 2 and kinds[-1] == "experiment_finished"
    assert done and done[0].num_errors == 0


def test_the_live_view_follows_an_experiment_begun_before_its_history(
    daemon: RunningDaemon,
) -> None:
    """``tuned tail`` in a terminal: an experiment restored after a daemon restart began
    before the events the view was given; its events fetch it, and queued trials
    make a finished experiment run again."""
    import io

    from tuned.cli.live import LiveView

    grid = tune.Tuner(lambda config: {"x": 1}, run_config=tune.RunConfig(verbose=0)).fit()
    exp_id = grid[0].trial_id.split("_")[0]
    view = LiveView(io.StringIO(), "", daemon.socket)
    queued = p.TrialQueued(
        seq=10**6, ts=0.0, experiment_id=exp_id, trial_id=grid[0].trial_id, name="t", tag="0",
        config=p.pack_user({}),
    )  # fmt: skip
    view.on_event(queued)
    exp = view.fold.experiments[exp_id]
    assert not exp.finished and exp.trials[grid[0].trial_id].status == "PENDING"


class CountsResults(tune.Callback):
    """Ray's stateful callback: its count is saved with the experiment."""

    def __init__(self, fail_at: int = 0) -> None:
        self.count = 0
        self.fail_at = fail_at

    def on_trial_result(self, iteration: int, trials: Any, trial: Any, result: Any, **_: Any) -> None:  # noqa: E501
        self.count += 1
        if self.count == self.fail_at:
            raise RuntimeError("the callback gives up")

    def get_state(self) -> dict[str, Any] | None:
        return {"count": self.count}

    def set_state(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


def train_three(config: dict[str, Any]) -> None:
    checkpoint = tune.get_checkpoint()
    start = 0 if checkpoint is None else int((Path(checkpoint.path) / "n").read_text())
    for n in range(start + 1, 4):
        folder = Path(config["folder"]) / f"c{n}"
        folder.mkdir()
        (folder / "n").write_text(str(n))
        tune.report({"n": n}, checkpoint=tune.Checkpoint(folder))
        if n == 1:
            pass_gate(config["gate"])  # the first run ends here, its callback having failed


def test_restore_brings_back_the_callbacks_state(daemon: RunningDaemon, tmp_path: Path) -> None:
    first = CountsResults(fail_at=1)
    gate = Gate(tmp_path / "gate")  # no trial ends before the failing callback ends fit()
    tuner = tune.Tuner(
        train_three,
        param_space={"folder": str(tmp_path), "gate": str(gate)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="counted", callbacks=[first], verbose=0),
    )
    with pytest.raises(RuntimeError, match="gives up"):
        tuner.fit()
    path = daemon.storage / "counted"
    gate.open()
    again = CountsResults()
    restored = tune.Tuner.restore(
        str(path), train_three, run_config=tune.RunConfig(callbacks=[again], verbose=0)
    )
    results = restored.fit()
    assert results[0].metrics["n"] == 3
    # the first run's count came back, and the restored run's results added to it
    resumed_from = results[0].metrics["iterations_since_restore"]
    assert again.count == first.count + resumed_from

"""TensorBoard files per trial, read back with TensorBoard's own reader.

Ray's ``TBXLoggerCallback`` names and layout (``ray/tune/<metric>`` scalars at
step ``training_iteration``, nested metrics flattened with ``/``, lists as
histograms, the config as hparams at the trial's end), written by default by
the experiment's writer process, by the callback itself when a script passes
it, after the script is gone, and afterwards by ``tuned tensorboard``.
"""

from __future__ import annotations

import fcntl
import glob
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from conftest import next_event as wait_for
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune.logger import (
    CSVLoggerCallback,
    JsonLoggerCallback,
    LoggerCallback,
    TBXLoggerCallback,
)

pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="TensorBoard (the reader these tests check with) is not installed",
)


def curves(config: dict[str, Any]) -> None:
    for i in range(3):
        tune.report(
            {"loss": config["x"] * i, "nested": {"acc": i / 10}, "hist": [1.0, 2.0, 3.0 + i],
             "name": "text"}
        )  # fmt: skip


def wait_for_writer(experiment_dir: str) -> None:
    """Block until the experiment's writer process has exited (it holds this lock)."""
    fd = os.open(os.path.join(experiment_dir, ".tensorboard.lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)


def read(trial_dir: str) -> Any:
    acc = event_accumulator.EventAccumulator(trial_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def scalars(acc: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]


def hparams(acc: Any) -> dict[str, Any]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.number_value or v.string_value for k, v in info.hparams.items()}


def test_every_trial_gets_rays_tensorboard_files_by_default(daemon: RunningDaemon) -> None:
    grid = tune.Tuner(
        curves,
        param_space={"x": tune.grid_search([1, 2]), "opt": {"lr": 0.5}},
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    experiment = str(Path(grid[0].path).parent)
    wait_for_writer(experiment)
    for result in grid:
        x = result.config["x"]
        [events_file] = glob.glob(os.path.join(result.path, "events.out.tfevents.*"))
        assert os.path.getsize(events_file) > 0
        acc = read(result.path)
        assert scalars(acc, "ray/tune/loss") == [(1, 0.0), (2, x), (3, 2.0 * x)]
        assert scalars(acc, "ray/tune/nested/acc") == [(1, 0.0), (2, 0.1), (3, 0.2)]
        tags = acc.Tags()
        assert "ray/tune/hist" in tags["histograms"]
        # not worth a curve (Ray drops them), and strings are no scalars
        assert not {"ray/tune/training_iteration", "ray/tune/pid", "ray/tune/name"} & set(
            tags["scalars"]
        )
        assert not [t for t in tags["scalars"] if t.startswith("ray/tune/config")]
        assert hparams(acc) == {"x": x, "opt/lr": 0.5}
    # the driver wrote nothing itself: one writer, started for this experiment, now gone
    log = Path(experiment, ".tensorboard.log")
    assert log.read_text() == ""


def test_nothing_is_written_with_tune_disable_auto_callback_loggers(
    daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    [result] = tune.Tuner(curves, param_space={"x": 1}, run_config=tune.RunConfig(verbose=0)).fit()
    assert not glob.glob(os.path.join(result.path, "events.out.tfevents.*"))
    assert not Path(result.path).parent.joinpath(".tensorboard.lock").exists()
    assert (Path(result.path) / "result.json").exists()  # the daemon's files are still there


def test_ray_a_tbx_logger_callback_passed_in_writes_from_the_script(
    daemon: RunningDaemon,
) -> None:
    callbacks: list[Any] = [TBXLoggerCallback(), CSVLoggerCallback(), JsonLoggerCallback()]
    [result] = tune.Tuner(
        curves, param_space={"x": 3}, run_config=tune.RunConfig(verbose=0, callbacks=callbacks)
    ).fit()
    # written and closed before fit() returned, by this process: no writer process
    assert not Path(result.path).parent.joinpath(".tensorboard.lock").exists()
    assert scalars(read(result.path), "ray/tune/loss") == [(1, 0.0), (2, 3.0), (3, 6.0)]
    # CSV and JSON loggers are accepted and leave the daemon's files single
    rows = (Path(result.path) / "result.json").read_text().splitlines()
    assert len(rows) == 3
    assert len((Path(result.path) / "progress.csv").read_text().splitlines()) == 4


class Seen(LoggerCallback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def log_trial_start(self, trial: Any) -> None:
        self.calls.append(("start", trial.trial_id))

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        self.calls.append(("result", result["training_iteration"]))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self.calls.append(("end", failed))


def boom(config: dict[str, Any]) -> None:
    tune.report({"loss": 1.0})
    if config["fail"]:
        raise ValueError("boom")


def test_ray_logger_callback_hooks_call_the_log_methods(daemon: RunningDaemon) -> None:
    seen = Seen()
    tune.Tuner(
        boom, param_space={"fail": tune.grid_search([False, True])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(verbose=0, callbacks=[seen]),
    ).fit()  # fmt: skip
    assert [c for c in seen.calls if c[0] != "start"] == [
        ("result", 1), ("end", False), ("result", 1), ("end", True),
    ]  # fmt: skip
    assert [c[0] for c in seen.calls].count("start") == 2


WAITING = textwrap.dedent(
    """
    import os, sys
    from tuned_client import tune

    FIFOS = sys.argv[1]

    def waits(config):
        tune.report({"loss": 1.0})
        with open(os.path.join(FIFOS, str(config["x"]))) as f:  # until the test says go
            f.read()
        tune.report({"loss": 2.0})
        tune.report({"loss": 3.0})

    tune.Tuner(waits, param_space={"x": tune.grid_search([0, 1])},
               run_config=tune.RunConfig(verbose=0)).fit()
    """
)


def test_files_keep_coming_after_the_script_is_gone(daemon: RunningDaemon, tmp_path: Path) -> None:
    for x in (0, 1):
        os.mkfifo(tmp_path / str(x))
    script = tmp_path / "detached.py"
    script.write_text(WAITING)
    with daemon.connect() as events:
        events.send(p.Subscribe())
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)], env=daemon.env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            first = wait_for(events, p.TrialResult)
            wait_for(events, p.TrialResult)  # both trials have reported once
        finally:
            proc.send_signal(signal.SIGKILL)  # the script dies as with a closed terminal
            proc.wait()
        for x in (0, 1):  # let the trials go on: the daemon finishes the experiment
            with open(tmp_path / str(x), "w"):
                pass
        wait_for(events, p.ExperimentFinished)
    with daemon.connect() as conn:
        reply = conn.request(p.GetExperiment(experiment_id=first.experiment_id))  # type: ignore[attr-defined]
    wait_for_writer(reply.path)
    for info in reply.trials:
        assert scalars(read(info.path), "ray/tune/loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_tuned_tensorboard_writes_command_trials_files_afterwards(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    report = "from tuned_client import tune; [tune.report({'loss': 1.0 / i}) for i in (1, 2)]"
    submit = subprocess.run(
        [sys.executable, "-m", "tuned", "submit", "--json", "--wait", "--grid", "k=1,2", "--",
         sys.executable, "-c", report],
        env=daemon.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    experiment = json.loads(submit.stdout.splitlines()[0])["experiment_id"]
    out = subprocess.run(
        [sys.executable, "-m", "tuned", "tensorboard", experiment],
        env=daemon.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "TensorBoard files for 2 trials" in out.stdout and "tensorboard --logdir" in out.stdout
    with daemon.connect() as conn:
        reply = conn.request(p.GetExperiment(experiment_id=experiment))
    assert isinstance(reply, p.ExperimentReply)
    for info in reply.trials:
        acc = read(info.path)
        assert scalars(acc, "ray/tune/loss") == [(1, 1.0), (2, 0.5)]
        assert hparams(acc)["k"] in (1, 2)
    again = subprocess.run(
        [sys.executable, "-m", "tuned", "tensorboard", experiment],
        env=daemon.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert again.returncode == 0
    for info in reply.trials:  # run again: nothing written twice
        assert len(glob.glob(os.path.join(info.path, "events.out.tfevents.*"))) == 1


# Ray's test_logger.py (testTBX, testBadTBX), import swapped; its Trial stand-in has
# the attributes a logger reads (Ray's newer ones: local_path for logdir).
class Trial:
    def __init__(self, evaluated_params: dict[str, Any], trial_id: str, local_path: str) -> None:
        self.evaluated_params, self.trial_id, self.local_path = (
            evaluated_params, trial_id, local_path,
        )  # fmt: skip

    @property
    def config(self) -> dict[str, Any]:
        return self.evaluated_params

    def __hash__(self) -> int:
        return hash(self.trial_id)


def result(t: float, rew: float, **kwargs: Any) -> dict[str, Any]:
    return dict(time_total_s=t, episode_reward_mean=rew, mean_accuracy=rew * 2,
                training_iteration=int(t), **kwargs)  # fmt: skip


def _raw_events(folder: Path) -> list[Any]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    [path] = glob.glob(f"{folder}/events*")
    return list(EventFileLoader(path).Load())


def test_ray_tbx(tmp_path: Path) -> None:
    import numpy as np

    config = {
        "a": 2, "b": [1, 2], "c": {"c": {"D": 123}}, "int32": np.int32(1), "int64": np.int64(2),
        "bool8": np.bool_(True), "float32": np.float32(3), "float64": np.float64(4),
        "bad": np.longdouble(4),
    }  # fmt: skip
    t = Trial(evaluated_params=config, trial_id="tbx", local_path=str(tmp_path))
    logger = TBXLoggerCallback()
    logger.on_trial_result(0, [], t, result(0, 4))
    logger.on_trial_result(1, [], t, result(1, 5))
    logger.on_trial_result(2, [], t, result(2, 6, score=[1, 2, 3], hello={"world": 1}))
    logger.on_trial_complete(3, [], t)

    rewards = []
    hparams_seen = 0
    for event in _raw_events(tmp_path):
        for v in event.summary.value:
            if v.tag == "ray/tune/episode_reward_mean":
                # TensorBoard's loader turns simple values into tensors
                rewards.append(v.tensor.float_val[0] if v.HasField("tensor") else v.simple_value)
            elif v.tag in ("_hparams_/experiment", "_hparams_/session_start_info"):
                hparams_seen += 1
                content = v.metadata.plugin_data.content
                for key in (b"float32", b"float64", b"int32", b"int64", b"bool8"):
                    assert key in content
                assert b"bad" not in content
    assert [int(r) for r in rewards] == [4, 5, 6]
    assert hparams_seen == 2


def test_ray_bad_tbx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = Trial(evaluated_params={"b": (1, 2, 3)}, trial_id="tbx", local_path=str(tmp_path))
    logger = TBXLoggerCallback()
    logger.on_trial_result(0, [], t, result(0, 4))
    logger.on_trial_result(1, [], t, result(1, 5))
    logger.on_trial_result(2, [], t, result(2, 6, score=[1, 2, 3], hello={"world": 1}))
    with caplog.at_level("INFO", logger="tuned_client.tune.logger"):
        logger.on_trial_complete(3, [], t)
    assert any(
        r.levelname == "INFO" and "Removed the following hyperparameter" in r.getMessage()
        for r in caplog.records
    )


def test_tuned_tensorboard_refuses_an_unknown_experiment_in_one_line(
    daemon: RunningDaemon,
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tuned", "tensorboard", "nope0"],
        env=daemon.env(), capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("tuned: ") and len(out.stderr.splitlines()) == 1
    assert "nope0" in out.stderr

"""``tune.Callback`` hooks in Ray's order with Ray's arguments, and the console Ray prints.

Ports of Ray's ``test_callbacks.py`` ideas (setup's arguments, hook order, an
exception ends the run) and of ``test_progress_reporter.py`` (the status block,
CLIReporter's options), with the import swapped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, next_event
from tuned_client import protocol as p
from tuned_client import tune


def three_steps(config: dict[str, Any]) -> None:
    for i in range(3):
        if i == 1:
            with_checkpoint(i)
        else:
            tune.report({"loss": config["x"] + i})


def with_checkpoint(i: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "s").write_text(str(i))
        tune.report({"loss": float(i)}, checkpoint=tune.Checkpoint.from_directory(folder))


class Recorder(tune.Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def setup(
        self, stop: Any = None, num_samples: Any = None, total_num_samples: Any = None, **info: Any
    ) -> None:
        self.calls.append(("setup", (stop, num_samples, total_num_samples)))

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.calls.append(("on_step_begin", iteration))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.calls.append(("on_step_end", iteration))

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.calls.append(("on_trial_start", trial.trial_id))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.calls.append(("on_trial_result", result["training_iteration"]))

    def on_trial_save(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.calls.append(("on_trial_save", trial.trial_id))

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        self.calls.append(("on_checkpoint", Path(checkpoint.path).name))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.calls.append(("on_trial_complete", trial.status))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.calls.append(("on_experiment_end", len(trials)))


def test_ray_callback_hooks_come_in_rays_order_with_rays_arguments(daemon: RunningDaemon) -> None:
    rec = Recorder()
    tune.Tuner(
        three_steps,
        param_space={"x": 1.0},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(callbacks=[rec], stop={"training_iteration": 10}, verbose=0),
    ).fit()
    assert rec.calls[0] == ("setup", ({"training_iteration": 10}, 1, 1))
    hooks = [name for name, _ in rec.calls if not name.startswith("on_step")]
    assert hooks == [
        "setup", "on_trial_start", "on_trial_result", "on_trial_save", "on_checkpoint",
        "on_trial_result", "on_trial_result", "on_trial_complete", "on_experiment_end",
    ]  # fmt: skip
    steps = [(n, i) for n, i in rec.calls if n.startswith("on_step")]
    assert steps[0] == ("on_step_begin", 0) and steps[1] == ("on_step_end", 1)  # grows before end
    assert ("on_checkpoint", "checkpoint_000000") in rec.calls


class Exploding(tune.Callback):
    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        raise RuntimeError("boom from a callback")


def test_ray_an_exception_in_a_callback_ends_fit(daemon: RunningDaemon) -> None:
    tuner = tune.Tuner(three_steps, param_space={"x": 1.0}, run_config=tune.RunConfig(
        callbacks=[Exploding()], verbose=0))  # fmt: skip
    with pytest.raises(RuntimeError, match="boom from a callback"):
        tuner.fit()


def chatty(config: dict[str, Any]) -> None:
    print("hello from", config["x"], flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    tune.report({"loss": float(config["x"])})
    if config["x"] == 2:
        raise ValueError("bad x")


def test_the_console_as_ray_2_prints_it(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    tune.Tuner(
        chatty,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
    ).fit()
    out, err = capsys.readouterr()
    assert "Trial status: 1 TERMINATED | 1 ERROR" in out
    assert "Current best trial: " in out and "with loss=1.0 and params={'x': 1}" in out
    assert "Logical resource usage:" in out
    assert "(chatty pid=" in out and ") hello from 1" in out
    assert ") to stderr" in err
    assert "ValueError: bad x" in err and "Error file: " in err and "error.txt" in err
    table = [line for line in out.splitlines() if line.startswith(("│", "╭", "├", "╰"))]
    assert max(len(line) for line in table) <= 80


def test_verbose_0_and_log_to_file_print_nothing(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    [result] = tune.Tuner(
        chatty, param_space={"x": 1}, run_config=tune.RunConfig(verbose=0, log_to_file=True)
    ).fit()
    out, err = capsys.readouterr()
    assert out == "" and "hello" not in err
    assert "hello from 1" in (Path(result.path) / "stdout").read_text()


def test_ray_cli_reporter_with_its_options(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    reporter = tune.CLIReporter(
        metric_columns={"loss": "L"}, parameter_columns=["x"], max_progress_rows=1
    )
    tune.Tuner(
        chatty,
        param_space={"x": tune.grid_search([1, 3])},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(progress_reporter=reporter),
    ).fit()
    out = capsys.readouterr().out
    assert "== Status ==" in out and "Using FIFO scheduling algorithm." in out
    assert "| L " in out.replace("|  L", "| L") or " L " in out
    assert "Current best trial: " in out and "with loss=1.0" in out


def test_the_scheduler_is_named(daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    from tuned_client.tune.schedulers import ASHAScheduler

    tune.Tuner(
        chatty,
        param_space={"x": tune.grid_search([1, 3])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=ASHAScheduler()),
    ).fit()
    assert "AsyncHyperBandScheduler" in capsys.readouterr().out  # ASHAScheduler's real name


WAITER = textwrap.dedent(
    """
    import threading
    from tuned_client import tune

    def slow(config):
        tune.report({"i": 0})
        threading.Event().wait()  # runs until the daemon goes

    tune.Tuner(slow, run_config=tune.RunConfig(verbose=0)).fit()
    """
)


def test_a_daemon_stopped_under_fit_is_said_at_once(daemon: RunningDaemon, tmp_path: Path) -> None:
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    env = {**daemon.env(), "TUNED_RECONNECT_TIMEOUT": "300"}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        with daemon.connect() as conn:
            conn.send(p.Subscribe(experiment_id="", since=-1))
            next_event(conn, p.TrialResult)
        daemon.stop(signal.SIGTERM)
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first thing it says, as soon as the daemon is gone
        assert "the daemon was stopped while fit() ran" in line
    finally:
        proc.kill()
        proc.wait()

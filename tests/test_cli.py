"""The ``tuned`` command as people and scripts use it: a real CLI subprocess, a real daemon."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, tuned, tuned_bg
from gates import GATE_WAIT, Gate, wait_until

PY = sys.executable


def json_lines(proc: subprocess.Popen[str]) -> Iterator[dict[str, Any]]:
    assert proc.stdout is not None
    for line in proc.stdout:
        yield json.loads(line)


def read_until(
    proc: subprocess.Popen[str], done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Events from a ``tail --json`` process up to and including the first ``done`` one."""
    seen = []
    for ev in json_lines(proc):
        seen.append(ev)
        if done(ev):
            return seen
    raise AssertionError(f"the stream ended first: {proc.stderr.read() if proc.stderr else ''}")


def submit(d: RunningDaemon, *args: str) -> dict[str, Any]:
    out = tuned(d, "submit", "--json", *args)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[0])
    return result


def status_json(d: RunningDaemon) -> dict[str, Any]:
    out = tuned(d, "status", "--json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_status_shows_running_trials_and_cancel_returns_the_ledger(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "never")  # the trial runs until cancelled
    exp = submit(daemon, "--cpu", "1", "--gpu", "0.5", "--", PY, "-c", GATE_WAIT, str(gate))
    tail = tuned_bg(daemon, "tail", "--json", exp["experiment_id"])
    started = read_until(tail, lambda e: e["kind"] == "trial_started")[-1]

    st = status_json(daemon)
    [running] = st["running"]
    assert running["trial_id"] == exp["trial_ids"][0] and running["pid"] == started["pid"]
    assert running["resources"] == {"cpu": 1.0, "gpu": 0.5}
    assert running["gpu_ids"] == "0" and running["rss"] > 0
    assert st["gpus"][0]["used"] == 0.5
    assert {r["name"]: r["used"] for r in st["resources"]}["cpu"] == 1.0
    text = tuned(daemon, "status").stdout
    assert f"{started['pid']}" in text and "cpu=1 gpu=0.5" in text
    assert "0.50 allocated" in text and "1 RUNNING" in text

    out = tuned(daemon, "cancel", exp["experiment_id"])
    assert out.returncode == 0 and f"cancelled {exp['experiment_id']}" in out.stdout
    end = read_until(tail, lambda e: e["kind"] == "experiment_finished")
    assert tail.wait(timeout=10) == 0  # tail EXPERIMENT ends with it
    assert [e["status"] for e in end if e["kind"] == "trial_finished"] == ["ERROR"]
    assert end[-1]["cancelled"] is True
    st = status_json(daemon)
    assert st["running"] == [] and all(r["used"] == 0 for r in st["resources"])
    assert st["gpus"][0]["used"] == 0


def test_unknown_ids_get_clear_errors(daemon: RunningDaemon) -> None:
    for cmd, expected in (
        ("cancel", "no experiment or trial 'nope'"),
        ("logs", "no trial 'nope'"),
        ("tail", "no experiment 'nope'"),
    ):
        out = tuned(daemon, cmd, "nope")
        assert out.returncode == 1, (cmd, out)
        assert expected in out.stderr and "Traceback" not in out.stderr


def test_tail_json_streams_every_event_of_an_experiment_in_order(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    everything = tuned_bg(daemon, "tail", "--json", "--since", "0")
    script = tmp_path / "steps.py"
    script.write_text(
        "import sys\nfrom tuned_client import tune\n"
        "for i in range(3):\n    tune.report({'loss': float(sys.argv[1]) * (3 - i)})\n"
    )
    exp = submit(daemon, "--cpu", "1", "--grid", "x=1,2,3,4", "--", PY, str(script), "{x}")
    exp_id = exp["experiment_id"]
    one = tuned_bg(daemon, "tail", "--json", exp_id)  # started while it runs; ends with it
    mine = list(json_lines(one))
    assert one.wait(timeout=30) == 0

    every = read_until(everything, lambda e: e["kind"] == "experiment_finished")
    everything.kill()
    seqs = [e["seq"] for e in every]
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps, in order
    assert mine == [e for e in every if e["experiment_id"] == exp_id]
    kinds = [e["kind"] for e in mine]
    assert kinds[0] == "experiment_accepted" and kinds[-1] == "experiment_finished"
    assert kinds.count("trial_queued") == 4 and kinds.count("trial_started") == 4
    assert kinds.count("trial_result") == 12 and kinds.count("trial_finished") == 4
    queued = [e["config"] for e in mine if e["kind"] == "trial_queued"]
    assert queued == [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]  # user values as JSON objects
    losses = [e["metrics"]["loss"] for e in mine if e["kind"] == "trial_result"]
    assert sorted(losses) == sorted(float(x) * k for x in (1, 2, 3, 4) for k in (1, 2, 3))


def test_tail_without_a_terminal_prints_a_line_per_event(daemon: RunningDaemon) -> None:
    exp = submit(daemon, "--cpu", "1", "--", "true")
    out = tuned(daemon, "tail", exp["experiment_id"])
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 5, out
    assert "accepted" in lines[0] and "queued" in lines[1] and "started pid" in lines[2]
    assert lines[3].endswith("TERMINATED") and "finished (1 TERMINATED)" in lines[4]


def test_submit_runs_a_command_that_reports_metrics(daemon: RunningDaemon, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\nfrom tuned_client import tune\n"
        "lr = float(sys.argv[2])\n"
        "for step in range(3):\n"
        "    print('step', step, flush=True)\n"
        "    tune.report({'loss': lr * (3 - step), 'step': step})\n"
    )
    out = tuned(daemon, "submit", "--cpu", "0.5", "--wait", "--", PY, str(script), "--lr", "0.5")
    assert out.returncode == 0, out.stderr
    trial_id = out.stdout.split("trial ")[1].split()[0]
    assert "TERMINATED" in out.stderr  # --wait follows it
    path = Path(json.loads(tuned(daemon, "ls", "--json").stdout)[0]["path"])
    [trial_dir] = [p for p in path.iterdir() if p.is_dir()]
    rows = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [1.5, 1.0, 0.5]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    assert all(r["trial_id"] == trial_id for r in rows)

    logs = tuned(daemon, "logs", trial_id)
    assert logs.returncode == 0 and logs.stdout == "step 0\nstep 1\nstep 2\n"


def test_a_failing_command_is_an_error_with_its_exit_code(daemon: RunningDaemon) -> None:
    out = tuned(daemon, "submit", "--wait", "--", "sh", "-c", "echo bad input >&2; exit 3")
    assert out.returncode == 1
    assert "ERROR: the trial process exited with code 3" in out.stderr
    trial_id = out.stdout.split("trial ")[1].split()[0]
    assert tuned(daemon, "logs", "--stderr", trial_id).stdout == "bad input\n"


def test_a_grid_queues_one_command_per_combination(daemon: RunningDaemon) -> None:
    show = "import sys, json; print(json.dumps(sys.argv[1:]))"
    out = tuned(
        daemon, "submit", "--wait", "--cpu", "0.5", "--grid", "lr=0.1,1e-3", "--grid", "bs=8,16",
        "--", PY, "-c", show, "--lr", "{lr}", "--bs", "{bs}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    trial_ids = [line.split()[1] for line in out.stdout.splitlines() if "trial " in line]
    assert len(trial_ids) == 4
    argvs = [json.loads(tuned(daemon, "logs", t).stdout) for t in trial_ids]
    assert argvs == [["--lr", lr, "--bs", bs] for lr in ("0.1", "1e-3") for bs in ("8", "16")]
    exp_path = Path(json.loads(tuned(daemon, "ls", "--json").stdout)[0]["path"])
    params = [json.loads((d / "params.json").read_text()) for d in exp_path.iterdir() if d.is_dir()]
    assert len(params) == 4  # numbers stay numbers where they read back as typed
    assert {"lr": 0.1, "bs": 8} in params and {"lr": "1e-3", "bs": 16} in params


def test_braces_are_placeholders_only_for_grid_names(daemon: RunningDaemon) -> None:
    report = "from tuned_client import tune; tune.report({'answer': 42})"
    out = tuned(daemon, "submit", "--wait", "--", PY, "-c", report)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in _result_lines(daemon)]
    assert [r["answer"] for r in rows] == [42]
    show = "import sys, json; print(json.dumps(sys.argv[1:]))"
    args = ['{"lr": {lr}}', "{print $1}", "{{x}}", "{other}"]
    out = tuned(daemon, "submit", "--wait", "--grid", "lr=0.5", "--", PY, "-c", show, *args)
    assert out.returncode == 0, out.stderr
    note = out.stderr.splitlines()[0]
    assert "{other}" in note and "names no --grid key: passed as typed" in note
    trial_id = out.stdout.split("trial ")[1].split()[0]
    assert f"{trial_id}  {PY} -c {show} " + '{"lr": 0.5}' in out.stdout
    assert json.loads(tuned(daemon, "logs", trial_id).stdout) == [
        '{"lr": 0.5}',
        "{print $1}",
        "{{x}}",
        "{other}",
    ]


def _result_lines(daemon: RunningDaemon) -> list[str]:
    exp_path = Path(json.loads(tuned(daemon, "ls", "--json").stdout)[0]["path"])
    return [line for f in exp_path.glob("*/result.json") for line in f.read_text().splitlines()]


def test_submit_refuses_what_it_cannot_run(daemon: RunningDaemon) -> None:
    out = tuned(daemon, "submit", "--metric", "loss", "--", "true")
    assert out.returncode == 1 and "--metric and --mode go together" in out.stderr
    out = tuned(daemon, "submit", "--gpu", "2", "--", "true")
    assert out.returncode == 1 and "gpu" in out.stderr
    assert tuned(daemon, "submit").returncode == 1
    assert json.loads(tuned(daemon, "ls", "--json").stdout) == []


def test_logs_follow_streams_until_the_trial_ends(daemon: RunningDaemon, tmp_path: Path) -> None:
    gate = Gate(tmp_path / "go")
    code = "print('first', flush=True)\n" + GATE_WAIT
    code += "print('second', flush=True)\n"
    exp = submit(daemon, "--", PY, "-c", code, str(gate))
    tail = tuned_bg(daemon, "tail", "--json", exp["experiment_id"])
    read_until(tail, lambda e: e["kind"] == "trial_started")
    follow = tuned_bg(daemon, "logs", "-f", exp["trial_ids"][0])
    assert follow.stdout is not None
    assert follow.stdout.readline() == "first\n"  # shown while the trial still runs
    gate.open()
    rest, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert rest == "second\n"
    tail.kill()


# A trial reporting six metrics, then (all but the first) waiting for a file.
REPORT_THEN_WAIT = """import fcntl, sys
from tuned_client import tune
i = float(sys.argv[2])
tune.report({"loss": i, "accuracy": 1 - i / 10, "validation_loss": i + 1,
             "learning_rate_now": i / 100, "epoch_seconds": 1.5, "gradient_norm": 2.0})
if i:
    with open(sys.argv[1]) as gate: fcntl.flock(gate, fcntl.LOCK_SH)
"""
METRICS = ("loss", "accuracy", "validation_loss", "learning_rate_now", "epoch_seconds")


def test_status_shows_best_trial_eta_and_every_metric_in_80_columns(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "go")
    exp = submit(
        daemon, "--name", "six-metrics-sweep", "--metric", "loss", "--mode", "min",
        "--grid", "i=0,2,1", "--", PY, "-c", REPORT_THEN_WAIT, str(gate), "{i}",
    )  # fmt: skip
    tail = tuned_bg(daemon, "tail", "--json", exp["experiment_id"])
    seen: dict[str, int] = {}

    def reported_and_one_ended(e: dict[str, Any]) -> bool:
        seen[e["kind"]] = seen.get(e["kind"], 0) + 1
        return seen.get("trial_result", 0) == 3 and seen.get("trial_finished", 0) == 1

    read_until(tail, reported_and_one_ended)
    out = subprocess.run(
        [PY, "-m", "tuned", "status", "--socket", str(daemon.socket)],
        env={**daemon.env(), "COLUMNS": "80"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, out.stdout
    best = exp["trial_ids"][0]  # i=0: the lowest loss, and already finished
    assert f"best {best}  loss=0 (min)  i=0" in out.stdout
    assert "1/3 done, ETA " in out.stdout and "ETA ?" not in out.stdout
    for name in (*METRICS, "gradient_norm"):
        assert name in out.stdout, name
    gate.open()
    read_until(tail, lambda e: e["kind"] == "experiment_finished")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="the live view is driven in tmux")
def test_the_live_view_in_a_terminal(daemon: RunningDaemon, tmp_path: Path) -> None:
    gate = Gate(tmp_path / "go")
    exp = submit(
        daemon, "--name", "live", "--metric", "loss", "--mode", "min", "--grid", "i=0,2,1",
        "--", PY, "-c", REPORT_THEN_WAIT, str(gate), "{i}",
    )  # fmt: skip
    # A tmux server of this test's own (its socket, no config): never the user's sessions.
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock"), "-f", "/dev/null"]
    command = f"{PY} -m tuned tail --socket {daemon.socket} {exp['experiment_id']}"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "live", "-x", "80", "-y", "40",
         f"{command}; echo TAIL-EXITED-$?; sleep 600"],
        check=True, env={k: v for k, v in daemon.env().items() if k != "TMUX"},
    )  # fmt: skip
    try:

        def pane_shows(text: str) -> str:
            screen = [""]

            def shows() -> str:
                screen[0] = subprocess.run(
                    [*tmux, "capture-pane", "-p", "-t", "live"], capture_output=True, text=True
                ).stdout
                return screen[0] if text in screen[0] else ""

            try:  # another process's screen: polled, nothing to await
                return wait_until(shows, f"{text!r} on the screen", timeout=60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; it shows:\n{screen[0]}") from None

        pane = pane_shows("2 RUNNING, 1 TERMINATED")
        assert pane.count("== Status ==") == 1  # redrawn in place, not scrolled
        assert "[##########....................] 1/3 done" in pane
        assert "Number of trials: 3/3 (2 RUNNING, 1 TERMINATED)" in pane
        assert f"best {exp['trial_ids'][0]}  loss=0 (min)  i=0" in pane
        assert "(running)  ETA 0:" in pane
        for name in (*METRICS, "gradient_norm"):  # every metric, in 80 columns
            assert name in pane, name
        gate.open()
        pane = pane_shows("TAIL-EXITED-0")
        assert "3/3 done  (3 TERMINATED)" in pane and pane.count("== Status ==") == 1
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


def test_tail_of_everything_follows_until_ctrl_c(daemon: RunningDaemon) -> None:
    tail = tuned_bg(daemon, "tail", "--json", "--since", "0")  # no race with the submit
    exp = submit(daemon, "--", "true")
    ev = read_until(tail, lambda e: e["kind"] == "experiment_finished")[-1]
    assert ev["experiment_id"] == exp["experiment_id"]
    assert tail.poll() is None  # still following: another experiment may come
    tail.send_signal(signal.SIGINT)
    assert tail.wait(timeout=10) == 0
    assert tail.stderr is not None and "Traceback" not in tail.stderr.read()

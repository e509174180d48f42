"""End to end: the seed's basic experiment and the foundations under it, against a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, RunningDaemon
from gates import Barrier
from tuned_client import tune

EXAMPLE = REPO / "examples" / "basic_experiment.py"


def test_seed_example_prints_its_first_three_results(daemon: RunningDaemon) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=daemon.env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Trial status: 100 TERMINATED" in out.stdout  # Ray Tune 2.x's status block
    results = [line for line in out.stdout.splitlines() if line.startswith("Result(")]
    assert len(results) == 3
    for i, line in enumerate(results):
        assert f"'score': 'model_{i}'" in line
        assert "'other_data': Ellipsis" in line
        assert f"'experiment_tag': '{i}_model_id=model_{i}'" in line
        assert "error=None" in line


def train_reporting(config: dict) -> None:
    for step in range(3):
        tune.report({"loss": config["x"] * (3 - step)})


def test_results_are_laid_out_as_ray_tune_users_know(daemon: RunningDaemon) -> None:
    tuner = tune.Tuner(
        train_reporting,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(name="layout", verbose=0),
    )
    results = tuner.fit()
    assert results.num_terminated == 2 and results.num_errors == 0
    best = results.get_best_result()
    assert best.config == {"x": 1} and best.metrics["loss"] == 1
    assert best.metrics["training_iteration"] == 3 and best.metrics["done"] is True
    trial_dir = Path(best.path)
    assert trial_dir.parent == daemon.storage / "layout"
    assert json.loads((trial_dir / "params.json").read_text()) == {"x": 1}
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    assert [r["loss"] for r in rows] == [3, 2, 1]
    assert {"trial_id", "timestamp", "time_total_s", "done", "pid"} <= rows[0].keys()
    csv_lines = (trial_dir / "progress.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[0] == "loss" and len(csv_lines) == 4
    assert results.get_best_result(scope="all").config == {"x": 1}


def train_failing(config: dict) -> None:
    if config["fail"]:
        raise ValueError(f"bad value {config['fail']}")
    tune.report({"ok": 1})


def test_a_failing_trainable_gives_an_error_result_with_its_traceback(
    daemon: RunningDaemon,
) -> None:
    results = tune.Tuner(
        train_failing,
        param_space={"fail": tune.grid_search([0, 7])},
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert results.num_errors == 1 and results.num_terminated == 1
    failed = next(r for r in results if r.error is not None)
    assert "ValueError: bad value 7" in str(failed.error)
    assert "train_failing" in str(failed.error)  # the traceback names the function
    error_txt = (Path(failed.path) / "error.txt").read_text()
    assert "ValueError: bad value 7" in error_txt and "Traceback" in error_txt


def test_impossible_requests_are_refused_at_submit(daemon: RunningDaemon) -> None:
    trainable = tune.with_resources(train_reporting, {"gpu": 2})
    with pytest.raises(tune.TuneError, match=r"2 gpu.*1 gpu"):
        tune.Tuner(trainable, param_space={"x": 1}).fit()
    trainable = tune.with_resources(train_reporting, {"tpu": 1})
    with pytest.raises(tune.TuneError, match="tpu"):
        tune.Tuner(trainable, param_space={"x": 1}).fit()


SPAN_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from gates import arrive
from tuned_client import tune

OUT, BARRIER = sys.argv[1], sys.argv[2:]

def trial(config):
    start = time.time()
    if BARRIER:  # the first two trials wait for each other, whoever submitted them
        arrive(BARRIER[0])
    with open(os.path.join(OUT, f"{{config['i']}}-{{os.getpid()}}"), "w") as f:
        f.write(f"{{start}} {{time.time()}}")
    return {{"i": config["i"]}}

r = tune.Tuner(trial, param_space={{"i": tune.grid_search(list(range({n})))}},
               run_config=tune.RunConfig(verbose=0)).fit()
assert r.num_terminated == {n}, r.errors
"""
TESTS = str(Path(__file__).parent)


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = live = 0
    for _, delta in points:
        live += delta
        peak = max(peak, live)
    return peak


def read_spans(folder: Path) -> list[tuple[float, float]]:
    out = []
    for f in folder.iterdir():
        start, end = f.read_text().split()
        out.append((float(start), float(end)))
    return out


@pytest.mark.daemon_args("--num-cpus", "2")
def test_two_clients_at_once_share_one_ledger(daemon: RunningDaemon, tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    spans.mkdir()
    script = tmp_path / "client.py"
    script.write_text(SPAN_SCRIPT.format(n=4, tests=TESTS))
    barrier = Barrier(tmp_path / "barrier", 2)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(spans), str(barrier.folder)], env=daemon.env()
            )
            for _ in range(2)
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
    finally:
        barrier.close()
    found = read_spans(spans)
    assert len(found) == 8
    assert peak_overlap(found) == 2  # two CPUs, one each: never more than two at once


def test_the_client_starts_a_daemon_and_the_next_run_reuses_it(tmp_path: Path) -> None:
    """Nothing set: the socket, state and results go where a user's would (this test's HOME)."""
    env = {**os.environ, "TUNED_IDLE_TIMEOUT": "60"}
    sock = Path(os.environ["XDG_RUNTIME_DIR"]) / "tuned" / "tuned.sock"
    state = Path(os.environ["XDG_STATE_HOME"]) / "tuned"
    script = tmp_path / "client.py"
    script.write_text(SPAN_SCRIPT.format(n=2, tests=TESTS))
    spans = tmp_path / "spans"
    spans.mkdir()
    pids = []
    try:
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, str(script), str(spans)], env=env, capture_output=True,
                text=True, timeout=120,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            pids.append(int((state / "tuned.pid").read_text()))
        assert pids[0] == pids[1]
        os.kill(pids[0], 0)  # still alive for the next run
        assert sock.is_socket()
    finally:
        subprocess.run([sys.executable, "-m", "tuned", "stop"], env=env)
    assert not (state / "tuned.pid").exists()
    assert len(list((Path.home() / "tuned_results").glob("*/*/result.json"))) == 4

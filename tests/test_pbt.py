"""Population based training through a real daemon: checkpoints copied, configs explored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, first_of_each, restart_daemon, start_script
from gates import Gate
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune.schedulers import PopulationBasedTraining
from tuned_client.tune.schedulers.pbt import explore

STEPS = 16
THRESHOLD = 4.0


def gain(lr: float, theta: float) -> float:
    """A fast rate pays before THRESHOLD, a slow one after: no fixed lr is best throughout."""
    return lr if theta < THRESHOLD else 1.0 - lr


def best_fixed(lrs: list[float]) -> float:
    best = 0.0
    for lr in lrs:
        theta = 0.0
        for _ in range(STEPS):
            theta += gain(lr, theta)
        best = max(best, theta)
    return best


def trainable(config: dict[str, Any]) -> None:
    theta, step, origin = 0.0, 0, tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / "state.json").read_text())
        theta, step, origin = state["theta"], state["step"], state["trial"]
    while step < STEPS:
        time.sleep(0.04)
        theta += gain(config["lr"], theta)
        step += 1
        with tempfile.TemporaryDirectory() as folder:
            me = tune.get_context().get_trial_id()
            (Path(folder) / "state.json").write_text(
                json.dumps({"theta": theta, "step": step, "trial": me})
            )
            tune.report(
                {"theta": theta, "step": step, "restored_from": origin},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


@pytest.mark.daemon_args("--num-cpus", "4")
def test_pbt_population_beats_every_fixed_config(daemon: RunningDaemon) -> None:
    lrs = [0.1, 0.9]
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_mutations={"lr": lrs},
        quantile_fraction=0.5,
        resample_probability=0.5,
        seed=1,
    )
    results = tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search(lrs)},
        tune_config=tune.TuneConfig(metric="theta", mode="max", scheduler=pbt, num_samples=2),
        run_config=tune.RunConfig(name="pbt", verbose=0, stop={"step": STEPS}),
    ).fit()
    assert len(results) == 4 and results.num_errors == 0
    best = results.get_best_result()
    assert best.metrics["theta"] > best_fixed(lrs) + 1.0, [r.metrics["theta"] for r in results]
    # a trial restarted from another trial's checkpoint, copied into its own folder
    own = {r.trial_id for r in results}
    rows = [row for r in results for row in r.history()]
    adopted = [row for row in rows if row["restored_from"] != row["trial_id"]]
    assert adopted and {row["restored_from"] for row in adopted} <= own
    for r in results:
        for folder in Path(r.path).glob("checkpoint_*"):
            assert folder.parent == Path(r.path) and (folder / "state.json").exists()
    assert not [p for r in results for p in Path(r.path).glob(".exploit_*")]
    assert os.path.exists(Path(best.path) / "params.json")


def test_explore_shifts_list_values_and_scales_numbers() -> None:
    import random

    rng = random.Random(0)
    seen = {explore({"lr": 0.1}, {"lr": [0.01, 0.1, 1.0]}, 0.0, (1.2, 0.8), None, rng)["lr"]
            for _ in range(50)}  # fmt: skip
    assert seen == {0.01, 1.0}
    scaled = explore({"x": 10.0}, {"x": tune.uniform(0, 100)}, 0.0, (1.2, 0.8), None, rng)
    assert scaled["x"] in (12.0, 8.0)
    with pytest.raises(tune.TuneError, match="hyperparam_mutations"):  # Ray's error
        PopulationBasedTraining()


EXPLOITED = """
import fcntl, json, os, sys, tempfile
from pathlib import Path
from tuned_client import tune

def train(config):
    checkpoint = tune.get_checkpoint()
    restored = (Path(checkpoint.path) / "who").read_text() if checkpoint else "none"
    folder = tempfile.mkdtemp(dir=config["dir"])
    (Path(folder) / "who").write_text(f"from trial {config['i']}")
    tune.report({"x": config["x"], "restored": restored}, checkpoint=tune.Checkpoint(folder))
    if restored == "none":  # the first attempts wait for the test
        with open(config["go"]) as go:
            fcntl.flock(go, fcntl.LOCK_SH)
    return {"x": config["x"], "restored": restored}

results = tune.Tuner(
    train,
    param_space={"i": tune.grid_search([0, 1]), "x": 1, "dir": sys.argv[1], "go": sys.argv[2]},
    run_config=tune.RunConfig(name="exploited", verbose=0),
).fit()
print(json.dumps({r.config["i"]: [r.metrics["x"], r.metrics["restored"]] for r in results}))
"""


@pytest.mark.daemon_args("--num-cpus", "2")
def test_an_acknowledged_exploit_survives_a_crash_before_the_attempt_ends(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """PBT restarts a running trial from a better one's checkpoint; the daemon dies first."""
    go = Gate(tmp_path / "go")
    run = start_script(
        daemon, tmp_path / "exploited.py", EXPLOITED, str(tmp_path), str(go),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with daemon.connect() as conn:
        conn.send(p.Subscribe(since=0))
        saved = first_of_each(conn, p.TrialCheckpoint, 2)  # both checkpointed, at their gate
    checkpoints = {trial_id: event.path for trial_id, event in saved.items()}
    donor, exploited = sorted(checkpoints)
    with daemon.connect() as conn:
        new_config = p.pack_user({"i": 1, "x": 99, "dir": str(tmp_path), "go": str(go)})
        reply = conn.request(
            p.RestartTrial(trial_id=exploited, config=new_config, checkpoint=checkpoints[donor])
        )
        assert isinstance(reply, p.Ok)  # acknowledged: it must survive what comes next
    daemon.stop(signal.SIGKILL)
    again = restart_daemon(daemon)
    try:
        go.open()
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
        final = json.loads(out.strip().splitlines()[-1])
        assert final["1"] == [99, "from trial 0"]  # the new config, from the donor's checkpoint
        assert final["0"] == [1, "from trial 0"]  # the donor resumed from its own
    finally:
        again.stop()


@pytest.mark.slow
@pytest.mark.daemon_args("--num-cpus", "4")
def test_pb2_explores_inside_its_bounds(
    daemon: RunningDaemon,
) -> None:
    pytest.importorskip("GPy", reason="PB2 needs the pb2 extra (GPy, scikit-learn)")
    from tuned_client.tune.schedulers import PB2

    pb2 = PB2(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_bounds={"lr": [0.1, 0.9]},
        quantile_fraction=0.5,
        seed=1,
    )
    lrs = [0.1, 0.9]
    results = tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search(lrs)},
        tune_config=tune.TuneConfig(metric="theta", mode="max", scheduler=pb2, num_samples=2),
        run_config=tune.RunConfig(name="pb2", verbose=0, stop={"step": STEPS}),
    ).fit()
    assert len(results) == 4 and results.num_errors == 0
    assert all(0.1 <= r.config["lr"] <= 0.9 for r in results)
    assert pb2._num_perturbations > 0 and len(pb2._rows) > 2
    with pytest.raises(ValueError, match="hyperparam_bounds"):
        PB2(metric="m", mode="max")

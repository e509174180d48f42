"""The Ray executor, against a real local Ray cluster, with the local executor's assertions.

A private Ray head (``raycluster.RayCluster``: its own temp dir and HOME, and
stopped alone, never with ``ray stop``) is started with ``--num-cpus 4
--num-gpus 1`` (the GPU is a fake count: Ray hands out its id like a real one)
and one daemon runs ``--executor ray`` against it for the whole module. The seed's basic experiment
and the resources guide's blocks then run through Ray with the very test bodies
that check the local executor, imported from their modules, plus what only a
cluster has: placement groups, nodes joining, a Ray worker killed under a trial.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import test_basic_experiment as basic
import test_faults as faults
import test_resources as resources
from conftest import (
    RunningDaemon,
    ledger_in_use,
    private_env,
    socket_path,
    start_daemon,
    temp_root,
    use_daemon,
)
from gates import wait_until
from raycluster import MAX_TEMP_DIR, RayCluster
from tuned_client import protocol as p
from tuned_client import tune

try:
    import ray  # noqa: F401
except ImportError:
    pytest.skip(
        "Ray is not installed: these tests need the extra (pip install -e '.[ray]'; "
        "./dev test installs it)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a cluster's start alone: ~30 s
span_dir, at_once = resources.span_dir, resources.at_once  # fixtures shared with the local tests
HEAD_ARGS = ["--num-cpus", "4", "--num-gpus", "1", "--resources", '{"custom": 2}']


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A head of our own: its temp dir, HOME and TMPDIR in the module's folder.

    Nothing of the user's Ray is read (``~/.ray``, ``RAY_*``) or stopped: only the
    processes this cluster started end with it.
    """
    base = tmp_path_factory.mktemp("ray")
    env = private_env(base, tmp_path_factory.getbasetemp() / "cache")
    temp_dir = base / "r"
    if len(str(temp_dir)) > MAX_TEMP_DIR:  # a long --basetemp: the session's short folder
        temp_dir = socket_path("ray").parent
    cluster = RayCluster(temp_dir, env)
    try:
        cluster.start_head(*HEAD_ARGS)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_root(env), ignore_errors=True)


@pytest.fixture(scope="module")
def ray_daemon(ray_cluster: RayCluster) -> Iterator[RunningDaemon]:
    base = Path(ray_cluster.env["HOME"]).parent
    d = start_daemon(
        base, ["--executor", "ray", "--ray-address", ray_cluster.address], name="ray",
        env=ray_cluster.env, owned_by_test=False,
    )  # fmt: skip
    yield d
    d.stop()
    shutil.rmtree(d.socket.parent, ignore_errors=True)


@pytest.fixture
def daemon(ray_daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch) -> RunningDaemon:
    """The module's Ray-backed daemon, in place of conftest's local one."""
    use_daemon(ray_daemon, monkeypatch)
    return ray_daemon


def test_the_ledger_mirrors_the_ray_cluster(daemon: RunningDaemon) -> None:
    totals = {r.name: r.total for r in daemon.status().resources}
    assert totals["cpu"] == 4 and totals["gpu"] == 1 and totals["custom"] == 2
    assert totals["memory"] > 0


def test_the_seed_example_runs_on_ray(daemon: RunningDaemon) -> None:
    basic.test_seed_example_prints_its_first_three_results(daemon)


def test_results_are_laid_out_as_with_the_local_executor(daemon: RunningDaemon) -> None:
    basic.test_results_are_laid_out_as_ray_tune_users_know(daemon)


def test_impossible_requests_are_refused_at_submit(daemon: RunningDaemon) -> None:
    basic.test_impossible_requests_are_refused_at_submit(daemon)


@pytest.mark.parametrize(
    ("resources_", "expected"),
    [c for c in resources.CPU_CASES if c.id in ("default-1-cpu", "cpu-0.5")],
)
def test_cpu_blocks_run_as_many_trials_at_once_as_the_page_says(
    daemon: RunningDaemon,
    span_dir: Path,
    at_once: Callable[[int], Any],
    resources_: Any,
    expected: int,
) -> None:
    # Ray starts a worker process per concurrent task on first use (about a second
    # each on 2 cores, more when loaded): the trials wait for each other to start.
    resources.test_cpu_blocks_run_as_many_trials_at_once_as_the_page_says(
        daemon, span_dir, at_once, resources_, expected
    )


@pytest.mark.parametrize("resources_", resources.GPU_CASES)
def test_gpu_blocks_run_one_trial_at_a_time_on_the_one_gpu(
    daemon: RunningDaemon, span_dir: Path, monkeypatch: pytest.MonkeyPatch, resources_: Any
) -> None:
    resources.test_gpu_blocks_run_one_trial_at_a_time_on_the_one_gpu(
        daemon, span_dir, monkeypatch, resources_
    )


def test_a_trial_without_gpu_sees_an_empty_cuda_visible_devices(
    daemon: RunningDaemon, span_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources.test_a_trial_without_gpu_sees_an_empty_cuda_visible_devices(
        daemon, span_dir, monkeypatch
    )


def test_max_concurrent_trials_is_enforced_by_the_daemon(
    daemon: RunningDaemon, span_dir: Path, at_once: Callable[[int], Any]
) -> None:
    resources.test_max_concurrent_trials_is_enforced_by_the_daemon(daemon, span_dir, at_once)


def test_a_multi_bundle_trial_runs_in_a_placement_group(
    daemon: RunningDaemon, span_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPAN_SECONDS", "1")
    pgf = tune.PlacementGroupFactory([{"CPU": 1, "GPU": 1}, {"CPU": 2, "custom": 2}])
    resources.fit(
        tune.with_resources(resources.trainable, pgf), tune_config=tune.TuneConfig(num_samples=2)
    )
    records = resources.spans(span_dir)
    assert len(records) == 2 and resources.peak(records) == 1  # one GPU, all custom: one at a time
    assert {r["cuda"] for r in records} == {"0"}
    assert ledger_in_use(daemon) == {"cpu": 0, "gpu": 0, "memory": 0, "custom": 0}


def test_a_crash_resumes_from_the_latest_checkpoint(daemon: RunningDaemon, tmp_path: Path) -> None:
    faults.test_a_crash_resumes_from_the_latest_checkpoint(daemon, tmp_path)


def test_a_hanging_trial_is_killed_at_its_time_limit_with_its_children(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    # A Ray worker takes seconds to start on a loaded machine, and the limit counts them.
    faults.hanging_trial_is_killed_with_its_children(daemon, tmp_path, limit_s=10.0)


def train_kills_its_ray_worker(config: dict[str, Any]) -> None:
    """Checkpoints step 1; on the first attempt SIGKILLs the Ray worker running it."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "state.json").read_text())["step"]
    with open(config["log"], "a") as f:
        f.write(f"start {start}\n")
    for step in range(start + 1, 4):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(d))
        if step == 1 and start == 0:
            worker = os.getppid()
            with open(f"/proc/{worker}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode()
            with open(config["log"], "a") as f:
                f.write(f"worker {worker} {title}\n")
            signal.signal(signal.SIGALRM, _orphaned)
            signal.alarm(60)  # a trial that outlived its worker ends here, saying so
            os.kill(worker, signal.SIGKILL)
            signal.pause()  # for the parent-death signal that killing the worker sends


def _orphaned(signum: int, frame: Any) -> None:
    with open(os.environ["ORPHAN_LOG"], "a") as f:
        f.write("orphaned\n")
    os._exit(1)


def test_a_trial_whose_ray_worker_dies_is_retried_from_its_checkpoint(
    daemon: RunningDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "attempts.log"
    monkeypatch.setenv("ORPHAN_LOG", str(log))
    results = tune.Tuner(
        train_kills_its_ray_worker,
        param_space={"log": str(log)},
        run_config=tune.RunConfig(
            name="worker-dies", verbose=0, failure_config=tune.FailureConfig(max_failures=1)
        ),
    ).fit()
    assert results.num_errors == 0, results.errors
    lines = log.read_text().splitlines()
    assert "orphaned" not in lines  # it died with its worker, not at its alarm
    assert lines[0] == "start 0" and lines[2] == "start 1", lines
    _, pid, title = lines[1].split(" ", 2)
    assert title.startswith("ray::"), title  # it really was a Ray worker...
    assert not psutil.pid_exists(int(pid))  # ...and it is gone
    result = results[0]
    assert result.metrics is not None and result.metrics["step"] == 3
    rows = (Path(result.path) / "result.json").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3]
    with daemon.connect() as conn:
        reply = conn.request(p.GetTrial(trial_id=result.metrics["trial_id"]))
    assert isinstance(reply, p.TrialReply)
    assert reply.attempt == 2
    assert "the Ray worker running the trial died" in daemon.log
    assert ledger_in_use(daemon) == {"cpu": 0, "gpu": 0, "memory": 0, "custom": 0}


def test_nodes_that_join_grow_the_ledger(daemon: RunningDaemon, ray_cluster: RayCluster) -> None:
    ray_cluster.add_node("--num-cpus", "2", "--resources", '{"extra": 1}')

    def totals() -> dict[str, float]:
        return {r.name: r.total for r in daemon.status().resources}

    # Ray pushes no node events: the daemon polls the cluster, and so must we.
    wait_until(lambda: totals().get("extra"), "the daemon to see the new node")
    assert totals()["cpu"] == 6 and totals()["extra"] == 1
    # 5 of the 6 CPUs exist, but Ray never splits a bundle across nodes of 4 and 2.
    too_big = tune.with_resources(basic.train_reporting, {"cpu": 5})
    with pytest.raises(tune.TuneError, match="no node of the Ray cluster"):
        tune.Tuner(too_big, param_space={"x": 1}).fit()
    # 6 CPUs in two bundles of 3 exist in sum, but the node of 2 holds neither.
    unpackable = tune.PlacementGroupFactory([{"CPU": 3}, {"CPU": 3}])
    with pytest.raises(tune.TuneError, match="do not fit on the Ray cluster's nodes together"):
        tune.Tuner(
            tune.with_resources(basic.train_reporting, unpackable), param_space={"x": 1}
        ).fit()
    # A trial that only the new node can run is now admitted and runs there.
    results = tune.Tuner(
        tune.with_resources(basic.train_reporting, {"cpu": 2, "extra": 1}), param_space={"x": 1}
    ).fit()
    assert results.num_errors == 0, results.errors


def test_storage_that_a_node_cannot_see_is_named_as_the_problem(tmp_path: Path) -> None:
    from tuned.run.ray_remote import SharedStorageError, run_trial

    missing = tmp_path / "not-mounted-here" / "trial"
    launch = {"argv": ["true"], "env": {}, "cwd": "/", "stdout": "", "stderr": ""}
    with pytest.raises(SharedStorageError, match="storage_path must be shared storage"):
        run_trial({**launch, "trial_dir": str(missing)}, relay=None, grace_s=1)

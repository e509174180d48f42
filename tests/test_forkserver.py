"""The fast path: function trials forked from a warm per-experiment zygote.

These run against a real daemon started with its default launcher (fork) and
check what a user relies on: each forked trial sees its own GPUs and thread
counts, a timeout still kills everything the trial started, a slow import is
paid once per experiment, and an experiment whose import touches CUDA is
spawned instead of forked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import RunningDaemon, alive, first_of_each, start_script
from gates import Gate, wait_until
from tuned_client import protocol as p
from tuned_client import tune


def report_env(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "mkl": os.environ.get("MKL_NUM_THREADS"),
        "ppid": os.getppid(),
        "pgid_is_pid": os.getpgid(0) == os.getpid(),
    }


def _fit_env(resources: dict[str, float], trials: int) -> list[dict[str, Any]]:
    tuner = tune.Tuner(
        tune.with_resources(report_env, resources),
        param_space={"i": tune.grid_search(list(range(trials)))},
        run_config=tune.RunConfig(name=f"env-{uuid.uuid4().hex[:6]}", verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0, [r.error for r in results]
    return [r.metrics for r in results]


@pytest.mark.daemon_args("--num-cpus", "4", "--num-gpus", "2")
def test_forked_trials_get_their_own_gpus_and_thread_counts(daemon: RunningDaemon) -> None:
    whole = _fit_env({"cpu": 2, "gpu": 1}, 4)
    assert {m["cvd"] for m in whole} <= {"0", "1"} and all(m["cvd"] for m in whole)
    assert {m["omp"] for m in whole} == {"2"} and {m["mkl"] for m in whole} == {"2"}
    fractional = _fit_env({"cpu": 1, "gpu": 0.5}, 4)
    assert {m["cvd"] for m in fractional} <= {"0", "1"} and all(m["cvd"] for m in fractional)
    assert {m["omp"] for m in fractional} == {"1"}
    cpu_only = _fit_env({"cpu": 1}, 2)
    assert {m["cvd"] for m in cpu_only} == {""}
    for m in whole + fractional + cpu_only:
        assert m["ppid"] != daemon.proc.pid, "the trial was spawned, not forked"
        assert m["pgid_is_pid"], "a forked trial must lead its own process group"


def start_child_and_hang(config: dict[str, Any]) -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "1000"])
    Path(config["pid_file"]).write_text(f"{child.pid} {os.getppid()}")
    threading.Event().wait()  # until the time limit


def test_a_forked_trial_killed_at_its_timeout_takes_its_children(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    tuner = tune.Tuner(
        start_child_and_hang,
        param_space={"pid_file": str(pid_file)},
        tune_config=tune.TuneConfig(trial_timeout_s=1.5),
        run_config=tune.RunConfig(name="timeout", verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 1
    assert "TimeoutError" in str(results[0].error)
    child, parent = (int(x) for x in pid_file.read_text().split())
    assert parent != daemon.proc.pid, "the trial was spawned, not forked"
    wait_until(lambda: not alive(child), f"the trial's child {child} to die with the trial")


def _write_module(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


def test_a_slow_import_is_paid_once_per_experiment(
    daemon: RunningDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"slowmod_{uuid.uuid4().hex[:8]}"
    imports = tmp_path / "imports.log"
    _write_module(
        tmp_path,
        name,
        f"""
        import os
        with open({str(imports)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")

        def train(config):
            return {{"i": config["i"]}}
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = __import__(name)
        tuner = tune.Tuner(
            module.train,
            param_space={"i": tune.grid_search(list(range(6)))},
            run_config=tune.RunConfig(name="slow-import", verbose=0),
        )
        results = tuner.fit()
    finally:
        sys.modules.pop(name, None)
    assert results.num_errors == 0 and sorted(r.metrics["i"] for r in results) == list(range(6))
    pids = imports.read_text().split()
    assert pids[0] == str(os.getpid())  # this test imported it to build the Tuner
    assert len(pids) == 2, f"imported {len(pids) - 1} times by the trials, not once"


def test_an_import_that_initialises_cuda_falls_back_to_spawning(
    daemon: RunningDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for torch whose import leaves CUDA initialised: forking that is unsafe.
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "class cuda:\n    @staticmethod\n    def is_initialized():\n        return True\n"
    )
    name = f"cudamod_{uuid.uuid4().hex[:8]}"
    _write_module(
        tmp_path,
        name,
        """
        import os
        import torch

        def train(config):
            return {"ppid": os.getppid()}
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # The stand-in must be what `import torch` finds here too; a real torch an earlier
    # test imported is put back afterwards (importing torch twice in one process fails).
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    try:
        module = __import__(name)
        results = tune.Tuner(
            module.train,
            param_space={"i": tune.grid_search([0, 1])},
            run_config=tune.RunConfig(name="cuda-import", verbose=0),
        ).fit()
    finally:
        sys.modules.pop(name, None)
        sys.modules.pop("torch", None)  # the stand-in; monkeypatch restores a real one
    assert results.num_errors == 0
    assert {r.metrics["ppid"] for r in results} == {daemon.proc.pid}
    assert "torch.cuda" in daemon.log


def test_a_spare_hello_without_its_zygotes_token_is_refused(daemon: RunningDaemon) -> None:
    # Spares announce themselves on the daemon's public socket: a process that merely
    # can connect must not be able to pose as one and be handed someone's trial.
    from tuned_client import protocol as p
    from tuned_client.framing import decode_message, read_frame, send_message
    from tuned_client.session import connect_patiently

    _fit_env({"cpu": 1}, 1)  # an experiment's zygote exists, with its own token
    sock = connect_patiently(str(daemon.socket))
    try:
        send_message(sock, p.SpareHello(protocol=p.PROTOCOL_VERSION, pool="x", token="guess"))
        reply = decode_message(read_frame(sock))
    finally:
        sock.close()
    assert isinstance(reply, p.Error) and reply.code == "refused", reply


def watch_the_zygote(config: dict[str, Any]) -> dict[str, Any]:
    """The first trial holds the only CPU and counts its zygote's other children meanwhile."""
    if config["i"] != 0:
        return {"most": 0}
    zygote = psutil.Process(os.getppid())
    most = 0
    deadline = time.monotonic() + config["seconds"]
    while time.monotonic() < deadline:  # the workload: sampling another process's children
        most = max(most, len(zygote.children()) - 1)
        time.sleep(0.05)
    return {"most": most}


@pytest.mark.daemon_args("--num-cpus", "1", "--spare-idle-timeout", "0.2")
def test_spares_retired_while_trials_wait_are_not_replaced(daemon: RunningDaemon) -> None:
    # While one trial holds the CPU and another waits, idle spares are retired every
    # 0.2 s; a retired spare's exit must not be taken for a lost one and replaced
    # (which would multiply them at every retirement).
    results = tune.Tuner(
        tune.with_resources(watch_the_zygote, {"cpu": 1}),
        param_space={"i": tune.grid_search([0, 1]), "seconds": 2.0},
        run_config=tune.RunConfig(name="retire", verbose=0),
    ).fit()
    assert results.num_errors == 0, results.errors
    most = max(r.metrics["most"] for r in results)
    assert most <= 2, f"the zygote held {most} spares beside the running trial"


LOST = """
import fcntl, json, os, sys, tempfile
from pathlib import Path
from tuned_client import tune

def train(config):
    checkpoint = tune.get_checkpoint()
    resumed = checkpoint is not None
    folder = tempfile.mkdtemp(dir=config["dir"])
    tune.report({"resumed": resumed, "ppid": os.getppid()}, checkpoint=tune.Checkpoint(folder))
    if not resumed:  # the first attempts wait for the test
        with open(config["go"]) as go:
            fcntl.flock(go, fcntl.LOCK_SH)
    return {"resumed": resumed}

results = tune.Tuner(
    train,
    param_space={"i": tune.grid_search([0, 1]), "dir": sys.argv[1], "go": sys.argv[2]},
    run_config=tune.RunConfig(name="lost", verbose=0),  # max_failures=0: no retries
).fit()
print(json.dumps([[r.metrics.get("resumed"), r.error is None] for r in results]))
"""


@pytest.mark.daemon_args("--num-cpus", "2")
def test_trials_of_a_zygote_that_dies_run_again_from_their_checkpoints(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """Its trials die with it; that is not their failure, and max_failures=0 does not end them."""
    go = Gate(tmp_path / "go")
    run = start_script(
        daemon, tmp_path / "lost.py", LOST, str(tmp_path), str(go),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with daemon.connect() as conn:
        conn.send(p.Subscribe(since=0))
        results = first_of_each(conn, p.TrialResult, 2)  # both checkpointed, at their gate
    [zygote] = {p.unpack_user(r.metrics)["ppid"] for r in results.values()}  # one forked both
    os.kill(zygote, signal.SIGKILL)
    try:
        out, err = run.communicate(timeout=120)
    finally:
        go.open()  # only the first attempts wait for it
    assert run.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == [[True, True], [True, True]]
    assert "trial lost through no fault of its own" in daemon.log

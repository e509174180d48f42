"""The scheduler's rules as a user meets them, against a real daemon.

Trials record when their code started; the assertions are about order
(who started before whom), never about how long anything took.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from gates import Gate, pass_gate, wait_until
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune import TuneConfig
from tuned_client.tune.schedulers import ASHAScheduler


def gated(config: dict[str, Any]) -> None:
    """Records that it started (in $SPANS); a trial with an ``i`` then waits at gate $GATES/i."""
    record = {"start": time.time(), "config": config}
    spans = Path(os.environ["SPANS"])
    (spans / f"{os.getpid()}.part").write_text(json.dumps(record))
    (spans / f"{os.getpid()}.part").rename(spans / f"{os.getpid()}.json")  # whole or not at all
    if "i" in config:
        pass_gate(Path(os.environ["GATES"]) / str(config["i"]))


def reporting(config: dict[str, Any]) -> None:
    tune.report({"loss": config["i"], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")})


@pytest.fixture
def spans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spans"
    folder.mkdir()
    monkeypatch.setenv("SPANS", str(folder))
    return folder


def read_spans(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in folder.glob("*.json")]


def fit(trainable: Any, **kwargs: Any) -> tune.ResultGrid:
    results = tune.Tuner(trainable, run_config=tune.RunConfig(verbose=0), **kwargs).fit()
    assert results.num_errors == 0, results.errors
    return results


@pytest.mark.daemon_args("--num-cpus", "4", "--num-gpus", "2")
def test_trials_of_a_steered_experiment_ask_for_their_own_resources(
    daemon: RunningDaemon,
) -> None:
    """A resources callable is asked per trial under ASHA too, as without a scheduler."""
    asks = lambda spec: {"gpu": 1} if spec.config.i % 2 else {"cpu": 1}  # noqa: E731
    results = fit(
        tune.with_resources(reporting, asks),
        param_space={"i": tune.grid_search(list(range(6)))},
        tune_config=TuneConfig(scheduler=ASHAScheduler(metric="loss", mode="min", max_t=1)),
    )
    cuda = {r.config["i"]: r.metrics["cuda"] for r in results}
    assert all(cuda[i] in ("0", "1") for i in (1, 3, 5)), cuda
    assert all(cuda[i] == "" for i in (0, 2, 4)), cuda


@pytest.mark.daemon_args("--num-cpus", "2")
def test_a_second_experiment_does_not_wait_for_the_whole_first_one(
    daemon: RunningDaemon, spans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second script's trials take the first CPUs the first experiment frees.

    Each of the first experiment's eight trials waits at a gate of its own, so
    nothing frees a CPU but the test: once the second experiment's trials are
    queued, it lets one of the first's two running trials end. Fair share gives
    that CPU to the second experiment's trials (each ends at once, so both run on
    it) before the first experiment's third trial; first come, first served
    would start the first's six queued trials before either.
    """
    gates_dir = tmp_path / "gates"
    gates_dir.mkdir()
    gates = [Gate(gates_dir / str(i)) for i in range(8)]
    monkeypatch.setenv("GATES", str(gates_dir))
    watcher = daemon.connect()
    watcher.send(p.Subscribe())

    def run(param_space: dict[str, Any], n: int) -> threading.Thread:
        kwargs = {"param_space": param_space, "tune_config": TuneConfig(num_samples=n)}
        thread = threading.Thread(target=fit, args=(gated,), kwargs=kwargs)
        thread.start()
        return thread

    def wait_for(
        what: type[p.TrialStarted] | type[p.TrialQueued], count: int, other: str = ""
    ) -> str:
        """The experiment of the ``count``-th such event not of experiment ``other``."""
        seen: list[str] = []
        while len(seen) < count:
            msg = watcher.recv()
            if isinstance(msg, what) and msg.experiment_id != other:
                seen.append(msg.experiment_id)
        return seen[-1]

    try:
        first = run({"who": "first", "i": tune.grid_search(list(range(8)))}, 1)
        first_id = wait_for(p.TrialStarted, 2)  # both CPUs taken, their trials at their gates
        second = run({"who": "second"}, 2)
        wait_for(p.TrialQueued, 2, other=first_id)  # the second experiment's trials wait
        wait_until(lambda: len(read_spans(spans)) == 2, "the two trials at their gates")
        gates[read_spans(spans)[0]["config"]["i"]].open()  # one CPU frees
        wait_until(lambda: len(read_spans(spans)) >= 4, "two more trials")
    finally:
        for gate in gates:
            gate.open()
    for thread in (first, second):
        thread.join(timeout=120)
    watcher.close()
    order = [r["config"]["who"] for r in sorted(read_spans(spans), key=lambda r: r["start"])]
    assert sorted(order) == ["first"] * 8 + ["second"] * 2
    assert order[2:4] == ["second", "second"], order

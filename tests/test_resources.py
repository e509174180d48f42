"""The seed's guide to parallelism and resources, block by block, against a real daemon.

The daemon runs with ``--num-cpus 4 --num-gpus 1`` as the guide assumes. Every
trial writes when its code started and ended, the devices it was given and its
thread settings; the peak overlap of those spans must be what the page says.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, next_event, use_daemon
from gates import Barrier, Gate, arrive, pass_gate
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune import TuneConfig


def _hold(config: dict[str, Any]) -> None:
    """Wait at the trial's barrier (``config["barrier"]``, else $SPAN_BARRIER) when the test
    set one: N trials live at once, however slowly they start. Otherwise run for
    $SPAN_SECONDS, the work a trial would do."""
    barrier = config.get("barrier") or os.environ.get("SPAN_BARRIER")
    if barrier:
        arrive(barrier)
    else:
        time.sleep(float(os.environ.get("SPAN_SECONDS", "0.5")))


def trainable(config: dict[str, Any]) -> None:
    """Records its span and environment in $SPANS (the client's environment reaches trials)."""
    start = time.time()
    if "gate" in config:
        pass_gate(config["gate"])
    _hold(config)
    record = {
        "start": start,
        "end": time.time(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "config": config,
    }
    path = Path(os.environ["SPANS"]) / f"{os.getpid()}-{start}.json"
    path.write_text(json.dumps(record))


def spans(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in folder.glob("*.json")]


def peak(records: list[dict[str, Any]]) -> int:
    points = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    live = best = 0
    for _, delta in points:
        live += delta
        best = max(best, live)
    return best


@pytest.fixture
def span_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spans"
    folder.mkdir()
    monkeypatch.setenv("SPANS", str(folder))
    return folder


@pytest.fixture
def at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Barrier]]:
    """``at_once(n)``: the trials wait until ``n`` of them run, then all go on.

    ``at_once(n, every_trial=False)`` makes a barrier only the trials given it in
    their config (``"barrier"``) wait at.
    """
    barriers: list[Barrier] = []

    def make(parties: int, every_trial: bool = True) -> Barrier:
        barrier = Barrier(tmp_path / f"barrier{len(barriers)}", parties)
        barriers.append(barrier)
        if every_trial:
            monkeypatch.setenv("SPAN_BARRIER", str(barrier.folder))
        return barrier

    yield make
    for barrier in barriers:
        barrier.close()


def fit(trainable_: Any, **kwargs: Any) -> tune.ResultGrid:
    tuner = tune.Tuner(trainable_, run_config=tune.RunConfig(verbose=0), **kwargs)
    results = tuner.fit()
    assert results.num_errors == 0, results.errors
    return results


CPU_CASES = [
    pytest.param(None, 4, id="default-1-cpu"),
    pytest.param({"cpu": 2}, 2, id="cpu-2"),
    pytest.param({"cpu": 4}, 1, id="cpu-4"),
    pytest.param({"cpu": 0.5}, 8, id="cpu-0.5"),
]


@pytest.mark.parametrize(("resources", "expected"), CPU_CASES)
def test_cpu_blocks_run_as_many_trials_at_once_as_the_page_says(
    daemon: RunningDaemon,
    span_dir: Path,
    at_once: Callable[[int], Barrier],
    resources: Any,
    expected: int,
) -> None:
    t = trainable if resources is None else tune.with_resources(trainable, resources)
    at_once(expected)  # one admitted too many would run beside them, and show
    fit(t, tune_config=TuneConfig(num_samples=10))
    records = spans(span_dir)
    assert len(records) == 10
    assert peak(records) == expected
    cpu = 1 if resources is None else resources["cpu"]
    assert {r["omp"] for r in records} == {str(max(1, int(cpu)))}
    assert {r["cuda"] for r in records} == {""}  # no GPU asked: none visible


GPU_CASES = [
    pytest.param(lambda spec: {"gpu": 1} if spec.config.use_gpu else {"gpu": 0}, id="lambda"),
    pytest.param({"gpu": 1}, id="gpu-1"),
    pytest.param({"cpu": 2, "gpu": 1}, id="cpu-2-gpu-1"),
    pytest.param(tune.PlacementGroupFactory([{"CPU": 2, "GPU": 1}]), id="placement-group"),
]


@pytest.mark.parametrize("resources", GPU_CASES)
def test_gpu_blocks_run_one_trial_at_a_time_on_the_one_gpu(
    daemon: RunningDaemon, span_dir: Path, monkeypatch: pytest.MonkeyPatch, resources: Any
) -> None:
    monkeypatch.setenv("SPAN_SECONDS", "0.2")
    fit(
        tune.with_resources(trainable, resources),
        param_space={"use_gpu": True},
        tune_config=TuneConfig(num_samples=4),
    )
    records = spans(span_dir)
    assert len(records) == 4
    assert peak(records) == 1
    assert {r["cuda"] for r in records} == {"0"}


def test_a_trial_without_gpu_sees_an_empty_cuda_visible_devices(
    daemon: RunningDaemon, span_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPAN_SECONDS", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the client's own setting must not leak
    resources = lambda spec: {"gpu": 1} if spec.config.use_gpu else {"gpu": 0}  # noqa: E731
    fit(tune.with_resources(trainable, resources), param_space={"use_gpu": False})
    assert [r["cuda"] for r in spans(span_dir)] == [""]


def test_max_concurrent_trials_is_enforced_by_the_daemon(
    daemon: RunningDaemon, span_dir: Path, at_once: Callable[[int], Barrier]
) -> None:
    at_once(5)
    fit(
        tune.with_resources(trainable, {"cpu": 0.25}),  # 16 would fit on 4 CPUs
        tune_config=TuneConfig(num_samples=20, max_concurrent_trials=5),
    )
    records = spans(span_dir)
    assert len(records) == 20
    assert peak(records) == 5


def test_user_thread_settings_are_left_alone(
    daemon: RunningDaemon, span_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPAN_SECONDS", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    fit(tune.with_resources(trainable, {"cpu": 2}))
    assert [r["omp"] for r in spans(span_dir)] == ["3"]


@pytest.mark.daemon_args("--num-cpus", "64", "--num-gpus", "4")
def test_fake_four_gpus_pack_best_fit_and_never_overcommit(
    daemon: RunningDaemon, span_dir: Path, at_once: Callable[..., Barrier]
) -> None:
    # The sixteen quarter-GPU trials run together, then the four whole-GPU ones do.
    quarters, wholes = str(at_once(16, False).folder), str(at_once(4, False).folder)
    gpu = lambda spec: {"gpu": 0.25} if spec.config.i < 16 else {"gpu": 1}  # noqa: E731
    space = {
        "i": tune.grid_search(list(range(20))),
        "barrier": tune.sample_from(lambda spec: quarters if spec.config.i < 16 else wholes),
    }
    fit(tune.with_resources(trainable, gpu), param_space=space)
    records = spans(span_dir)
    small = [r for r in records if r["config"]["i"] < 16]
    whole = [r for r in records if r["config"]["i"] >= 16]
    # The biggest asks go first: the four whole-GPU trials take a device each, and the
    # quarters start once those end (where they go is the ledger's best fit, tested there).
    assert max(r["start"] for r in whole) < min(r["start"] for r in small)
    # At every moment, the shares on each device add up to at most one device.
    for device in "0123":
        on = [r for r in records if r["cuda"] == device]
        share = {id(r): 0.25 if r["config"]["i"] < 16 else 1.0 for r in on}
        for r in on:
            live = [o for o in on if o["start"] <= r["start"] < o["end"]]
            assert sum(share[id(o)] for o in live) <= 1.0
    assert sorted(r["cuda"] for r in whole) == ["0", "1", "2", "3"]


def test_a_big_trial_is_not_starved_by_small_trials_queued_after_it(
    daemon: RunningDaemon, span_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPAN_SECONDS", "0.3")
    cpus = lambda spec: {"cpu": 4} if spec.config.i == 2 else {"cpu": 1}  # noqa: E731
    fit(tune.with_resources(trainable, cpus), param_space={"i": tune.grid_search(list(range(12)))})
    by_index = {r["config"]["i"]: r for r in spans(span_dir)}
    big = by_index[2]
    # Nothing queued behind the 4-CPU trial may start before it: it gets the machine
    # as soon as trials 0 and 1 end, not when the queue runs dry.
    assert all(by_index[i]["start"] >= big["start"] for i in range(3, 12))
    assert all(by_index[i]["start"] >= big["end"] - 0.05 for i in range(3, 12))


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gpu": 2}, "asks for 2 gpu but the daemon has 1 gpu"),
        ({"cpu": 8}, "asks for 8 cpu but the daemon has 4 cpu"),
        ({"tpu": 1}, "has no resource 'tpu'"),
        ({"memory": 10**15}, "memory"),
        ({"gpu": 1.5}, "whole number"),
        ({"cpu": -1}, "cpu"),
        ({"cpu": float("nan")}, "cpu"),
    ],
)
@pytest.mark.timeout(60)  # a request left pending forever fails here, not in CI's timeout
def test_requests_that_can_never_fit_are_refused_at_submit(
    daemon: RunningDaemon, resources: dict[str, float], message: str
) -> None:
    with pytest.raises(tune.TuneError, match=message):
        tune.Tuner(tune.with_resources(trainable, resources)).fit()
    assert daemon.status().experiments == []  # refused whole: nothing was accepted


def test_a_gpu_is_not_handed_on_while_a_finished_trials_memory_is_still_held(
    daemon_factory: Any, tmp_path: Path, span_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead process still listed on device 0 holds the device, for a bounded time."""
    state = tmp_path / "gpu-state.json"
    dead_pid = 2**22 + 12345  # above pid_max's default: never a live process
    state.write_text(json.dumps({"0": {str(dead_pid): 1 << 30}}))
    d: RunningDaemon = daemon_factory(
        "--num-cpus", "4", "--num-gpus", "1", "--fake-gpu-state", str(state),
        "--gpu-release-timeout", "1.5",
    )  # fmt: skip
    use_daemon(d, monkeypatch)
    monkeypatch.setenv("SPAN_SECONDS", "0")
    fit(tune.with_resources(trainable, {"gpu": 1}), tune_config=TuneConfig(num_samples=2))
    first, second = sorted(spans(span_dir), key=lambda r: r["start"])
    assert second["start"] - first["end"] >= 1.5  # held for the whole bounded wait
    log = (d.state_dir / "daemon.stderr").read_text()
    assert "waiting for GPU memory to be released" in log
    assert "handing the device on anyway" in log


@pytest.mark.timeout(120)  # a trial waiting at its gate forever fails here
@pytest.mark.daemon_args("--num-cpus", "1")
def test_a_higher_priority_experiment_goes_before_queued_trials_of_an_earlier_one(
    daemon: RunningDaemon, span_dir: Path, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "gate")  # the first low trial holds the one CPU until it opens
    watcher = daemon.connect()
    watcher.send(p.Subscribe())
    low = threading.Thread(
        target=fit,
        args=(trainable,),
        kwargs={
            "param_space": {"who": "low", "gate": str(gate)},
            "tune_config": TuneConfig(num_samples=3),
        },
    )
    high = threading.Thread(
        target=fit,
        args=(trainable,),
        kwargs={"param_space": {"who": "high"}, "tune_config": TuneConfig(priority=10)},
    )
    try:
        low.start()
        next_event(watcher, p.TrialStarted)  # the first low trial runs; two more wait
        high.start()
        next_event(watcher, p.ExperimentAccepted, lambda e: e.num_trials == 1)  # queued too
    finally:
        gate.open()
        low.join(timeout=120)
        high.join(timeout=120)
        watcher.close()
    order = [r["config"]["who"] for r in sorted(spans(span_dir), key=lambda r: r["start"])]
    assert order == ["low", "high", "low", "low"]


def hog(config: dict[str, Any]) -> None:
    block = bytearray(64 * 1024 * 1024)  # well above the 1 MB it asked for
    tune.report({"held": len(block)})
    threading.Event().wait()  # holds it until the watchdog stops the trial


def test_the_memory_watchdog_stops_a_trial_above_its_request_with_a_clear_error(
    daemon_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine always counts as "nearly out of memory" here, so the watchdog acts
    # at its first sample; what it must pick is the trial above its memory request.
    d: RunningDaemon = daemon_factory("--num-cpus", "2", "--low-memory-fraction", "1.01")
    use_daemon(d, monkeypatch)
    results = tune.Tuner(
        tune.with_resources(hog, {"cpu": 1, "memory": 1_000_000}),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    (result,) = list(results)
    assert result.error is not None
    message = str(result.error)
    assert "MemoryError: stopped by tuned" in message and "above the" in message

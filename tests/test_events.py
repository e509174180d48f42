"""The event stream: a stuck subscriber costs nothing, and callbacks see every trial's life."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection
from tuned_client.framing import read_frame, recv_message, send_message

PAD = "x" * 4096  # a few hundred of these overflow a Unix socket's buffer


def quick(config: dict[str, Any]) -> None:
    tune.report({"i": config["i"], "pad": PAD})


def collect(conn: Connection, out: list[Any], exp_name: str) -> None:
    """Every event from seq 1 until the experiment named ``exp_name`` finishes."""
    conn.send(p.Subscribe(since=0))
    exp_id = None
    while True:
        msg = conn.recv()
        out.append(msg)
        if isinstance(msg, p.ExperimentAccepted) and msg.name == exp_name:
            exp_id = msg.experiment_id
        if isinstance(msg, p.ExperimentFinished) and msg.experiment_id == exp_id:
            return


def test_a_subscriber_that_reads_nothing_slows_no_one(daemon: RunningDaemon) -> None:
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(daemon.socket))
    send_message(stuck, p.Hello(protocol=p.PROTOCOL_VERSION, client="stuck"))
    read_frame(stuck)  # the welcome; from here on it never reads
    send_message(stuck, p.Subscribe())

    seen: list[Any] = []
    watcher = threading.Thread(target=collect, args=(daemon.connect(), seen, "many"))
    watcher.start()
    tuner = tune.Tuner(
        tune.with_resources(quick, {"cpu": 0.25}),
        param_space={"i": tune.grid_search(list(range(200)))},
        run_config=tune.RunConfig(name="many", verbose=0),
    )
    started = time.monotonic()
    fit = threading.Thread(target=tuner.fit)  # a daemon blocked on the stuck one never ends
    fit.start()
    fit.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not fit.is_alive(), "the experiment did not finish with a stuck subscriber"
    watcher.join(timeout=60)
    assert not watcher.is_alive()
    assert tuner.get_results().num_terminated == 200
    print(f"200 trials with a stuck subscriber: {elapsed:.1f} s")

    seqs = [m.seq for m in seen]
    assert seqs == list(range(1, len(seqs) + 1))  # the other subscriber missed nothing
    results_seen = [m for m in seen if isinstance(m, p.TrialResult)]
    assert len(results_seen) == 200
    # the stuck one really was stuck: far more was sent its way than a socket holds
    assert sum(len(bytes(m.metrics)) for m in results_seen) > 4 * 200_000
    with daemon.connect() as conn:  # and the daemon still answers everyone
        assert isinstance(conn.request(p.GetStatus()), p.StatusReply)
    stuck.close()


def big_rows(config: dict[str, Any]) -> None:
    pad = "x" * 20_000
    for i in range(config["rows"]):
        tune.report({"i": i, "pad": pad})


HISTORY, BUFFER = 1_000_000, 300_000
STUCK = 20  # issue 16's figure: 20 subscribers with since=0 that never read


def stuck_subscriber(daemon: RunningDaemon) -> socket.socket:
    """A raw connection that subscribes to the whole history and reads nothing."""
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(daemon.socket))
    send_message(stuck, p.Hello(protocol=p.PROTOCOL_VERSION, client="stuck"))
    read_frame(stuck)  # the welcome; from here on it reads nothing until the end
    send_message(stuck, p.Subscribe(since=0))  # the whole history, then every event
    return stuck


def read_until_lagged(stuck: socket.socket) -> tuple[list[int], p.Lagged]:
    """What was under way to a stuck subscriber when it stopped reading, then ``Lagged``."""
    stuck.settimeout(30)
    seqs: list[int] = []
    while True:
        msg = recv_message(stuck)
        if isinstance(msg, p.Lagged):
            return seqs, msg
        assert isinstance(msg, p.Event)
        seqs.append(msg.seq)


@pytest.mark.daemon_args(
    "--num-cpus", "2", "--event-history-bytes", str(HISTORY),
    "--subscriber-buffer-bytes", str(BUFFER),
)  # fmt: skip
def test_subscribers_that_never_read_cost_a_bounded_amount_then_are_told_they_lagged(
    daemon: RunningDaemon,
) -> None:
    daemon_process = psutil.Process(daemon.proc.pid)
    baseline = daemon_process.memory_info().rss
    stuck = [stuck_subscriber(daemon) for _ in range(STUCK)]

    held: list[int] = []
    rss: list[int] = []
    done = threading.Event()

    def watch() -> None:  # what the daemon holds for events (and in all), while they flood
        with daemon.connect() as conn:
            while not done.is_set():
                reply = conn.request(p.GetStatus())
                assert isinstance(reply, p.StatusReply)
                held.append(reply.event_bytes)
                rss.append(daemon_process.memory_info().rss)
                done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    rows = 400  # 8 MB of results: eight times the history, 160 MB for the stuck ones
    try:
        grid = tune.Tuner(
            tune.with_resources(big_rows, {"cpu": 1}),
            param_space={"rows": rows},
            run_config=tune.RunConfig(verbose=0),
        ).fit()
    finally:
        done.set()
        watcher.join()
    assert grid[0].metrics["i"] == rows - 1
    reply = daemon.status()  # the flood is over and the stuck ones still read nothing
    # The history, and for each stuck one the one write it is blocked on (its buffer is
    # dropped once it is behind), with a frame of slack each: never the 8 MB sent its way.
    bound = HISTORY + STUCK * (max(2 * BUFFER, 1 << 20) + 2 * 25_000)
    assert held and max([*held, reply.event_bytes]) <= bound, (max(held), bound)
    grown = max(rss) - baseline
    assert grown <= 100 * 2**20, f"daemon RSS grew {grown / 2**20:.0f} MiB"
    print(f"events held: at most {max(held):,} B of {bound:,}; RSS +{grown / 2**20:.0f} MiB")

    for sub in stuck:
        seqs, lagged = read_until_lagged(sub)
        assert seqs == list(range(1, len(seqs) + 1))  # in order and nothing skipped
        assert lagged.last_seq == seqs[-1]
        assert len(seqs) < rows  # it was cut off: it never got most of the results
        sub.close()

    # Told it lagged, a client resyncs as fit() does: the experiment's state, then the
    # events after it, which the history still holds.
    (exp_id,) = [e.experiment_id for e in reply.experiments]
    with daemon.connect() as conn:
        state = conn.get_experiment(exp_id)
        assert state.finished and [t.status for t in state.trials] == ["TERMINATED"]
        assert p.unpack_user(state.trials[0].last_result)["i"] == rows - 1
        conn.send(p.Subscribe(since=state.seq))
        tune.Tuner(
            tune.with_resources(big_rows, {"cpu": 1}),
            param_space={"rows": 1},
            run_config=tune.RunConfig(verbose=0),
        ).fit()
        after = [conn.recv()]
        while not isinstance(after[-1], p.ExperimentFinished):
            after.append(conn.recv())
    assert [m.seq for m in after] == list(range(state.seq + 1, state.seq + 1 + len(after)))


class Recorder(tune.Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.calls.append(("start", trial.config["fail"]))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.calls.append(("result", f"{trial.config['fail']}:{result['step']}"))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.calls.append(("complete", trial.config["fail"]))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.calls.append(("error", f"{trial.config['fail']}:{trial.error}"))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.calls.append(("end", ",".join(sorted(t.status for t in trials))))


def steps_then_maybe_fail(config: dict[str, Any]) -> None:
    for step in range(2):
        tune.report({"step": step})
    if config["fail"] == "yes":
        raise ValueError("asked to fail")


def test_callbacks_see_each_trial_start_report_and_end(daemon: RunningDaemon) -> None:
    recorder = Recorder()
    tune.Tuner(
        steps_then_maybe_fail,
        param_space={"fail": tune.grid_search(["no", "yes"])},
        run_config=tune.RunConfig(verbose=0, callbacks=[recorder]),
    ).fit()
    calls = recorder.calls
    for which in ("no", "yes"):
        mine = [c for c in calls if c[1].split(":")[0] == which]
        assert mine[0] == ("start", which)
        assert mine[1:3] == [("result", f"{which}:0"), ("result", f"{which}:1")]
    assert ("complete", "no") in calls
    assert ("error", "yes:ValueError: asked to fail") in calls
    assert calls[-1] == ("end", "ERROR,TERMINATED")


def test_tail_resumes_from_a_sequence_number(daemon: RunningDaemon) -> None:
    tune.Tuner(
        quick, param_space={"i": tune.grid_search([1, 2])}, run_config=tune.RunConfig(verbose=0)
    ).fit()
    cmd = [sys.executable, "-m", "tuned", "tail", "--socket", str(daemon.socket), "--json"]
    with daemon.connect() as conn:
        reply = conn.request(p.GetStatus())
        assert isinstance(reply, p.StatusReply)
        exp_id = reply.experiments[0].experiment_id
    full = subprocess.run([*cmd, exp_id], capture_output=True, text=True, timeout=30)
    events = [json.loads(x) for x in full.stdout.splitlines()]
    after = subprocess.run(
        [*cmd, "--since", str(events[3]["seq"]), exp_id], capture_output=True, text=True, timeout=30
    )
    assert [json.loads(x) for x in after.stdout.splitlines()] == events[4:]

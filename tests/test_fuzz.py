"""Fuzzing the decoder and the live socket with generated and mutated frames.

The daemon runs other people's week-long jobs: no frame, however broken, may
crash it, hang it, or make it grow. After ten thousand of them it must still run
an experiment correctly.
"""

from __future__ import annotations

import contextlib
import random
import socket

import msgspec
import psutil
import pytest
from conftest import RunningDaemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.framing import HEADER, encode_frame, read_frame

SEEDS = [
    encode_frame(p.Hello(protocol=p.PROTOCOL_VERSION, client="fuzz", pid=1)),
    encode_frame(p.Subscribe(experiment_id="abcde", since=3)),
    encode_frame(p.Cancel(target="abcde_00001")),
    encode_frame(p.GetExperiment(experiment_id="zzzzz")),
    encode_frame(p.WorkerHello(protocol=1, trial_id="abcde_00000", token="0" * 32)),
    encode_frame(p.Report(seq=1, metrics=p.pack_user({"loss": 1.0}))),
]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.6 and data:
            del data[rng.randrange(len(data)) :]
        elif choice < 0.8:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
        else:
            body = bytes(data[HEADER.size :])
            data[:] = HEADER.pack(rng.choice([len(body), len(body) + 5, 2**31, 0])) + body
    return bytes(data)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_the_decoder_never_fails_with_anything_but_a_decode_error(body: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        msgspec.msgpack.decode(body, type=p.Request)


def send_one(sock_path: str, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(sock_path)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # nothing more is coming: the daemon must not wait
            while True:
                read_frame(sock)  # replies (errors) until the daemon closes
        except (OSError, EOFError, Exception):
            return


def ok(config: dict) -> dict:
    return {"double": config["x"] * 2}


@pytest.mark.daemon_args("--num-cpus", "2")
def test_ten_thousand_bad_frames_leave_the_daemon_serving_and_flat(
    daemon: RunningDaemon,
) -> None:
    rng = random.Random(20261123)
    proc = psutil.Process(daemon.proc.pid)
    warm = [mutate(rng, rng.choice(SEEDS)) for _ in range(500)]
    for payload in warm:
        send_one(str(daemon.socket), payload)
    rss_before = proc.memory_info().rss
    for i in range(10_000):
        if i % 3 == 0:
            payload = rng.randbytes(rng.randint(0, 64))
        else:
            payload = mutate(rng, rng.choice(SEEDS))
        send_one(str(daemon.socket), payload)
    growth = proc.memory_info().rss - rss_before
    assert growth < 20 * 1024 * 1024, f"daemon grew by {growth / 1024**2:.1f} MiB"
    assert daemon.proc.poll() is None
    results = tune.Tuner(
        ok, param_space={"x": tune.grid_search([1, 2, 3])}, run_config=tune.RunConfig(verbose=0)
    ).fit()
    assert sorted(r.metrics["double"] for r in results) == [2, 4, 6]

"""Sustained throughput of trivial trials, one client and eight at once.

A trivial trial returns one metric. The floor is what the operating system
and Python need for the same work: ``ProcessPoolExecutor`` on the same function.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time

from .daemon import BenchDaemon, bench_daemon
from .figures import Figure

TRIAL_CPU = 0.25  # eight trials at a time on two CPUs

_CLIENT = """
import sys, time
from tuned_client import tune
def trivial(config):
    return {"x": config["i"]}
n = int(sys.argv[1])
tuner = tune.Tuner(
    tune.with_resources(trivial, {"cpu": float(sys.argv[2])}),
    param_space={"i": tune.grid_search(list(range(n)))},
    run_config=tune.RunConfig(verbose=0),
)
t = time.perf_counter()
results = tuner.fit()
assert results.num_errors == 0 and len(results) == n, results.num_errors
print(f"FIT_SECONDS {time.perf_counter() - t:.6f}")
"""


def trivial(i: int) -> dict[str, int]:
    return {"x": i}


def _clients(d: BenchDaemon, n: int, clients: int) -> float:
    """Wall time for ``clients`` scripts submitting ``n`` trials each at once."""
    t = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLIENT, str(n), str(TRIAL_CPU)],
            env=d.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a client failed:\n{out}\n{err}")
    return time.perf_counter() - t


def floor(n: int) -> float:
    """ProcessPoolExecutor(2) on the same trivial work, trials per second."""
    t = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        list(pool.map(trivial, range(n), chunksize=1))
    return n / (time.perf_counter() - t)


# A process per task and nothing else: what any design that forks a warm
# interpreter per trial (ours) can reach here. Two forks in flight, each child
# runs the trivial function, sends its result down a pipe and exits.
_FORK_FLOOR = """
import gc, os, sys, time
import cloudpickle, msgspec, tuned_client.worker  # what a zygote has loaded
gc.collect(); gc.freeze()
n = int(sys.argv[1]); done = 0; running = {}
t = time.perf_counter()
def start(i):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, msgspec.msgpack.encode({"x": i})); os._exit(0)
    os.close(w); running[pid] = r
for i in range(min(2, n)):
    start(i)
started = len(running)
while running:
    pid, _ = os.wait()
    os.read(running[pid], 64); os.close(running.pop(pid)); done += 1
    if started < n:
        start(started); started += 1
print(n / (time.perf_counter() - t))
"""


def fork_floor(n: int) -> float:
    """Forked processes per second, two at a time, each running the trivial work."""
    out = subprocess.run(
        [sys.executable, "-c", _FORK_FLOOR, str(n)], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def measure(n: int = 10_000, clients: int = 8) -> list[Figure]:
    with bench_daemon("--num-cpus", "2") as d:
        single = n / _clients(d, n, 1)
        many = clients * (n // clients) / _clients(d, n // clients, clients)
    return [
        Figure("trivial trials/s, 1 client", 500, single, "/s", True, f"{n:,} trials"),
        Figure(
            f"trivial trials/s, {clients} clients",
            500,
            many,
            "/s",
            True,
            f"{clients} x {n // clients:,} trials",
        ),
        Figure("floor: ProcessPoolExecutor(2) tasks/s", None, floor(n), "/s", True, f"{n:,} tasks"),
        Figure(
            "floor: a forked process per task, 2 at a time, tasks/s",
            None,
            fork_floor(n),
            "/s",
            True,
            f"{n:,} tasks; fork from a warm interpreter, result down a pipe, exit",
        ),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

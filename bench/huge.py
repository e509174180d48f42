"""Heavy streams and huge experiments (issue 16): each figure against its goal, in one run.

1. Event history: one trial reports 3,000 rows of 54 KB (fit() following). The
   daemon's RSS growth from before the trial to after it ended: the history of
   recent events must be bounded by its bytes, not by a count of events.
2. Stuck subscribers: 20 connections subscribe with ``since=0`` (the whole
   history) and never read, while another trial reports 1,000 more such rows.
   The daemon's peak RSS over what it was before they came.
3. A 1,000,000-trial grid (one CPU each, on a one-CPU daemon: one runs, the
   rest wait) submitted by a script the way ``fit()`` submits it: the time
   until the daemon holds the whole grid (a plain grid goes as its plan, and
   the daemon makes its trials as admission needs them), the script's peak RSS
   by then, the daemon's RSS with them all queued; then the grid is cancelled. Meanwhile a
   thread asks for the status (``tuned status``'s request, on one connection)
   every 10 ms: its latency while the grid is submitted and while it is
   cancelled.

``python -m bench.huge [trials] [--tree PATH] [--only streams|grid]`` (default
1,000,000 trials, both parts).
Runs against whatever ``tuned`` and ``tuned_client`` Python imports; ``--tree``
first measures another checkout's daemon and client (the code before a change)
with this same file, so both are measured in one run:

    python -m bench.huge --tree /path/to/old/checkout
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tuned_client import protocol as p
from tuned_client.connection import Connection

from .clients import finish_script, request, rss, run_script, start_script, wait_for
from .daemon import REPO, BenchDaemon, bench_daemon
from .figures import Figure

MIB = 2**20

_REPORTER = """
import sys
from tuned_client import tune
def reporter(config):
    blob = "x" * config["size"]
    for i in range(config["rows"]):
        tune.report({"i": i, "blob": blob})
tune.Tuner(
    tune.with_resources(reporter, {"cpu": 1}),
    param_space={"rows": int(sys.argv[1]), "size": int(sys.argv[2])},
    run_config=tune.RunConfig(verbose=0),
).fit()
"""

# Submits as fit() does (``Tuner._submit`` where it exists; before it, the whole
# spec in one Submit), then prints its figures and leaves the grid to the daemon.
_GRID = """
import resource, sys, time
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection
def blocker(config):
    time.sleep(600)
n = int(sys.argv[1])
started = time.perf_counter()
tuner = tune.Tuner(
    tune.with_resources(blocker, {"cpu": 1}),
    param_space={"i": tune.grid_search(list(range(n)))},
    run_config=tune.RunConfig(verbose=0),
)
with Connection.open(None, autostart=False) as conn:
    if hasattr(tuner, "_submit"):
        accepted = tuner._submit(conn)
    else:
        accepted = conn.request(p.Submit(experiment=tuner._experiment_spec()))
print("ACCEPTED_S", time.perf_counter() - started)
print("EXPERIMENT", accepted.experiment_id)
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


class StatusPoller(threading.Thread):
    """Asks for the status every ``interval`` s; each round trip's latency, by phase."""

    def __init__(self, d: BenchDaemon, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.d = d
        self.interval = interval
        self.phase = ""
        self.latencies: dict[str, list[float]] = {}
        self.stopping = False

    def run(self) -> None:
        with Connection.open(self.d.socket, autostart=False) as conn:
            while not self.stopping:
                phase = self.phase
                started = time.perf_counter()
                conn.request(p.GetStatus())
                if phase:
                    self.latencies.setdefault(phase, []).extend(
                        _corrected(time.perf_counter() - started, self.interval)
                    )
                time.sleep(self.interval)

    def stop(self) -> None:
        self.stopping = True
        self.join(timeout=600)


def _corrected(latency: float, interval: float) -> list[float]:
    """The latency, and those of the requests a stall kept us from sending meanwhile.

    A poller that waits for each reply sends one request through a 2 s stall
    where a user at a random moment would have met most of it: as HdrHistogram
    corrects for coordinated omission, a reply slower than the interval adds the
    latencies the requests due during it would have had.
    """
    out = [latency]
    missed = latency - interval
    while missed > 0:
        out.append(missed)
        missed -= interval
    return out


def _percentile(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def _peak_rss(pid: int, seconds: float, every: float = 0.25) -> int:
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid))
        time.sleep(every)
    return peak


class _Sampler(threading.Thread):
    """The largest RSS of ``pid`` seen until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.05)

    def stop(self) -> int:
        self.stopping = True
        self.join()
        return self.peak


def streams(rows: int = 3_000, row_bytes: int = 54_000, stuck: int = 20) -> list[Figure]:
    """Rows 1 and 2: the event history's bound, and subscribers that never read."""
    with bench_daemon("--num-cpus", "2") as d:
        run_script(d, _REPORTER, "1", "10")  # warm up: a zygote, the result files
        before = _peak_rss(d.pid, 1.0)
        run_script(d, _REPORTER, str(rows), str(row_bytes))
        after = _peak_rss(d.pid, 2.0)
        history = Figure(
            f"daemon RSS growth, event history after {rows:,} rows of {row_bytes // 1000} KB",
            64,
            (after - before) / MIB,
            "MiB",
            note=f"{before / MIB:.0f} -> {after / MIB:.0f} MiB; one trial, fit() following",
        )
        conns = [Connection.open(d.socket, autostart=False) for _ in range(stuck)]
        sampler = _Sampler(d.pid)
        sampler.start()
        try:
            for c in conns:
                c.send(p.Subscribe(experiment_id="", since=0))  # and never read
            run_script(d, _REPORTER, str(rows // 3), str(row_bytes))
            time.sleep(1.0)
        finally:
            peak = sampler.stop()
            for c in conns:
                c.close()
        left = _peak_rss(d.pid, 1.0)
    return [
        history,
        Figure(
            f"daemon RSS growth, {stuck} subscribers since=0 that never read",
            100,
            (peak - after) / MIB,
            "MiB",
            note=f"{after / MIB:.0f} -> peak {peak / MIB:.0f} MiB while {rows // 3:,} more rows "
            f"came; {left / MIB:.0f} MiB once they left",
        ),
    ]


def grid(n: int = 1_000_000) -> list[Figure]:
    """Row 3: a huge grid submitted, held queued, and cancelled, with status answering."""
    with bench_daemon("--num-cpus", "1") as d:
        idle = _peak_rss(d.pid, 0.5)
        poller = StatusPoller(d)
        poller.start()
        try:
            poller.phase = "submit"
            client = start_script(d, _GRID, str(n))
            out = finish_script(client, timeout=1800)
            wait_for(lambda: _total(d) >= n, 600, f"{n:,} trials in the daemon", 0.2)
            poller.phase = ""
            queued = _peak_rss(d.pid, 2.0)
            exp_id = out["EXPERIMENT"]
            poller.phase = "cancel"
            started = time.perf_counter()
            request(d, p.Cancel(target=exp_id))
            replied = time.perf_counter() - started
            wait_for(lambda: _finished(d, exp_id), 1800, "the cancelled grid to finish", 0.05)
            cancelled = time.perf_counter() - started
            time.sleep(0.5)
        finally:
            poller.stop()
    submit_lat = poller.latencies.get("submit", [])
    cancel_lat = poller.latencies.get("cancel", [])
    figures = [
        Figure(
            f"{n:,}-trial grid: accepted (script start -> the daemon holds the whole grid)",
            10,
            float(out["ACCEPTED_S"]),
            "s",
            note="sent as fit() sends it: a plain grid as its plan, others point by point",
        ),
        Figure(
            f"{n:,}-trial grid: daemon RSS with them queued",
            250,
            queued / MIB,
            "MiB",
            note=f"idle {idle / MIB:.0f} MiB before",
        ),
        Figure(
            f"{n:,}-trial grid: submitting script's peak RSS",
            300,
            int(out["MAXRSS"]) / MIB,
            "MiB",
            note="ru_maxrss once accepted; param_space holds the grid's values",
        ),
    ]
    for phase, lat, extra in (
        ("submitted", submit_lat, ""),
        ("cancelled", cancel_lat, f"; replied in {replied:.2f} s, done in {cancelled:.2f} s"),
    ):
        figures += [
            Figure(
                f"{n:,}-trial grid: status p50 while it is {phase}",
                None,
                _percentile(lat, 50) * 1000,
                "ms",
                note=f"{len(lat)} requests (stalls counted as a user meets them)",
            ),
            Figure(
                f"{n:,}-trial grid: status p99 while it is {phase}",
                100,
                _percentile(lat, 99) * 1000,
                "ms",
                note=f"max {max(lat, default=float('nan')) * 1000:.0f} ms{extra}",
            ),
        ]
    return figures


def _total(d: BenchDaemon) -> int:
    reply = request(d, p.GetStatus())
    assert isinstance(reply, p.StatusReply)
    return sum(sum(e.counts.values()) for e in reply.experiments)


def _finished(d: BenchDaemon, exp_id: str) -> bool:
    reply = request(d, p.GetStatus())
    assert isinstance(reply, p.StatusReply)
    return any(e.experiment_id == exp_id and e.finished for e in reply.experiments)


def measure(n: int = 1_000_000) -> list[Figure]:
    return streams() + grid(n)


# Runs this file with another checkout's tuned and tuned_client first on the
# path (its daemon and scripts too, through PYTHONPATH), and this bench package.
_ELSEWHERE = """
import importlib.util, sys
bench = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    "bench", bench + "/__init__.py", submodule_search_locations=[bench]
)
module = importlib.util.module_from_spec(spec)
sys.modules["bench"] = module
spec.loader.exec_module(module)
import tuned
from bench import huge
print("# tuned from", tuned.__file__, flush=True)
huge.report(int(sys.argv[2]), sys.argv[3], sys.argv[4])
"""


def report(n: int, label: str, only: str = "") -> None:
    parts = {"streams": streams, "grid": lambda: grid(n)}
    for name, part in parts.items():
        if only and name != only:
            continue
        for fig in part():
            fig = dataclasses.replace(fig, name=f"{label}: {fig.name}") if label else fig
            print(f"{fig.line()}  ratio {fig.ratio() or '-'}; {fig.note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.huge")
    parser.add_argument("trials", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--tree", type=Path, help="another checkout, measured first")
    parser.add_argument("--only", choices=["streams", "grid"], default="", help="one part")
    args = parser.parse_args()
    if args.tree is not None:
        tree = args.tree.resolve()
        env = dict(os.environ, PYTHONPATH=f"{tree}:{tree / 'client'}")
        with tempfile.TemporaryDirectory() as cwd:  # not this checkout's: -m tuned finds the tree's
            subprocess.run(
                [sys.executable, "-c", _ELSEWHERE, str(REPO / "bench"), str(args.trials),
                 f"before ({tree.name})", args.only],
                env=env, cwd=cwd, check=True,
            )  # fmt: skip
    report(args.trials, "now" if args.tree is not None else "", args.only)


if __name__ == "__main__":
    main()

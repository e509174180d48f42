"""The fast path, before and after a change, measured in one run.

``python -m bench.before_after [REF]`` (default ``main``) unpacks REF's source tree
(``git archive``) beside this one and runs both, each with a daemon of its own,
in alternating pairs (before, after, after, before, ...) so that a machine busy
with other work slows both alike. Two sweeps, the fast path the house rules
keep: the seed's 100-trial FIFO grid (``fit()``, daemon running) and trivial
trials/s (one client, a FIFO grid, no stopper or scheduler). Each figure is a
median; the ratios are after / before of those medians, and the client's own
CPU seconds are given too (less disturbed by other work than wall time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .daemon import REPO, BenchDaemon, bench_daemon
from .figures import Figure
from .seed import TIMED, TUNER
from .throughput import _CLIENT, TRIAL_CPU


@contextlib.contextmanager
def source_tree(ref: str) -> Iterator[Path]:
    """REF's tracked files in a temp folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="tuned-before-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _client(d: BenchDaemon, argv: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of a client script run against ``d``, and its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *argv], env=d.env(), cwd=d.code or REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"a client failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout + out.stderr


def _seconds(text: str, key: str) -> float:
    return next(float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(key))


def seed_fit(d: BenchDaemon) -> tuple[float, float]:
    """The seed sweep's ``fit()`` seconds and the script's CPU seconds."""
    example = (d.code or REPO) / "examples" / "basic_experiment.py"
    _, cpu, text = _client(d, ["-c", TIMED, TUNER, str(example)])
    return _seconds(text, "FIT_SECONDS"), cpu


def trivial(n: int) -> Callable[[BenchDaemon], tuple[float, float]]:
    """Trials/s of ``n`` trivial trials from one client, and its CPU ms per trial."""

    def run(d: BenchDaemon) -> tuple[float, float]:
        _, cpu, text = _client(d, ["-c", _CLIENT, str(n), str(TRIAL_CPU)])
        return n / _seconds(text, "FIT_SECONDS"), 1000 * cpu / n

    return run


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def paired(
    run: Callable[[BenchDaemon], tuple[float, float]],
    before: BenchDaemon,
    after: BenchDaemon,
    pairs: int,
) -> dict[str, list[tuple[float, float]]]:
    got: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    run(before), run(after)  # warm both: page cache, zygotes
    for i in range(pairs):
        order = [("before", before), ("after", after)]
        for name, d in order if i % 2 == 0 else reversed(order):
            got[name].append(run(d))
    return got


def measure(ref: str = "main", pairs: int = 5, n: int = 2_000) -> list[Figure]:
    with (
        source_tree(ref) as tree,
        bench_daemon("--num-cpus", "2", code=tree) as before,
        bench_daemon("--num-cpus", "2") as after,
    ):
        seed = paired(seed_fit, before, after, pairs)
        rate = paired(trivial(n), before, after, pairs)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    sides = f"{ref} vs the working tree at {head}"
    load = os.getloadavg()[1]  # a busy machine: the CPU seconds are the steadier figure
    note = f"median of {pairs} alternating pairs; {sides}; load average {load:.0f}"
    figures: list[Figure] = []
    for label, got, unit, higher, cpu_label, cpu_unit in (
        ("seed sweep fit() (FIFO)", seed, "s", False, "client CPU", "s"),
        (f"trivial trials/s, 1 client, {n:,} trials (FIFO)", rate, "/s", True,
         "client CPU per trial", "ms"),
    ):  # fmt: skip
        b = _median([x for x, _ in got["before"]])
        a = _median([x for x, _ in got["after"]])
        bc = _median([c for _, c in got["before"]])
        ac = _median([c for _, c in got["after"]])
        figures += [
            Figure(f"before/after: {label}, before", None, b, unit, higher, note=ref),
            Figure(f"before/after: {label}, after", None, a, unit, higher, note=head),
            Figure(
                f"before/after: {label}, after / before",
                0.95 if higher else 1.05,
                a / b,
                "x",
                higher,
                note=f"{note}; {cpu_label} {bc:.3g} -> {ac:.3g} {cpu_unit}",
            ),
        ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after")
    parser.add_argument("ref", nargs="?", default="main", help="the 'before' commit (git ref)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=2_000)
    args = parser.parse_args()
    for fig in measure(args.ref, args.pairs, args.trials):
        print(fig.line(), f"  [{fig.note}]" if fig.note else "", flush=True)


if __name__ == "__main__":
    main()

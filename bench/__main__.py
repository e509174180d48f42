"""``python -m bench``: run every benchmark, print each figure, write bench/RESULTS.md.

``--with-ray`` adds the seed sweep under Ray Tune (installed into
bench/.ray-venv on request; never a dependency). ``--quick`` uses fewer trials
for a smoke run; the table says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from . import memory, seed, throughput
from .figures import Figure

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

NOT_YET = [
    Figure("admission latency p50 (trial exit -> next trial's user code)", 2, None, "ms"),
    Figure("admission latency p99", 10, None, "ms"),
    Figure("event stream rate to one subscriber", 50_000, None, "/s", True),
    Figure("throughput loss with 100 subscribers", 10, None, "%"),
    Figure("daemon RSS with 100,000 queued trials", 250, None, "MiB"),
    Figure("client fit() RSS growth over 10,000 trials", None, None, "MiB"),
]


def write_table(figures: list[Figure], argv: str, seconds: float) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"`{argv}` on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{seconds:.0f} s in all. Ratio is measured / target: at most 1 is good for "
        "times and memory, at least 1 for rates.",
        "",
        "| figure | target | measured | ratio | met | notes |",
        "|---|---|---|---|---|---|",
        *(fig.row() for fig in figures),
        "",
    ]
    RESULTS.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--with-ray", action="store_true", help="also run the seed under Ray Tune")
    parser.add_argument("--quick", action="store_true", help="1,000 trials instead of 10,000")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.perf_counter()
    benches: list[Callable[[], list[Figure]]] = [
        seed.measure,
        lambda: throughput.measure(1_000 if args.quick else 10_000),
        memory.measure,
    ]
    if args.with_ray:
        from . import ray_side

        benches.append(ray_side.measure)
    figures: list[Figure] = []
    for bench in benches:
        for fig in bench():
            print(fig.line(), flush=True)
            figures.append(fig)
    figures += NOT_YET
    if not args.no_write:
        argv = "python -m bench" + (" --quick" if args.quick else "")
        write_table(
            figures, argv + (" --with-ray" if args.with_ray else ""), time.perf_counter() - started
        )
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

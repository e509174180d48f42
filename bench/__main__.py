"""``python -m bench``: run every benchmark, print each figure, write bench/RESULTS.md.

``--with-ray`` adds ``ray``: the seed sweep under Ray Tune beside ours (Ray is
installed into bench/.ray-venv on request; never a dependency). ``packing``
always runs its mixes under Ray Tune too, in the same run (a half hour in all). ``--quick`` uses
fewer trials for a smoke run; the table says so. ``--only NAME,...`` runs some
benchmarks (names below; ``--only ray`` runs the Ray side alone, ``--only soak`` the
million-trial history, ``--only before_after`` the fast path of main's tree beside this
one, none of which a plain run includes) and replaces
just their rows in the table. Each benchmark is also a module of its own:
``python -m bench.admission`` and so on.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from . import (
    admission,
    admission_cost,
    before_after,
    disk,
    events,
    flat_memory,
    heavy_import,
    memory,
    packing,
    queued,
    ray_side,
    seed,
    soak,
    subscribers,
    throughput,
    trackers,
    web,
)
from .figures import Figure

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "| figure | target | measured | ratio | met | notes |"


def benches(quick: bool) -> dict[str, Callable[[], list[Figure]]]:
    """Every benchmark by name, in the order the table lists them (``quick``: smaller)."""
    return {
        "seed": lambda: seed.measure(1 if quick else 3),
        "throughput": lambda: throughput.measure(1_000 if quick else 10_000),
        "memory": memory.measure,
        "admission": lambda: admission.measure(100 if quick else 300),
        "admission_cost": admission_cost.measure,
        "heavy_import": lambda: heavy_import.measure(50 if quick else 200),
        "events": lambda: events.measure(20_000 if quick else 40_000, 5_000 if quick else 20_000),
        "subscribers": lambda: subscribers.measure(500 if quick else 2_000),
        "queued": lambda: queued.measure(20_000 if quick else 100_000),
        "flat_memory": lambda: flat_memory.measure(2_000 if quick else 25_000),
        "disk": lambda: disk.measure(2.0 if quick else 6.0),
        "web": lambda: web.measure(
            n=500 if quick else 1_000, before=os.environ.get("TUNED_BENCH_WEB_BEFORE", "")
        ),
        "trackers": lambda: trackers.measure(2 if quick else 5),
        # Ours and Ray Tune's on each mix (Ray installed into bench/.ray-venv on first use).
        "packing": lambda: packing.measure(0.25 if quick else 1.0, (4,) if quick else (4, 8)),
        "ray": lambda: ray_side.measure(1 if quick else 3),  # only when asked for
        # only when asked for: this tree against main's (python -m bench.before_after REF)
        "before_after": lambda: before_after.measure("main", 1 if quick else 5),
        # a million trials' history (minutes): only when asked for; TUNED_BENCH_BEFORE=PATH
        # measures another checkout's daemon on the same history first
        "soak": lambda: soak.measure(100_000 if quick else 1_000_000, soak.trees_from_env()),
    }


def merged_rows(figures: list[Figure]) -> list[str]:
    """The table's rows now in RESULTS.md with these figures' rows replaced (or added)."""
    fresh = {fig.name: fig.row() for fig in figures}
    rows: list[str] = []
    if RESULTS.exists():
        lines = RESULTS.read_text().splitlines()
        if HEADER in lines:
            for line in lines[lines.index(HEADER) + 2 :]:
                if not line.startswith("| "):
                    break
                name = line[2:].split(" | ", 1)[0]
                rows.append(fresh.pop(name, line))
    return rows + list(fresh.values())


def notes() -> list[str]:
    """What RESULTS.md says after its table (sections of notes), kept as it is."""
    if not RESULTS.exists():
        return []
    lines = RESULTS.read_text().splitlines()
    after = next((i for i, line in enumerate(lines) if line.startswith("## ")), None)
    return [] if after is None else lines[after:]


def write_table(rows: list[str], argv: str, seconds: float) -> None:
    kept = notes()
    lines = [
        "# Benchmark results",
        "",
        f"`{argv}` on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{seconds:.0f} s in all. Ratio is measured / target: at most 1 is good for "
        "times and memory, at least 1 for rates.",
        "",
        HEADER,
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *kept,
    ]
    RESULTS.write_text("\n".join(lines) + ("\n" if kept else ""))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--with-ray", action="store_true", help="also run the seed under Ray Tune")
    parser.add_argument("--quick", action="store_true", help="fewer trials: a smoke run")
    parser.add_argument("--only", default="", help="comma-separated benchmark names to run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.perf_counter()
    every = benches(args.quick)
    chosen = {n: b for n, b in every.items() if n not in ("ray", "soak", "before_after")}
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in every]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(every)}")
        chosen = {n: every[n] for n in names}
    if args.with_ray:
        chosen["ray"] = every["ray"]
    figures: list[Figure] = []
    for name, bench in chosen.items():
        print(f"== {name}", flush=True)
        for fig in bench():
            print(fig.line(), flush=True)
            figures.append(fig)
    if not args.no_write:
        argv = "python -m bench" + (" --quick" if args.quick else "")
        argv += f" --only {args.only}" if args.only else ""
        argv += " --with-ray" if args.with_ray else ""
        rows = merged_rows(figures) if args.only else [fig.row() for fig in figures]
        write_table(rows, argv, time.perf_counter() - started)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

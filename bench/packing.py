"""How busy the GPUs stay: workload mixes on a faked 4- and 8-GPU machine, ours and Ray Tune's.

Each mix (``bench.mixes``) runs twice per machine size: on a tuned daemon started
with ``--num-gpus/--num-cpus/--memory`` for the mix, and on a local Ray cluster
faked the same way (``ray.init(num_gpus=, num_cpus=, _memory=)``, Ray installed
into bench/.ray-venv as ``--only ray`` does). Every experiment of a mix is its own
script (``bench/mix_script.py``, identical for both but for the import), so
experiments from different scripts compete as they would on a workstation. Trials
are real processes that sleep; the figures (``bench.mixes.outcome``) come from
when each trial's code started and last reported.

``python -m bench.packing [--unit S] [--gpus 4,8] [--mix NAME] [--no-ray]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .daemon import bench_daemon
from .figures import Figure
from .mixes import Mix, Outcome, Ran, mixes, outcome, planned_bound

SCRIPT = Path(__file__).resolve().parent / "mix_script.py"
# A run is cut off at this many times the mix's planned lower bound (Ray Tune takes
# 5-10 times it on a loaded 2-core machine): its makespan is then "at least".
CUT_OFF = 3.0

_RAY_HOST = """
import sys, ray
ray.init(address="local", num_cpus=int(sys.argv[1]), num_gpus=int(sys.argv[2]),
         _memory=int(sys.argv[3]), _temp_dir=sys.argv[4], include_dashboard=False,
         logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # the cluster lives until the runner closes our stdin
"""


@contextlib.contextmanager
def ray_cluster(mix: Mix, python: Path, tmp: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A local Ray cluster with the mix's resources: (its address, the env to reach it)."""
    temp = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))  # short: AF_UNIX path limit
    # Ray 2.60 turns token authentication on for a local cluster and writes the token
    # to ~/.ray: HOME is ours, and the scripts run in token mode too, to find it there.
    env = {**os.environ, "HOME": str(tmp), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    host = subprocess.Popen(
        [str(python), "-c", _RAY_HOST, str(mix.cpus), str(mix.gpus), str(mix.memory), str(temp)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert host.stdout is not None
        address = host.stdout.readline().strip()
        if not address:
            raise RuntimeError("the Ray cluster did not start")
        yield address, env
    finally:
        assert host.stdin is not None
        host.stdin.close()
        try:
            host.wait(timeout=60)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()
        shutil.rmtree(temp, ignore_errors=True)


def run_mix(
    mix: Mix, mode: str, python: str, env: dict[str, str], tmp: Path, address: str = ""
) -> tuple[list[Ran], float | None]:
    """Start every experiment's script, release them together, and collect their trials.

    A run still going ``CUT_OFF`` times the planned bound after the start is cut
    off there: the trials' results so far, and when it was stopped.
    """
    work = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=tmp))
    procs: list[subprocess.Popen[str]] = []
    outs: list[Path] = []
    for i, exp in enumerate(mix.experiments):
        plan = work / f"plan{i}.json"
        plan.write_text(json.dumps({**exp.as_json(), "storage": str(work / "results")}))
        outs.append(work / f"out{i}.json")
        argv = [python, str(SCRIPT), mode, str(plan), str(outs[-1])]
        procs.append(
            subprocess.Popen(
                argv + ([address] if address else []),
                env=env,
                cwd=work,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=open(work / f"stderr{i}", "w"),  # noqa: SIM115 (the child owns it)
                text=True,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        while (line := proc.stdout.readline()) and line.strip() != "READY":
            pass
        if not line:
            proc.wait()
            raise RuntimeError(f"a {mode} script died: {_tail(work)}")
    go = time.time() + 0.1
    for proc in procs:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{go}\n")
        proc.stdin.close()
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # what it prints after
    deadline = go + CUT_OFF * planned_bound(mix)
    stopped = None
    for proc in procs:
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            stopped = deadline - go
            for other in procs:
                other.kill()
                other.wait()
            break
        if code:
            raise RuntimeError(f"a {mode} script failed ({code}): {_tail(work)}")
    ran: list[Ran] = []
    for e, out in enumerate(outs):
        trials = mix.experiments[e].trials
        if out.exists():
            rows = json.loads(out.read_text())
        else:  # cut off: the last result each trial reported
            last: dict[int, list[float]] = {}
            reported = Path(f"{out}.rows")
            for line in reported.read_text().splitlines() if reported.exists() else []:
                i, t0, t = json.loads(line)
                if i not in last or t > last[i][2]:
                    last[i] = [i, t0, t]
            rows = list(last.values())
        for i, t0, t in rows:
            ran.append(Ran(e, int(i), trials[int(i)], t0 - go, t - go))
    return ran, stopped


def _tail(work: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(work.glob("stderr*")))


def run_ours(mix: Mix, tmp: Path) -> Outcome:
    args = ["--num-cpus", str(mix.cpus), "--num-gpus", str(mix.gpus), "--memory", str(mix.memory)]
    with bench_daemon(*args) as d:
        return outcome(mix, *run_mix(mix, "tuned", sys.executable, d.env(), tmp))


def run_ray(mix: Mix, python: Path, tmp: Path) -> Outcome:
    with ray_cluster(mix, python, tmp) as (address, env):
        return outcome(mix, *run_mix(mix, "ray", str(python), env, tmp, address))


def describe(o: Outcome) -> str:
    first = "" if o.first_wait is None else f", first-trial wait {_at_least(o)}{o.first_wait:.2f}"
    return (
        f"makespan {_at_least(o)}{o.makespan:.1f} s / bound {o.bound:.1f} s = "
        f"{_at_least(o)}{o.makespan / o.bound:.3f}, {o.binding} busy {o.utilization:.1%}, "
        f"starvation {_at_least(o)}{o.starvation:.2f}{first}"
        + (" (cut off: still running)" if o.stopped else "")
    )


def _at_least(o: Outcome) -> str:
    return ">= " if o.stopped else ""


def figures(mix: Mix, ours: Outcome, ray: Outcome | None) -> list[Figure]:
    """Rows for RESULTS.md: ours against the goals, Ray Tune's beside them.

    A Ray Tune run cut off at ``CUT_OFF`` times the planned bound shows ">=":
    its makespan (and waits) were at least that, its utilization is up to then.
    """
    where = f"packing, {mix.gpus} GPUs, {mix.name}"
    ge = _at_least(ray) if ray else ""

    def theirs(text: str) -> str:
        return f"; Ray Tune: {text}" if ray else ""

    rows = [
        Figure(
            f"{where}: makespan / lower bound",
            1.05,
            ours.makespan / ours.bound,
            "x",
            note=f"{ours.makespan:.1f} s against {ours.bound:.1f} s ({ours.binding}-bound)"
            + theirs(
                f"{ge}{ray.makespan / ray.bound:.2f} x ({ge}{ray.makespan:.0f} s)" if ray else ""
            ),
        ),
        Figure(
            f"{where}: {ours.binding} utilization",
            0.95,
            ours.utilization,
            "",
            higher_is_better=True,
            note=theirs(f"{ray.utilization:.2f}" if ray else "").lstrip("; "),
        ),
        Figure(
            f"{where}: longest wait of a big trial behind later smaller ones",
            1.0,
            ours.starvation,
            "trials",
            note=f"in units of the longest trial ({ours.longest:.1f} s)"
            + theirs(f"{ge}{ray.starvation:.2f}" if ray else ""),
        ),
    ]
    if ours.first_wait is not None:
        rows.append(
            Figure(
                f"{where}: longest wait of a later experiment for its first trial",
                1.0,
                ours.first_wait,
                "trials",
                note="in units of the longest trial"
                + theirs(f"{ge}{ray.first_wait:.2f}" if ray and ray.first_wait is not None else ""),
            )
        )
    if ray is not None:
        rows.append(
            Figure(
                f"{where}: makespan against Ray Tune's",
                1.0,
                ours.makespan / ray.makespan,
                "x",
                note=f"tuned {ours.makespan:.1f} s, Ray Tune {ge}{ray.makespan:.0f} s"
                + (f" (cut off at {CUT_OFF:g}x the planned bound)" if ray.stopped else ""),
            )
        )
    return rows


def measure(
    unit: float = 1.0, gpus: tuple[int, ...] = (4, 8), only: str = "", with_ray: bool = True
) -> list[Figure]:
    python = None
    if with_ray:
        from .ray_side import ensure_ray

        python = ensure_ray()
    chosen = [m for count in gpus for m in mixes(count, unit) if not only or m.name == only]
    ours: list[Outcome] = []
    theirs: list[Outcome | None] = []
    with tempfile.TemporaryDirectory(prefix="tuned-bench-packing-") as tmp:
        # Every mix on tuned first, then every mix on Ray Tune: ours are measured back
        # to back, and what else the machine runs during the (much longer) Ray side
        # does not fall on them.
        for mix in chosen:
            ours.append(run_ours(mix, Path(tmp)))
            print(f"  tuned    {mix.gpus} GPUs, {mix.name}: {describe(ours[-1])}", flush=True)
        for mix in chosen:
            ray = None if python is None else run_ray(mix, python, Path(tmp))
            if ray is not None:
                print(f"  Ray Tune {mix.gpus} GPUs, {mix.name}: {describe(ray)}", flush=True)
            theirs.append(ray)
    return [fig for m, o, r in zip(chosen, ours, theirs, strict=True) for fig in figures(m, o, r)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.packing", description=__doc__)
    parser.add_argument("--unit", type=float, default=1.0, help="seconds per unit of trial time")
    parser.add_argument("--gpus", default="4,8", help="machine sizes, comma-separated")
    parser.add_argument("--mix", default="", help="one mix by name")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Tune side")
    args = parser.parse_args()
    gpus = tuple(int(g) for g in args.gpus.split(","))
    for fig in measure(args.unit, gpus, args.mix, not args.no_ray):
        print(fig.line())


if __name__ == "__main__":
    main()

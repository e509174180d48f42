"""The seed sweep under Ray Tune and under tuned, side by side (``--with-ray``).

Ray is never a dependency: it is installed on request into ``bench/.ray-venv``.
Both runs execute the same file, the seed example, with only its import line
differing (``from ray import tune`` for Ray), through the same wrapper: it
times ``Tuner.fit`` from the outside and prints the driver's peak RSS at exit.
Both start cold, as a user's first run would: Ray's ``fit()`` starts a local
cluster, ours auto-starts the daemon. Driver RSS is the script's own process
only: Ray's raylet, GCS and workers are not in it, nor is our daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .daemon import bench_daemon
from .figures import Figure
from .seed import EXAMPLE, TIMED, TUNER

VENV = Path(__file__).resolve().parent / ".ray-venv"
OURS_IMPORT = "from tuned_client import tune"
RAY_IMPORT = "from ray import tune"

def ensure_ray() -> Path:
    """The venv's python, with ``ray[tune]`` installed (again, if an install broke)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(python), "-c", "import ray.tune"], capture_output=True).returncode:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "ray[tune]"], check=True)
    return python


def ray_version(python: Path) -> str:
    code = "import ray; print(ray.__version__)"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


def run_timed(
    python: str, tuner_module: str, script: Path, env: dict[str, str]
) -> dict[str, float]:
    """One run of ``script``: whole-script wall time, fit() time and peak driver RSS."""
    t = time.perf_counter()
    out = subprocess.run(
        [python, "-c", TIMED, tuner_module, str(script)],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t
    if out.returncode != 0 or "score" not in out.stdout:
        raise RuntimeError(f"{script.name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    got = {"wall": wall}
    for line in out.stderr.splitlines():
        key, _, value = line.partition(" ")
        if key in ("FIT_SECONDS", "PEAK_RSS"):
            got[key] = float(value)
    return got


def run_ray(python: Path, tmp: Path) -> dict[str, float]:
    source = EXAMPLE.read_text()
    assert OURS_IMPORT in source
    script = tmp / "basic_experiment_ray.py"
    script.write_text(source.replace(OURS_IMPORT, RAY_IMPORT))
    # HOME: Ray writes ~/ray_results; no usage report leaves the machine.
    env = {**os.environ, "HOME": str(tmp), "RAY_USAGE_STATS_ENABLED": "0"}
    return run_timed(str(python), "ray.tune.tuner", script, env)


def run_ours() -> dict[str, float]:
    with bench_daemon(start=False) as d:  # the client auto-starts it: a cold start
        return run_timed(sys.executable, TUNER, EXAMPLE, d.env())


def median(runs: list[dict[str, float]], key: str) -> float:
    values = sorted(r[key] for r in runs)
    return values[len(values) // 2]


def measure(repeats: int = 3) -> list[Figure]:
    python = ensure_ray()
    version = ray_version(python)
    with tempfile.TemporaryDirectory(prefix="tuned-bench-ray-") as tmp:
        ray = run_ray(python, Path(tmp))
    ours = [run_ours() for _ in range(repeats)]
    rows = (
        ("fit()", "FIT_SECONDS", "s", 1.0),
        ("whole script", "wall", "s", 1.0),
        ("driver peak RSS", "PEAK_RSS", "MiB", 2**-20),
    )
    figures: list[Figure] = []
    for what, key, unit, scale in rows:
        theirs, mine = ray[key] * scale, median(ours, key) * scale
        figures += [
            Figure(
                f"side by side, seed sweep: Ray Tune {what}",
                None,
                theirs,
                unit,
                note=f"Ray {version}, 1 run, cold (fit() starts a local cluster); "
                f"{theirs / mine:.0f}x tuned's",
            ),
            Figure(
                f"side by side, seed sweep: tuned {what}",
                None,
                mine,
                unit,
                note=f"median of {repeats} in the same bench run, cold (fit() starts the daemon)",
            ),
        ]
    return figures


def main() -> None:
    for fig in measure():
        print(fig.line())


if __name__ == "__main__":
    main()

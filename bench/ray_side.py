"""The seed sweep under Ray Tune, side by side (only with ``--with-ray``).

Ray is never a dependency: it is installed on request into ``bench/.ray-venv``
and the seed example runs there with its import line swapped back to
``from ray import tune``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .figures import Figure
from .seed import EXAMPLE

VENV = Path(__file__).resolve().parent / ".ray-venv"


def ensure_ray() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "ray[tune]"], check=True)
    return python


def measure() -> list[Figure]:
    python = ensure_ray()
    source = EXAMPLE.read_text().replace("from tuned_client import tune", "from ray import tune")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "basic_experiment_ray.py"
        script.write_text(source)
        t = time.perf_counter()
        out = subprocess.run(
            [str(python), str(script)], cwd=tmp, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"the seed under Ray failed:\n{out.stderr[-3000:]}")
    return [Figure("Ray Tune: seed sweep, whole script", None, wall, "s", note="for comparison")]


def main() -> None:
    for fig in measure():
        print(fig.line())


if __name__ == "__main__":
    main()

"""What a trial attempt runs: its folder, its environment and command, its launch spec.

The trial gets the client's environment with its own CUDA_VISIBLE_DEVICES,
thread counts that follow its CPUs, and the ``TUNED_*`` variables its worker
uses to reach the daemon and prove which trial it is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tuned_client import protocol as p

from ..core.ledger import SCALE, Capacity
from ..core.model import Trial
from ..store.results import trial_dir_name
from .launcher import LaunchSpec, thread_env
from .leftovers import MARKER


def prepare_dir(trial: Trial) -> tuple[Path, bool]:
    """The trial's folder, and whether it was made just now (so it holds no result files).

    Its ``params.json`` is written once the trial's process is on its way
    (``write_params`` in ``supervise``): off the path from admission to user code.
    """
    if trial.dir is None:
        exp = trial.experiment
        date = time.strftime("%Y-%m-%d_%H-%M-%S")
        name = trial_dir_name(exp.spec.trainable_name, trial.id, trial.tag, date)
        path = exp.path / name
        fresh = True
        try:
            os.mkdir(path)  # one syscall: the experiment folder exists since submit
        except FileNotFoundError:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            fresh = False
        trial.dir = path
        return path, fresh
    return trial.dir, False


def launch_spec(
    trial: Trial,
    capacity: Capacity,
    socket_path: Path,
    state_dir: Path,
    trial_dir: Path,
    fresh: bool = False,
) -> LaunchSpec:
    spec = trial.experiment.spec
    allocation = trial.allocation
    assert allocation is not None
    env = dict(spec.env)
    env.update(thread_env(allocation.cpu / SCALE, spec.env))
    env.setdefault("PYTHONUNBUFFERED", "1")
    trial.gpu_ids = allocation.cuda_visible_devices(capacity)
    env["CUDA_VISIBLE_DEVICES"] = trial.gpu_ids
    env["TUNED_SOCKET"] = str(socket_path)
    env[MARKER] = str(state_dir)  # what tells this daemon's leftovers apart after a crash
    env["TUNED_TRIAL_ID"] = trial.id
    env["TUNED_TRIAL_TOKEN"] = trial.token
    env["TUNED_TRIAL_DIR"] = str(trial_dir)
    if spec.command:
        argv = fill_command(spec.command, p.unpack_opaque(trial.config))
        if len(argv) == 1:
            argv = ["/bin/sh", "-c", argv[0]]
    else:
        argv = [spec.python, "-m", "tuned_client.worker"]
        return LaunchSpec(
            argv,
            env,
            spec.cwd,
            trial_dir / "stdout",
            trial_dir / "stderr",
            # Thread pools (OpenBLAS, MKL) size themselves at import, in the zygote.
            pool_key=trial.experiment.id + ":" + env.get("OMP_NUM_THREADS", ""),
            trainable_path=str(trial.experiment.trainable_path),
            sys_path=tuple(spec.sys_path),
            request=trial.request,
            fresh_dir=fresh,
        )
    return LaunchSpec(
        argv, env, spec.cwd, trial_dir / "stdout", trial_dir / "stderr", request=trial.request
    )


def fill_command(template: list[str], config: object) -> list[str]:
    """A command trial's argv: ``{name}`` placeholders filled from the trial's config."""
    if not isinstance(config, dict):
        return list(template)
    try:
        return [part.format(**config) for part in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"cannot fill the command template {template!r} from the config {config!r}: "
            f"{type(exc).__name__}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from exc


def stderr_tail(trial: Trial, limit: int = 4000) -> str:
    """The end of what a trial wrote to stderr: why it died, when it could not say."""
    if trial.dir is None:
        return ""
    try:
        with open(trial.dir / "stderr", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            tail = f.read().decode(errors="replace").strip()
    except OSError:
        return ""
    return f"\n\nLast lines of its stderr:\n{tail}" if tail else ""

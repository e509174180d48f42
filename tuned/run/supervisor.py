"""One trial attempt: spawn, watch, time out, kill the whole tree, decide what's next.

Runs as a task per running trial in the daemon's task group. The time limit is
a cancel scope; the cleanup (terminate, grace period, SIGKILL, reap, release the
resources) is shielded, so a daemon shutting down still leaves no process
behind and the ledger full.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import anyio
import structlog
from tuned_client import protocol as p

from ..core.ledger import SCALE
from ..core.model import Trial
from ..daemon import Daemon
from ..store.results import TrialFiles, trial_dir_name, write_error, write_params
from .launcher import LaunchSpec, TrialProcess, thread_env
from .monitor import wait_gpu_release

log = structlog.get_logger("tuned.run.supervisor")

_files: dict[str, TrialFiles] = {}


def files_of(trial: Trial) -> TrialFiles:
    """The open result files of a running trial (opened when it started)."""
    return _files[trial.id]


def prepare_dir(daemon: Daemon, trial: Trial) -> tuple[Path, bool]:
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


def launch_spec(daemon: Daemon, trial: Trial, trial_dir: Path, fresh: bool = False) -> LaunchSpec:
    spec = trial.experiment.spec
    allocation = trial.allocation
    assert allocation is not None
    env = dict(spec.env)
    env.update(thread_env(allocation.cpu / SCALE, spec.env))
    env.setdefault("PYTHONUNBUFFERED", "1")
    trial.gpu_ids = allocation.cuda_visible_devices(daemon.capacity)
    env["CUDA_VISIBLE_DEVICES"] = trial.gpu_ids
    env["TUNED_SOCKET"] = str(daemon.settings.socket_path)
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


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"the trial process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the trial process was killed by signal {-code}"
    return f"the trial process exited with code {code}"


async def terminate(daemon: Daemon, proc: TrialProcess) -> int:
    """SIGTERM to the whole tree, a grace period, then SIGKILL; returns the exit code."""
    proc.signal(signal.SIGTERM)
    with anyio.move_on_after(daemon.settings.kill_grace_s):
        return await proc.wait()
    proc.signal(signal.SIGKILL)
    return await proc.wait()


async def supervise(daemon: Daemon, trial: Trial) -> None:
    exp = trial.experiment
    spec = exp.spec
    allocation = trial.allocation
    assert allocation is not None
    trial.attempt += 1
    trial.exit_reported = trial.exit_ok = trial.timed_out = False
    code: int | None = None
    proc: TrialProcess | None = None
    lost = ""
    try:
        try:
            trial_dir, fresh = prepare_dir(daemon, trial)
            files = _files[trial.id] = TrialFiles(trial_dir, trial.checkpoint_offsets, fresh=fresh)
            files.on_pending = daemon.results_pending
            launch = launch_spec(daemon, trial, trial_dir, fresh)
            proc = await daemon.launcher.start(launch)
            write_params(trial_dir, p.unpack_opaque(trial.config))  # a new config each attempt
        except Exception as exc:  # a bad trial fails alone: the daemon serves on
            log.warning("could not start trial", trial=trial.id, error=str(exc))
            trial.error = f"could not start the trial: {type(exc).__name__}: {exc}"
            trial.traceback = trial.error
            if proc is not None:  # it started, but its params.json could not be written
                proc.signal(signal.SIGTERM)
        if proc is not None:
            trial.pid = proc.pid
            trial.process = proc
            trial.started_at = time.time()
            if trial.stop_requested:  # cancelled or stopped while it was being spawned
                proc.signal(signal.SIGTERM)
            daemon.emit(
                p.TrialStarted,
                experiment_id=exp.id,
                trial_id=trial.id,
                pid=proc.pid,
                attempt=trial.attempt,
                resources=trial.resources[0] if trial.resources else {},
                gpu_ids=trial.gpu_ids,
                trial_dir=str(trial_dir),
            )
            limit = spec.trial_timeout_s or math.inf
            with anyio.move_on_after(limit) as scope:
                code = await proc.wait()
            if scope.cancelled_caught:
                trial.timed_out = True
                with anyio.CancelScope(shield=True):
                    code = await terminate(daemon, proc)
    finally:
        with anyio.CancelScope(shield=True):
            if proc is not None:
                if code is None:  # the daemon is stopping: take the trial down with it
                    code = await terminate(daemon, proc)
                proc.signal(signal.SIGKILL)  # anything it left in its group
                lost = proc.lost
                reason = proc.exit_reason(code) if code != 0 else ""
                if reason and not trial.error:  # e.g. the Ray node running it died
                    trial.error = reason
                    trial.traceback = reason + stderr_tail(trial)
            await wait_gpu_release(daemon, trial)
            done = _files.pop(trial.id, None)
            if done is not None:
                trial.checkpoint_offsets = done.checkpoint_offsets
                done.close()  # writes the rows still in memory
                if done.failed is not None and not trial.error:
                    trial.error = trial.traceback = (
                        f"OSError: cannot write the trial's results in {done.dir}: "
                        f"{done.failed.strerror or done.failed}"
                    )
                    trial.exit_reported, trial.exit_ok = True, False
            daemon.ledger.release(allocation)
            trial.allocation = None
            trial.pid = 0
            trial.process = None
            daemon.running.pop(trial.id, None)
    if daemon.stopping:
        return
    conclude(daemon, trial, code, lost)
    daemon.wake()


# A trial lost this many times in a row (its zygote dying under it) counts as failed:
# a trainable that kills the process that forked it must not loop for ever.
MAX_LOSSES = 3


def conclude(daemon: Daemon, trial: Trial, code: int | None, lost: str = "") -> None:
    """Decide the attempt's outcome: done, retried, run again (lost), or failed for good."""
    spec = trial.experiment.spec
    if lost and trial.exit_reported:  # it had ended and said how; only its exit code was lost
        code = 0 if trial.exit_ok else 1
    elif lost and not trial.stop_requested and not trial.timed_out:
        if trial.losses < MAX_LOSSES:
            trial.losses += 1
            log.warning(
                "trial lost through no fault of its own; running it again from its checkpoint",
                trial=trial.id,
                reason=lost,
                checkpoint=trial.checkpoint or "none (from the start)",
            )
            daemon.requeue(
                trial, f"{lost}; running it again from its last checkpoint", counted=False
            )
            return
        trial.error = trial.traceback = f"{lost}, {trial.losses + 1} times in a row"
    if not lost:
        trial.losses = 0
    ok = code == 0 and (trial.exit_ok or (bool(spec.command) and not trial.exit_reported))
    if trial.stop_requested and trial.error == "cancelled":
        daemon.finish(trial, "ERROR")
        return
    if trial.stop_requested:  # StopTrial or the time budget: it ends as finished
        trial.error = trial.traceback = ""
        daemon.finish(trial, "TERMINATED")
        return
    if ok:
        trial.error = trial.traceback = ""
        daemon.finish(trial, "TERMINATED")
        return
    if trial.timed_out:
        trial.error = f"TimeoutError: the trial ran past its {spec.trial_timeout_s:g} s time limit"
        trial.traceback = trial.error
    elif not trial.error:
        if code == 0:
            trial.error = "the trial process exited without reporting how it ended"
        else:
            trial.error = describe_exit(code if code is not None else -9)
            trial.traceback = trial.error + stderr_tail(trial)
    if trial.failures < spec.max_failures:
        trial.failures += 1
        log.info("retrying trial", trial=trial.id, error=trial.error, attempt=trial.attempt)
        daemon.requeue(trial, trial.error)
        return
    if trial.dir is not None:
        write_error(trial.dir, trial.error, trial.traceback)
    daemon.finish(trial, "ERROR")
    if spec.fail_fast and not trial.experiment.cancelled:
        daemon.cancel(trial.experiment.id)

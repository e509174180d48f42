"""Starting and killing a trial's processes.

Each trial is the leader of its own session and process group, so one signal
reaches everything it started. Its stdout and stderr go straight to files: the
daemon never reads a trial's output on its event loop, however much it prints.
Spawning sits behind ``Launcher`` so tests and the fast path can swap it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio
import anyio.abc
import psutil

from ..core.ledger import Capacity, Request

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    stdout: Path
    stderr: Path
    # The fast path (``tuned.run.forkserver``): trials with the same pool key may be
    # forked from one warm zygote that has loaded ``trainable_path``; "" spawns.
    pool_key: str = ""
    trainable_path: str = ""
    sys_path: tuple[str, ...] = ()
    # What the trial was admitted with: executors that place trials themselves
    # (Ray) ask their scheduler for exactly this.
    request: Request | None = None
    # The trial folder was made for this attempt: it holds no checkpoint yet.
    fresh_dir: bool = False


class TrialProcess(Protocol):
    """A running trial, wherever it runs: the supervisor only waits and signals."""

    @property
    def pid(self) -> int:
        """The local process id, for sampling and recovery; 0 when it runs elsewhere."""
        ...

    async def wait(self) -> int:
        """The exit code; minus the signal number if a signal ended it."""
        ...

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to everything the trial started (SIGKILL: no grace)."""
        ...

    def exit_reason(self, code: int) -> str:
        """Why it ended, in words, when more is known than the code ("" if not)."""
        ...

    @property
    def lost(self) -> str:
        """Why the trial's machinery took it down, if it did ("" if not): not its fault,
        so it runs again from its checkpoint without counting a failure."""
        ...


class Launcher(Protocol):
    async def start(self, spec: LaunchSpec) -> TrialProcess: ...

    def experiment_done(self, experiment_id: str) -> None:
        """Nothing more of this experiment will run: free what was kept warm for it."""
        ...


@runtime_checkable
class ClusterLauncher(Launcher, Protocol):
    """An executor that runs trials on machines it knows better than the daemon does.

    It says what capacity the ledger mirrors, refuses what no single node could
    run, and keeps the mirror current while the daemon runs.
    """

    def capacity(self) -> Capacity: ...

    def check(self, request: Request) -> None:
        """Raise ImpossibleRequest if no node could ever run a bundle of ``request``."""
        ...

    async def watch(self, resize: Callable[[Capacity], None]) -> None:
        """Follow the cluster as nodes join and leave: ``resize`` to its capacity."""
        ...

    def close(self) -> None: ...


class LocalProcess:
    """A trial process on this machine, leader of its own process group."""

    def __init__(self, pid: int, wait: Callable[[], Awaitable[int]]) -> None:
        self.pid = pid
        self._wait = wait

    async def wait(self) -> int:
        return await self._wait()

    def signal(self, sig: signal.Signals) -> None:
        signal_tree(self.pid, sig)

    def exit_reason(self, code: int) -> str:
        return ""

    @property
    def lost(self) -> str:
        return ""


class SpawnLauncher:
    """A fresh process per trial (the client's interpreter, or a command)."""

    async def start(self, spec: LaunchSpec) -> TrialProcess:
        proc = await self._open(spec)
        return LocalProcess(proc.pid, proc.wait)

    def experiment_done(self, experiment_id: str) -> None:
        pass  # nothing is kept per experiment

    async def _open(self, spec: LaunchSpec) -> anyio.abc.Process:
        with open(spec.stdout, "ab") as out, open(spec.stderr, "ab") as err:
            return await anyio.open_process(
                spec.argv,
                stdin=None,
                stdout=out,
                stderr=err,
                cwd=spec.cwd if os.path.isdir(spec.cwd) else None,
                env=spec.env,
                start_new_session=True,
            )


def thread_env(cpu: float, user_env: dict[str, str]) -> dict[str, str]:
    """Thread-count variables matching the trial's CPUs, unless the user chose them."""
    n = str(max(1, int(cpu)))
    return {var: n for var in THREAD_VARS if var not in user_env}


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal the trial's process group and any descendant that left it."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True

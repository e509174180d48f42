"""The fast path: function trials forked from a warm zygote instead of spawned.

``ForkLauncher`` keeps one zygote (``tuned_client.zygote``) per pool key, i.e.
per experiment: started with the client's interpreter, working directory and
environment, it imports the trainable once and forks a process per trial. The
daemon is not the trial's parent, so the zygote reports each trial's exit over
the control socket; killing stays ``os.killpg`` on the trial's pid (it leads its
own session), so timeouts and tree kills work as with spawned trials.

Command trials, experiments whose trainable initialises CUDA on import, and any
trial the zygote cannot fork go through ``SpawnLauncher``: the fast path never
changes what runs, only how fast it starts.

The control socket is read by an event-loop reader callback (the daemon runs on
asyncio/uvloop), so no task outlives the trials that use it: a zygote that goes
idle exits by itself and a new one starts on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import Process
from tuned_client import zygote as z

from .launcher import LaunchSpec, SpawnLauncher, TrialProcess, signal_tree

log = structlog.get_logger("tuned.forkserver")

STARTUP_TIMEOUT_S = 120.0  # importing a heavy trainable (torch) can take a while
PER_TRIAL_VARS = ("CUDA_VISIBLE_DEVICES", "TUNED_TRIAL_ID", "TUNED_TRIAL_TOKEN", "TUNED_TRIAL_DIR")


class ZygoteGone(Exception):
    """The zygote exited or refused; the trial is spawned instead."""


class ForkedTrial:
    """A trial process forked by a zygote; its exit status arrives over the socket."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None
        self.exited = anyio.Event()

    def set_exit(self, code: int) -> None:
        if self.code is None:
            self.code = code
            self.exited.set()

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.code is not None
        return self.code

    def signal(self, sig: signal.Signals) -> None:
        signal_tree(self.pid, sig)

    def exit_reason(self, code: int) -> str:
        return ""


class Zygote:
    """The daemon's end of one zygote: requests out, replies and exits in."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.sock: socket.socket | None = None
        self.proc: Process | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.frames = z.FrameBuffer(msgspec.msgpack.Decoder(z.FromZygote))
        self.ready = anyio.Event()
        self.refused = ""
        self.gone = False
        self.next_req = 0
        self.pending: dict[int, tuple[anyio.Event, list[z.Forked]]] = {}
        self.trials: dict[int, ForkedTrial] = {}
        self.early_exits: dict[int, int] = {}
        # One Fork frame on the socket at a time: concurrent ``sock_sendall`` calls on
        # one socket stall for good under uvloop once its buffer fills (a burst of
        # about 50 admissions), leaving those trials without a process.
        self.send_lock = anyio.Lock()

    async def start(self, spec: LaunchSpec, log_path: Path | None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {k: v for k, v in spec.env.items() if k not in PER_TRIAL_VARS}
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU is visible while preloading
        argv = [
            spec.argv[0], "-m", "tuned_client.zygote", str(theirs.fileno()),
            spec.trainable_path, *spec.sys_path,
        ]  # fmt: skip
        out: Any = subprocess.DEVNULL
        if log_path:
            with contextlib.suppress(OSError):  # a read-only state dir costs the log only
                out = open(log_path, "ab")  # noqa: SIM115
        try:
            self.proc = await anyio.open_process(  # the event loop reaps it
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=spec.cwd if os.path.isdir(spec.cwd) else None,
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        finally:
            theirs.close()
            if not isinstance(out, int):
                out.close()
        ours.setblocking(False)
        self.sock = ours
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(ours.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            return
        try:
            messages = self.frames.feed(data)
        except (ValueError, msgspec.DecodeError) as exc:
            log.error("bad frame from a zygote", key=self.key, error=str(exc))
            self._close()
            return
        for msg in messages:
            self._dispatch(msg)

    def _dispatch(self, msg: z.Ready | z.Refuse | z.Forked | z.Exited) -> None:
        if isinstance(msg, z.Ready):
            self.ready.set()
        elif isinstance(msg, z.Refuse):
            self.refused = msg.reason
            self._close()
        elif isinstance(msg, z.Forked):
            waiter = self.pending.pop(msg.req, None)
            if waiter is not None:
                waiter[1].append(msg)
                waiter[0].set()
        else:
            trial = self.trials.pop(msg.pid, None)
            if trial is not None:
                trial.set_exit(msg.code)
            else:
                self.early_exits[msg.pid] = msg.code

    def _close(self) -> None:
        """The zygote is gone: wake everyone; its children die with it (PDEATHSIG)."""
        if self.gone:
            return
        self.gone = True
        if self.sock is not None and self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self.ready.set()
        for event, _ in self.pending.values():
            event.set()
        self.pending.clear()
        for trial in self.trials.values():
            trial.set_exit(-9)
        self.trials.clear()

    async def fork(self, spec: LaunchSpec) -> ForkedTrial:
        await self.ready.wait()
        if self.gone or self.sock is None or self.loop is None:
            raise ZygoteGone(self.refused or "the zygote exited")
        self.next_req += 1
        req = self.next_req
        event = anyio.Event()
        reply: list[z.Forked] = []
        self.pending[req] = (event, reply)
        frame = z.encode(
            z.Fork(
                req=req,
                env=spec.env,
                cwd=spec.cwd,
                stdout=str(spec.stdout),
                stderr=str(spec.stderr),
            )
        )
        try:
            async with self.send_lock:
                await self.loop.sock_sendall(self.sock, frame)
        except OSError as exc:
            self._close()
            raise ZygoteGone(f"the zygote is unreachable: {exc}") from exc
        await event.wait()
        if not reply:
            raise ZygoteGone(self.refused or "the zygote exited")
        if reply[0].error:
            raise OSError(reply[0].error)
        trial = ForkedTrial(reply[0].pid)
        if reply[0].pid in self.early_exits:
            trial.set_exit(self.early_exits.pop(reply[0].pid))
        else:
            self.trials[trial.pid] = trial
        return trial

    def stop(self) -> None:
        self._close()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class ForkLauncher:
    """Forks function trials from a per-experiment zygote; spawns everything else."""

    def __init__(self, log_path: Path | None = None, spawn: SpawnLauncher | None = None) -> None:
        self.spawn = spawn or SpawnLauncher()
        self.log_path = log_path
        self.zygotes: dict[str, Zygote] = {}
        self.spawn_only: set[str] = set()

    async def start(self, spec: LaunchSpec) -> TrialProcess:
        key = spec.pool_key
        if not key or key in self.spawn_only or not spec.trainable_path:
            return await self.spawn.start(spec)
        zygote = self.zygotes.get(key)
        if zygote is None or zygote.gone:
            zygote = self.zygotes[key] = Zygote(key)
            started = time.monotonic()
            await zygote.start(spec, self.log_path)
            with anyio.move_on_after(STARTUP_TIMEOUT_S):
                await zygote.ready.wait()
            if not zygote.ready.is_set():
                zygote.refused = f"it did not start within {STARTUP_TIMEOUT_S:g} s"
                zygote.stop()
            log.debug("zygote started", key=key, seconds=round(time.monotonic() - started, 3))
        try:
            return await zygote.fork(spec)
        except ZygoteGone as exc:
            if zygote.refused:
                self.spawn_only.add(key)
                log.warning("spawning this experiment's trials instead", key=key, reason=str(exc))
            if self.zygotes.get(key) is zygote:
                del self.zygotes[key]
            return await self.spawn.start(spec)

    def forget(self, key: str) -> None:
        """The experiment is over: stop its zygote."""
        zygote = self.zygotes.pop(key, None)
        if zygote is not None:
            zygote.stop()

    def close(self) -> None:
        for key in list(self.zygotes):
            self.forget(key)

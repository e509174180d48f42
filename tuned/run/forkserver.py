"""The fast path: function trials forked from a warm zygote instead of spawned.

``ForkLauncher`` keeps one zygote (``tuned_client.zygote``) per pool key, i.e.
per experiment: started with the client's interpreter, working directory and
environment, it imports the trainable once and forks a process per trial. It
forks them ahead of need: a *spare* connects to the daemon's socket, says
``SpareHello`` with the zygote's token, and waits; admitting a trial hands it to
an idle spare (its connection task sends the ``Assignment``) and asks the zygote
for the next spare. The daemon is not the trial's parent, so the zygote reports
each trial's exit over the control socket; killing stays ``os.killpg`` on the
trial's pid (it leads its own session), so timeouts and tree kills work as with
spawned trials.

Command trials, experiments whose trainable initialises CUDA on import, and any
trial the zygote cannot fork go through ``SpawnLauncher``: the fast path never
changes what runs, only how fast it starts.

The control socket is read and written by event-loop callbacks (the daemon runs
on asyncio/uvloop), so no task outlives the trials that use it. A spare nobody
takes within ``Settings.spare_idle_s`` is retired, and a zygote with no child left exits
by itself; a new one starts on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import anyio
import msgspec
import structlog
from anyio.abc import Process
from tuned_client import protocol as p
from tuned_client import zygote as z

from ..store.private import open_private
from .launcher import LaunchSpec, SpawnLauncher, TrialProcess
from .spares import Children, ForkedTrial, Spare, Waiter

log = structlog.get_logger("tuned.run.forkserver")

STARTUP_TIMEOUT_S = 120.0  # importing a heavy trainable (torch) can take a while
PER_TRIAL_VARS = ("CUDA_VISIBLE_DEVICES", "TUNED_TRIAL_ID", "TUNED_TRIAL_TOKEN", "TUNED_TRIAL_DIR")


class ZygoteGone(Exception):
    """The zygote exited or refused; the trial is spawned instead."""


class Zygote:
    """The daemon's end of one zygote: its control socket, and its children (``Children``).

    ``take`` keeps ``SPARES_AHEAD`` spares ahead, so the next trial finds its
    process already waiting.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.token = secrets.token_hex(16)
        self.sock: socket.socket | None = None
        self.proc: Process | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.frames = z.FrameBuffer(msgspec.msgpack.Decoder(z.FromZygote))
        self.ready = anyio.Event()
        self.refused = ""
        self.gone = False
        self.children = Children()
        self.outbox = bytearray()  # Spawn frames the socket did not take yet

    async def start(self, spec: LaunchSpec, log_path: Path | None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {k: v for k, v in spec.env.items() if k not in PER_TRIAL_VARS}
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU is visible while preloading
        argv = [
            spec.argv[0], "-m", "tuned_client.zygote", str(theirs.fileno()),
            spec.trainable_path, *spec.sys_path,
        ]  # fmt: skip
        out: int = subprocess.DEVNULL
        if log_path:
            with contextlib.suppress(OSError):  # a read-only state dir costs the log only
                out = open_private(log_path)
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
            if out != subprocess.DEVNULL:
                os.close(out)
        self.attach(ours)

    def attach(self, sock: socket.socket) -> None:
        """Talk to the zygote over ``sock`` (its end of the control socket pair)."""
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._on_readable)

    # ------------------------------------------------------------ control socket

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

    def _dispatch(self, msg: z.Ready | z.Refuse | z.SpawnFailed | z.Exited) -> None:
        if isinstance(msg, z.Ready):
            self.ready.set()
        elif isinstance(msg, z.Refuse):
            self.refused = msg.reason
            self._close()
        elif isinstance(msg, z.SpawnFailed):
            self.children.spawn_failed(msg.error)
        elif self.children.exited(msg.pid, msg.code):
            self._top_up()

    def _send(self, message: z.Spawn) -> None:
        """Queue a frame for the zygote; the loop writes it when the socket has room.

        One writer, never an await: concurrent ``sock_sendall`` calls on one socket
        stall for good under uvloop once its buffer fills.
        """
        if self.gone or self.sock is None or self.loop is None:
            return
        pending = bool(self.outbox)
        self.outbox += z.encode(message)
        if not pending:
            self._on_writable()

    def _on_writable(self) -> None:
        assert self.sock is not None and self.loop is not None
        try:
            sent = self.sock.send(self.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close()
            return
        del self.outbox[:sent]
        if self.outbox:
            self.loop.add_writer(self.sock.fileno(), self._on_writable)
        else:
            self.loop.remove_writer(self.sock.fileno())

    def _close(self) -> None:
        """The zygote is gone: wake everyone; its children die with it (PDEATHSIG)."""
        if self.gone:
            return
        self.gone = True
        if self.sock is not None and self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        self.ready.set()
        self.children.close()

    # ------------------------------------------------------------ spares

    def _top_up(self) -> None:
        """Ask for spares until every waiter has one coming and one more is on its way."""
        for _ in range(self.children.top_up()):
            self._send(z.Spawn(pool=self.key, token=self.token))

    def adopt(self, pid: int) -> Spare | None:
        """A spare said hello (pid from the kernel); None if it cannot be one of ours."""
        return None if self.gone else self.children.hello(pid)

    def release(self, spare: Spare) -> None:
        """An idle spare leaves: its connection is closed, so it exits and is not replaced."""
        self.children.release(spare)

    async def take(self) -> Spare:
        """An idle spare, or the next one to arrive."""
        await self.ready.wait()
        if self.gone:
            raise ZygoteGone(self.refused or "the zygote exited")
        spare = self.children.take()
        if spare is not None:
            self._top_up()
            return spare
        waiter = Waiter()
        self.children.waiters.append(waiter)
        self._top_up()
        try:
            await waiter.arrived.wait()
        except BaseException:  # cancelled while waiting: give back what came meanwhile
            if waiter in self.children.waiters:
                self.children.waiters.remove(waiter)
            elif isinstance(waiter.got, Spare):
                self.children.put_back(waiter.got)
            raise
        if waiter.got is None:
            raise ZygoteGone(self.refused or "the zygote exited")
        if isinstance(waiter.got, str):
            raise OSError(waiter.got)
        return waiter.got

    async def fork(self, spec: LaunchSpec) -> ForkedTrial:
        spare = await self.take()
        trial = self.children.forked(spare.pid)  # before the spare can run: its exit finds it
        spare.assign(spec)
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

    def adopt(self, hello: p.SpareHello, pid: int) -> tuple[Zygote, Spare] | None:
        """A spare's hello: the zygote it belongs to and its place in the idle line."""
        zygote = self.zygotes.get(hello.pool)
        if zygote is None or not pid or not secrets.compare_digest(hello.token, zygote.token):
            return None
        spare = zygote.adopt(pid)
        return None if spare is None else (zygote, spare)

    def experiment_done(self, experiment_id: str) -> None:
        """Stop the experiment's zygotes; their spares die with them (PDEATHSIG)."""
        for key in [k for k in self.zygotes if k.startswith(experiment_id + ":")]:
            self.forget(key)

    def forget(self, key: str) -> None:
        """Stop one zygote."""
        zygote = self.zygotes.pop(key, None)
        if zygote is not None:
            zygote.stop()

    def close(self) -> None:
        for key in list(self.zygotes):
            self.forget(key)

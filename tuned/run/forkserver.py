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
import signal
import socket
import subprocess
import time
from collections import deque
from pathlib import Path

import anyio
import msgspec
import structlog
from anyio.abc import Process
from tuned_client import protocol as p
from tuned_client import zygote as z

from ..store.private import open_private
from .launcher import LaunchSpec, SpawnLauncher, TrialProcess, signal_tree

log = structlog.get_logger("tuned.run.forkserver")

STARTUP_TIMEOUT_S = 120.0  # importing a heavy trainable (torch) can take a while
SPARES_AHEAD = 2  # idle spares kept per zygote beyond those already promised
PER_TRIAL_VARS = ("CUDA_VISIBLE_DEVICES", "TUNED_TRIAL_ID", "TUNED_TRIAL_TOKEN", "TUNED_TRIAL_DIR")


class ZygoteGone(Exception):
    """The zygote exited or refused; the trial is spawned instead."""


class ForkedTrial:
    """A trial process forked by a zygote; its exit status arrives over the socket."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None
        self.exited = anyio.Event()
        self.lost = ""

    def set_exit(self, code: int) -> None:
        if self.code is None:
            self.code = code
            self.exited.set()

    def set_lost(self, reason: str) -> None:
        """Its zygote died: so did it (PDEATHSIG), and its exit will never be reported."""
        if self.code is None:
            self.lost = reason
            self.set_exit(-9)

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.code is not None
        return self.code

    def signal(self, sig: signal.Signals) -> None:
        if self.code is None:
            signal_tree(self.pid, sig)
            return
        # Exited: the zygote killed and reaped what it left outside its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def exit_reason(self, code: int) -> str:
        return ""


class Spare:
    """A zygote's child, connected and waiting: ``assign`` makes it a trial."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.launch: LaunchSpec | None = None
        self.decided = anyio.Event()

    def assign(self, launch: LaunchSpec) -> None:
        self.launch = launch
        self.decided.set()

    def retire(self) -> None:
        self.decided.set()


class Zygote:
    """The daemon's end of one zygote: spares requested, spares taken, exits reported.

    Invariant: ``spawning`` counts spares requested and not yet arrived (or
    known dead); ``idle`` holds arrived spares nobody took. ``take`` keeps one
    spare ahead, so the next trial finds its process already waiting.
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
        self.spawning = 0
        self.idle: deque[Spare] = deque()
        self.waiters: deque[tuple[anyio.Event, list[Spare | str]]] = deque()
        self.trials: dict[int, ForkedTrial] = {}
        self.dead: set[int] = set()  # exited before the daemon read their hello
        self.retired: set[int] = set()  # idle spares sent away: their exit is expected
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
        ours.setblocking(False)
        self.sock = ours
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(ours.fileno(), self._on_readable)

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
            self.spawning -= 1
            if self.waiters:
                event, box = self.waiters.popleft()
                box.append(msg.error)
                event.set()
        else:
            self._exited(msg.pid, msg.code)

    def _exited(self, pid: int, code: int) -> None:
        trial = self.trials.pop(pid, None)
        if trial is not None:
            trial.set_exit(code)
            return
        if pid in self.retired:  # we closed its connection: nothing to replace
            self.retired.discard(pid)
            return
        for spare in self.idle:
            if spare.pid == pid:  # died waiting: its connection is closed, a new one comes
                self.idle.remove(spare)
                spare.retire()
                break
        else:  # died before its hello was read
            self.spawning -= 1
            self.dead.add(pid)
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
        while self.waiters:
            event, _ = self.waiters.popleft()
            event.set()
        while self.idle:
            self.idle.popleft().retire()
        for trial in self.trials.values():
            trial.set_lost("the zygote that forked it exited")
        self.trials.clear()

    # ------------------------------------------------------------ spares

    def _top_up(self) -> None:
        """Ask for spares until every waiter has one coming and one more is on its way."""
        want = len(self.waiters) + SPARES_AHEAD - len(self.idle) - self.spawning
        for _ in range(max(0, want)):
            self.spawning += 1
            self._send(z.Spawn(pool=self.key, token=self.token))

    def adopt(self, pid: int) -> Spare | None:
        """A spare said hello (pid from the kernel); None if it cannot be one of ours."""
        if self.gone or pid in self.dead or pid in self.trials:
            self.dead.discard(pid)
            return None
        self.spawning -= 1
        spare = Spare(pid)
        if self.waiters:
            event, box = self.waiters.popleft()
            box.append(spare)
            event.set()
        else:
            self.idle.append(spare)
        return spare

    def release(self, spare: Spare) -> None:
        """An idle spare leaves: its connection is closed, so it exits and is not replaced."""
        with contextlib.suppress(ValueError):
            self.idle.remove(spare)
        self.retired.add(spare.pid)
        spare.retire()

    async def take(self) -> Spare:
        """An idle spare, or the next one to arrive."""
        await self.ready.wait()
        if self.gone:
            raise ZygoteGone(self.refused or "the zygote exited")
        if self.idle:
            spare = self.idle.popleft()
            self._top_up()
            return spare
        event = anyio.Event()
        box: list[Spare | str] = []
        self.waiters.append((event, box))
        self._top_up()
        try:
            await event.wait()
        except BaseException:  # cancelled while waiting: give back what came meanwhile
            if (event, box) in self.waiters:
                self.waiters.remove((event, box))
            elif box and isinstance(box[0], Spare):
                if self.gone:
                    box[0].retire()
                else:
                    self.idle.append(box[0])
            raise
        if not box:
            raise ZygoteGone(self.refused or "the zygote exited")
        if isinstance(box[0], str):
            raise OSError(box[0])
        return box[0]

    async def fork(self, spec: LaunchSpec) -> ForkedTrial:
        spare = await self.take()
        trial = ForkedTrial(spare.pid)
        self.trials[spare.pid] = trial  # before the spare can run, so its exit finds it
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

"""``experiment_state.msgpack`` in each experiment's folder: what ``Tuner.restore`` reads.

Written atomically whenever it matters (submit, end) and otherwise at most
every half second, a change that came too soon after the last write being
written once the half second is over; a large experiment's is written in steps
so the daemon never stalls on it. It holds no environment: the results folder
is shared, the environment has the user's secrets.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Coroutine, Generator, Iterable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog
from tuned_client import protocol as p

from ..core.model import Experiment
from . import archive

log = structlog.get_logger("tuned.store.statefile")

STATE_WRITE_INTERVAL_S = 0.5
STATE_WRITE_COST_RATIO = 20.0  # seconds between state writes per second one takes
STATE_STEPS_FROM = 10_000  # trials from which the periodic state write goes in steps
STATE_CHUNK_BYTES = 1 << 18  # a piece of the state file: about 800 trials

Spawn = Callable[[Callable[[Experiment], Coroutine[Any, Any, None]], Experiment], None]


def state_chunks(exp: Experiment, socket_path: Path) -> Generator[bytes]:
    """``experiment_state.msgpack`` (a ``p.ExperimentState``) in pieces of ``STATE_CHUNK_BYTES``.

    Encoded by hand around the trials, which are copied as the archive holds
    them (``archive.trial_rows``): memory stays at a piece and the per-trial
    resources, however many trials there are.
    """
    head: list[tuple[str, object]] = [
        ("experiment_id", exp.id),
        ("socket", str(socket_path)),
        # No environment: it holds the user's secrets, and this file is in the results
        # folder. Tuner.restore runs with the environment of the script that restores.
        ("spec", _spec_of(exp.spec)),
        ("finished", exp.done),
        ("cancelled", exp.cancelled),
        ("interrupted", exp.interrupted),
    ]
    n = len(exp.trials)  # trials added while this is written are in the next one
    buf = bytearray(archive.map_header(len(head) + 2))
    for key, value in head:
        buf += archive.encode(key) + archive.encode(value)
    buf += archive.encode("trials") + archive.array_header(n)
    resources: list[bytes] = []
    same: dict[bytes, bytes] = {}  # most trials share their bundles: keep one copy
    for info, bundles in archive.trial_rows(exp, n):
        buf += info
        raw = bytes(bundles)
        resources.append(same.setdefault(raw, raw))
        if len(buf) >= STATE_CHUNK_BYTES:
            yield bytes(buf)
            buf.clear()
    buf += archive.encode("resources") + archive.array_header(n)
    for raw in resources:
        buf += raw
        if len(buf) >= STATE_CHUNK_BYTES:
            yield bytes(buf)
            buf.clear()
    yield bytes(buf)


def _spec_of(spec: p.ExperimentSpec) -> p.ExperimentSpec:
    """The spec as the state file keeps it: no trials, trainable, environment, grid values."""
    grid = spec.grid
    if grid is not None:  # its values are in GRID_PLAN_FILE (``write_grid``)
        axes = [p.GridAxis(path=a.path, values=[]) for a in grid.axes]
        grid = msgspec.structs.replace(grid, axes=axes, values_file=p.GRID_PLAN_FILE)
    return msgspec.structs.replace(spec, trials=[], trainable=b"", env={}, grid=grid)


def grid_plan_bytes(spec: p.ExperimentSpec) -> bytes:
    """``GRID_PLAN_FILE``'s contents: the plan as submitted, values and all."""
    return msgspec.msgpack.encode(spec.grid)


def state_of(exp: Experiment, socket_path: Path) -> p.ExperimentState:
    """The state file's contents, decoded (for tests and tools)."""
    return msgspec.msgpack.decode(b"".join(state_chunks(exp, socket_path)), type=p.ExperimentState)


class StateFiles:
    """Writes each experiment's state file; ``spawn`` runs a write in steps as a task."""

    def __init__(self, socket_path: Path, spawn: Spawn | None = None) -> None:
        self.socket_path = socket_path
        self.spawn = spawn

    def write(self, exp: Experiment, *, force: bool = False) -> None:
        """Rewrite the experiment's state file (atomically), at most every half second.

        Forced at submit and when the experiment finishes; in between, a stale file
        only means ``Tuner.restore`` reruns a trial the daemon had just finished,
        and only when the daemon has lost the experiment too.

        A write costs O(trials), so its cost is bounded two ways: the writes are
        spaced ``STATE_WRITE_COST_RATIO`` times as long as the last one kept the
        loop busy (under 5 % of the daemon's time, however many trials), and an
        experiment of more than ``STATE_STEPS_FROM`` trials is written in steps,
        a piece per turn of the loop, so that a million trials never stall it.
        """
        due = exp.state_written + max(STATE_WRITE_INTERVAL_S, exp.state_every)
        if force:
            exp.state_generation += 1  # a write in steps now under way is out of date
        elif exp.state_writing or time.monotonic() < due:
            if not exp.state_pending and self.spawn is not None:
                exp.state_pending = True  # the last change before a quiet spell is written too
                self.spawn(self._write_later, exp)
            return
        if force or len(exp.trials) <= STATE_STEPS_FROM or self.spawn is None:
            self._write_now(exp)
            return
        exp.state_writing = True
        self.spawn(self._write_in_steps, exp)

    def write_grid(self, exp: Experiment) -> None:
        """A grid experiment's plan, beside its state file: once, and off the loop.

        A million points' values are megabytes: written with each state file,
        they would stall the loop at every write. They never change, so the state
        file leaves them out and ``Tuner.restore`` reads them from here.
        """
        if exp.spec.grid is None:
            return
        data, path = grid_plan_bytes(exp.spec), exp.path / p.GRID_PLAN_FILE
        if self.spawn is None:
            _write_file(path, [data], exp.id, "the grid plan")
        else:
            self.spawn(_write_off_the_loop(path, data), exp)

    def _write_now(self, exp: Experiment) -> None:
        started = time.monotonic()
        path = exp.path / p.EXPERIMENT_STATE_FILE
        _write_file(path, state_chunks(exp, self.socket_path), exp.id, "the experiment state")
        self._written(exp, time.monotonic() - started)

    async def _write_later(self, exp: Experiment) -> None:
        """Write once the interval is over: a change in a quiet spell is not left unwritten.

        Without it the file kept the state of the last write that happened to be
        due, so a restore after the daemon lost the experiment could rerun trials
        that had finished seconds before (nothing else changed to trigger a write).
        """
        try:
            while True:
                due = exp.state_written + max(STATE_WRITE_INTERVAL_S, exp.state_every)
                await anyio.sleep(max(0.0, due - time.monotonic()))
                if not exp.state_writing:
                    break
                await anyio.sleep(STATE_WRITE_INTERVAL_S)  # one in steps is under way
        finally:
            exp.state_pending = False
        if not exp.done:  # its end was written (forced); the folder may be another's now
            self.write(exp)

    async def _write_in_steps(self, exp: Experiment) -> None:
        """A large experiment's periodic state write, a piece per turn of the loop.

        Trials change between pieces; each is written as it is when its turn
        comes, and the file holds the trials there were when the write began. A
        forced write meanwhile makes this one give up (``state_generation``).
        """
        generation = exp.state_generation
        path = exp.path / p.EXPERIMENT_STATE_FILE
        tmp = path.with_name(f".{path.name}.steps.tmp")
        busy = 0.0
        chunks = state_chunks(exp, self.socket_path)
        try:
            with open(tmp, "wb") as f:
                while generation == exp.state_generation:
                    started = time.monotonic()
                    chunk = next(chunks, None)
                    if chunk is not None:
                        f.write(chunk)
                    busy += time.monotonic() - started
                    if chunk is None:
                        break
                    await anyio.sleep(0)  # the loop serves everyone else between pieces
            if generation == exp.state_generation:
                os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write the experiment state", experiment=exp.id, error=str(exc))
        finally:
            chunks.close()
            with contextlib.suppress(OSError):
                tmp.unlink()  # gone already once it has replaced the state file
            exp.state_writing = False
            self._written(exp, busy)

    @staticmethod
    def _written(exp: Experiment, busy: float) -> None:
        exp.state_written = time.monotonic()
        exp.state_every = STATE_WRITE_COST_RATIO * busy


def _write_file(path: Path, chunks: Iterable[bytes], exp_id: str, what: str) -> None:
    """``chunks`` to ``path`` atomically, through a temporary file beside it.

    A refusal (a full disk) is logged: the old file stays whole, the daemon serves on.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning(f"could not write {what}", experiment=exp_id, error=str(exc))


def _write_off_the_loop(
    path: Path, data: bytes
) -> Callable[[Experiment], Coroutine[Any, Any, None]]:
    async def write(exp: Experiment) -> None:
        await anyio.to_thread.run_sync(_write_file, path, [data], exp.id, "the grid plan")

    return write

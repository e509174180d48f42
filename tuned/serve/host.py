"""What the socket side needs of the daemon (``Host``), and a connection's writes (``Conn``).

The handlers take a ``Host``: the requests it answers and the parts it reads.
``Daemon`` satisfies it; nothing here imports the daemon.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import anyio
import msgspec
from anyio.abc import SocketStream
from tuned_client import protocol as p

from ..core.model import Trial
from ..run.launcher import Launcher
from ..store.journal import Journal
from .access import Gate
from .decisions import Decisions
from .views import Sources
from .wire import FrameReader, encode_frame


class Host(Sources, Protocol):
    journal: Journal
    decisions: Decisions
    launcher: Launcher
    gate: Gate
    connections: int

    def touch(self) -> None: ...

    def trial(self, trial_id: str) -> Trial | None: ...

    def submit(self, spec: p.ExperimentSpec) -> p.Accepted: ...

    def add_trials(self, exp_id: str, specs: list[p.TrialSpec]) -> p.TrialsAdded: ...

    def close_experiment(self, exp_id: str) -> None: ...

    def cancel(self, target: str) -> None: ...

    def stop_trial(self, trial_id: str) -> None: ...

    def restart_trial(
        self,
        trial_id: str,
        config: msgspec.Raw,
        checkpoint: str,
        resources: list[dict[str, float]] | None = None,
    ) -> None: ...

    def resume(self, req: p.ResumeExperiment) -> p.Accepted: ...

    def request_shutdown(self) -> None: ...

    def driver_left(self, exp_id: str) -> None: ...

    def on_report(self, trial: Trial, report: p.Report, decide: bool = False) -> p.TrialResult: ...


class Conn:
    """A connection's stream with serialized writes (replies and events share it)."""

    def __init__(self, stream: SocketStream, daemon: Host) -> None:
        self.stream = stream
        self.daemon = daemon
        self.reader = FrameReader(stream, daemon.settings.max_frame_bytes)
        self._write = anyio.Lock(fast_acquire=True)  # no trip round the loop when free

    async def send(self, message: Any) -> None:
        await self.send_frame(encode_frame(message))

    async def send_frame(self, frame: bytes) -> None:
        async with self._write:
            await self.stream.send(frame)

    async def error(self, code: p.ErrorCode, message: str) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await self.send(p.Error(code=code, message=message))

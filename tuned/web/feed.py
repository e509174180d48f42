"""The web process's connection to the daemon: one subscription to every event.

The subscription is read on the event loop (anyio's Unix stream, the client's
framing), so a burst of results costs a decode each, not a thread hop each.
It is read at most every ``READ_EVERY_S``, everything the socket holds at once:
the daemon delivers a busy stream every 10 ms, and a reader waiting on each
delivery would cost a wake-up of this process and a context switch on the
daemon's side a hundred times a second, while the pages get news once a second
(``app.PUSH_INTERVAL_S``). Between reads the daemon's writes wait in the
socket's buffer; a stream that outgrows it waits in the daemon's subscriber
queue, and one that outgrows that is caught up from history (``Lagged``).
Requests (an experiment's state, a trial's folder, a cancel) are rare and go
through the client's blocking ``Connection`` in a worker thread.

An experiment that began before our subscription is fetched with
``GetExperiment`` when it is first seen; its events are held until the reply
is in, and those the reply already covers (``seq`` at or below its own) are
dropped. A ``Lagged`` answer resubscribes from the last event we folded; if
the daemon no longer holds those, every experiment is fetched again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import anyio
from anyio.abc import ByteStream
from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonError
from tuned_client.framing import HEADER, check_length, decode_message, encode_frame

from .curves import Curves
from .model import WebModel

EVENTS = get_args(p.Event)
READ_EVERY_S = 0.1
READ_BYTES = 1 << 20


class DaemonGone(Exception):
    """The daemon closed our subscription (it stopped)."""


def daemon_request(socket_path: Path, req: Any) -> Any:
    """One request on a fresh connection (in a worker thread); refusals raise DaemonError."""
    with Connection.open(socket_path, autostart=False, client="tuned-web") as conn:
        return conn.request(req)


def fetch_experiment(socket_path: Path, exp_id: str) -> p.ExperimentReply:
    """An experiment with all its trials, a page at a time (in a worker thread)."""
    with Connection.open(socket_path, autostart=False, client="tuned-web") as conn:
        return conn.get_experiment(exp_id)


class Feed:
    def __init__(self, socket_path: Path, model: WebModel, changed: Callable[[], None]) -> None:
        self.socket_path = socket_path
        self.model = model
        self.changed = changed
        self.last_seq = -1
        self.covered: dict[str, int] = {}  # experiment -> the seq its reply covers
        self.held: dict[str, list[Any]] = {}  # events of experiments being fetched
        self.ready = anyio.Event()  # the first state is in
        self.curves = Curves(model, changed)
        self._tg: Any = None

    async def run(self) -> None:
        stream = await anyio.connect_unix(self.socket_path)
        async with stream, anyio.create_task_group() as tg:
            self._tg = tg
            frames = Frames(stream)
            await self._send(stream, p.Hello(protocol=p.PROTOCOL_VERSION, client="tuned-web"))
            welcome = (await frames.read())[0]
            if isinstance(welcome, p.Error):
                raise DaemonError(welcome.code, welcome.message)
            await self._send(stream, p.Subscribe(experiment_id="", since=-1))
            tg.start_soon(self._first_state)
            await self._follow(stream, frames)
            tg.cancel_scope.cancel()

    async def _first_state(self) -> None:
        """Every experiment the daemon has, fetched while the subscription is read."""
        status = await anyio.to_thread.run_sync(daemon_request, self.socket_path, p.GetStatus())
        async with anyio.create_task_group() as tg:
            for row in status.experiments:
                if row.experiment_id not in self.held:
                    self.held[row.experiment_id] = []
                    tg.start_soon(self._fetch_now, row.experiment_id)
        self.ready.set()
        await self.curves.warm()

    async def _follow(self, stream: ByteStream, frames: Frames) -> None:
        lagged = False
        while True:
            applied = False
            for msg in await frames.read():
                if isinstance(msg, p.Lagged):
                    if lagged:  # the daemon no longer holds what we missed: start over
                        for exp_id in list(self.model.experiments):
                            self._fetch(exp_id)
                        await self._send(stream, p.Subscribe(experiment_id="", since=-1))
                    else:
                        since = self.last_seq
                        await self._send(stream, p.Subscribe(experiment_id="", since=since))
                    lagged = not lagged
                    continue
                if not isinstance(msg, EVENTS):
                    continue
                lagged = False
                if msg.seq <= self.last_seq:
                    continue
                self.last_seq = msg.seq
                applied = self._apply(msg) or applied
            if applied:
                self.changed()
            await anyio.sleep(READ_EVERY_S)  # let the next deliveries collect

    def _apply(self, ev: Any) -> bool:
        """Fold the event, or hold it for its experiment's reply; True if folded."""
        exp_id = ev.experiment_id
        if exp_id in self.held:
            self.held[exp_id].append(ev)
            return False
        known = exp_id in self.model.experiments or isinstance(ev, p.ExperimentAccepted)
        if exp_id and not known:
            self._fetch(exp_id)
            self.held[exp_id].append(ev)
            return False
        if ev.seq <= self.covered.get(exp_id, -1):
            return False
        self.model.on_event(ev)
        return True

    def _fetch(self, exp_id: str) -> None:
        self.held.setdefault(exp_id, [])
        self._tg.start_soon(self._fetch_now, exp_id)

    async def _fetch_now(self, exp_id: str) -> None:
        try:
            reply = await anyio.to_thread.run_sync(fetch_experiment, self.socket_path, exp_id)
        except DaemonError:
            self.held.pop(exp_id, None)  # forgotten meanwhile
            return
        self.covered[exp_id] = reply.seq
        self.model.add_reply(reply)
        for ev in self.held.pop(exp_id, []):
            self._apply(ev)
        self.changed()

    async def load_curves(self, exp_id: str) -> None:
        """The experiment's curves from before our events, for a page that shows it."""
        await self.curves.load(exp_id)

    @staticmethod
    async def _send(stream: ByteStream, msg: Any) -> None:
        await stream.send(encode_frame(msg))


class Frames:
    """The daemon's messages, as many as one read of the socket holds whole."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.rest = b""  # the start of a frame the last read cut

    async def read(self) -> list[Any]:
        """The whole messages now in the socket (at least one): one read, many frames."""
        while True:
            try:
                data = self.rest + await self.stream.receive(READ_BYTES)
            except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
                raise DaemonGone("the daemon closed the connection") from exc
            if out := self._split(data):
                return out

    def _split(self, data: bytes) -> list[Any]:
        # Immutable bytes: a decoded message's ``msgspec.Raw`` fields are views of it.
        out: list[Any] = []
        pos, end = 0, len(data)
        view = memoryview(data)
        while end - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(data, pos)
            check_length(length)
            if end - pos - HEADER.size < length:
                break
            pos += HEADER.size
            out.append(decode_message(view[pos : pos + length]))
            pos += length
        self.rest = data[pos:]
        return out

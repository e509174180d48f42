"""The web process's connection to the daemon: one subscription to every event.

The subscription is read on the event loop (anyio's Unix stream, the client's
framing), so a burst of results costs a decode each, not a thread hop each.
Requests (an experiment's state, a trial's folder, a cancel) are rare and go
through the client's blocking ``Connection`` in a worker thread.

An experiment that began before our subscription is fetched with
``GetExperiment`` when it is first seen; its events are held until the reply
is in, and those the reply already covers (``seq`` at or below its own) are
dropped. A ``Lagged`` answer resubscribes from the last event we folded; if
the daemon no longer holds those, every experiment is fetched again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import anyio
import msgspec
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream
from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonError
from tuned_client.framing import HEADER, check_length, decode_message, encode_frame

from .model import WebModel

EVENTS = get_args(p.Event)
_json_line = msgspec.json.Decoder(dict[str, Any])


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


def read_results(path: str) -> list[dict[str, Any]]:
    """A trial's result.json rows (a JSON object a line); a torn last line is skipped."""
    rows: list[dict[str, Any]] = []
    try:
        with open(os.path.join(path, "result.json"), "rb") as f:
            for line in f:
                try:
                    rows.append(_json_line.decode(line))
                except msgspec.DecodeError:
                    continue
    except OSError:
        pass
    return rows


class Feed:
    def __init__(self, socket_path: Path, model: WebModel, changed: Callable[[], None]) -> None:
        self.socket_path = socket_path
        self.model = model
        self.changed = changed
        self.last_seq = -1
        self.covered: dict[str, int] = {}  # experiment -> the seq its reply covers
        self.held: dict[str, list[Any]] = {}  # events of experiments being fetched
        self.ready = anyio.Event()  # the first state is in
        self._tg: Any = None

    async def run(self) -> None:
        stream = await anyio.connect_unix(self.socket_path)
        async with stream, anyio.create_task_group() as tg:
            self._tg = tg
            reader = BufferedByteReceiveStream(stream)
            await self._send(stream, p.Hello(protocol=p.PROTOCOL_VERSION, client="tuned-web"))
            welcome = await self._recv(reader)
            if isinstance(welcome, p.Error):
                raise DaemonError(welcome.code, welcome.message)
            await self._send(stream, p.Subscribe(experiment_id="", since=-1))
            tg.start_soon(self._first_state)
            await self._follow(stream, reader)
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

    async def _follow(self, stream: ByteStream, reader: BufferedByteReceiveStream) -> None:
        lagged = False
        while True:
            msg = await self._recv(reader)
            if isinstance(msg, p.Lagged):
                if lagged:  # the daemon no longer holds what we missed: start over
                    for exp_id in list(self.model.experiments):
                        self._fetch(exp_id)
                    await self._send(stream, p.Subscribe(experiment_id="", since=-1))
                else:
                    await self._send(stream, p.Subscribe(experiment_id="", since=self.last_seq))
                lagged = not lagged
                continue
            if not isinstance(msg, EVENTS):
                continue
            lagged = False
            if msg.seq <= self.last_seq:
                continue
            self.last_seq = msg.seq
            self._apply(msg)

    def _apply(self, ev: Any) -> None:
        exp_id = ev.experiment_id
        if exp_id in self.held:
            self.held[exp_id].append(ev)
            return
        known = exp_id in self.model.experiments or isinstance(ev, p.ExperimentAccepted)
        if exp_id and not known:
            self._fetch(exp_id)
            self.held[exp_id].append(ev)
            return
        if ev.seq <= self.covered.get(exp_id, -1):
            return
        self.model.on_event(ev)
        self.changed()

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
        """Read result.json of the trials whose curves began before our events."""
        exp = self.model.experiments.get(exp_id)
        if exp is None:
            return
        todo = [
            (t.trial_id, t.path)
            for t in exp.trials.values()
            if t.path and not self.model.complete(t.trial_id)
        ]

        def read_all() -> list[tuple[str, list[dict[str, Any]]]]:
            return [(trial_id, read_results(path)) for trial_id, path in todo]

        for trial_id, rows in await anyio.to_thread.run_sync(read_all):
            self.model.load_results(trial_id, rows)
        self.changed()

    @staticmethod
    async def _send(stream: ByteStream, msg: Any) -> None:
        await stream.send(encode_frame(msg))

    @staticmethod
    async def _recv(reader: BufferedByteReceiveStream) -> Any:
        try:
            (length,) = HEADER.unpack(await reader.receive_exactly(HEADER.size))
            check_length(length)
            return decode_message(await reader.receive_exactly(length))
        except (anyio.EndOfStream, anyio.IncompleteRead) as exc:
            raise DaemonGone("the daemon closed the connection") from exc

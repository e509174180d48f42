"""Learning curves that began before the web process: read from the trials' result.json.

Events bring every point from the moment ``tuned web`` subscribes; what came
before is in each trial's ``result.json``. A thousand trials of a hundred
results are 37 MB of JSON lines here, about 0.35 s of CPU to decode and fold:
a page that waited for that on its first visit could not be drawn within a
second. So the newest experiments' curves are read in the background as soon
as the first state is in (``warm``), within ``WARM_BYTES`` of files, which a
user opening the printed URL and clicking an experiment does not wait for
(nor for building the page's snapshot of them); an older experiment is read
when a page first shows it. The files are read in
chunks, each in a worker thread, and the background reading pauses while a
page waits for its own experiment's files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from .model import WebModel

WARM_BYTES = 128 * 1024 * 1024  # of result.json read at start-up, newest experiments first
CHUNK = 64  # trials' files a worker thread reads in one go
_json_line = msgspec.json.Decoder(dict[str, Any])  # a result.json line


def read_results(path: str) -> list[dict[str, Any]]:
    """A trial's result.json rows (a JSON object a line); a torn line is skipped."""
    try:
        with open(os.path.join(path, "result.json"), "rb") as f:
            data = f.read()
    except OSError:
        return []
    try:
        return _json_line.decode_lines(data)  # the whole file in one call
    except msgspec.DecodeError:  # a torn line (a trial writing, a disk that filled)
        rows: list[dict[str, Any]] = []
        for line in data.splitlines():
            try:
                rows.append(_json_line.decode(line))
            except msgspec.DecodeError:
                continue
        return rows


def _size(path: str) -> int:
    try:
        return os.stat(os.path.join(path, "result.json")).st_size
    except OSError:
        return 0


class Curves:
    """Reads each experiment's curves once, for a page or in the background."""

    def __init__(self, model: WebModel, changed: Callable[[], None]) -> None:
        self.model = model
        self.changed = changed
        self._locks: dict[str, anyio.Lock] = {}  # one reader per experiment
        self._pages_waiting = 0
        self._no_page_waits = anyio.Event()
        self._no_page_waits.set()

    async def load(self, exp_id: str, *, page: bool = True, budget: int = WARM_BYTES) -> int:
        """Read the result.json of the experiment's trials whose curves began before our
        events; returns the bytes read. ``page``: a page waits for it (it goes first, and
        reads it all); otherwise reading stops once ``budget`` bytes are read."""
        if page:
            self._pages_waiting += 1
            self._no_page_waits = anyio.Event()
        try:
            if exp_id not in self._locks:
                self._locks[exp_id] = anyio.Lock()
            async with self._locks[exp_id]:
                return await self._read(exp_id, page, budget)
        finally:
            if page:
                self._pages_waiting -= 1
                if not self._pages_waiting:
                    self._no_page_waits.set()

    async def _read(self, exp_id: str, page: bool, budget: int) -> int:
        exp = self.model.experiments.get(exp_id)
        if exp is None:
            return 0
        todo = [
            (t.trial_id, t.path)
            for t in exp.trials.values()
            if t.path and not self.model.complete(t.trial_id)
        ]
        done = 0
        for start in range(0, len(todo), CHUNK):
            if not page:
                if done >= budget:
                    break  # the rest when a page shows it
                await self._no_page_waits.wait()
            chunk = todo[start : start + CHUNK]

            def read_chunk(chunk: list[tuple[str, str]] = chunk) -> list[Any]:
                return [(trial_id, _size(path), read_results(path)) for trial_id, path in chunk]

            for trial_id, size, rows in await anyio.to_thread.run_sync(read_chunk):
                self.model.load_results(trial_id, rows)
                done += size
        if todo:
            self.changed()
        return done

    async def warm(self, budget: int = WARM_BYTES) -> None:
        """The newest experiments' curves, until ``budget`` bytes of files are read, and
        their pages' snapshots (``WebModel.experiment`` keeps an ended trial's part)."""
        for exp_id in reversed(list(self.model.experiments)):
            if budget <= 0:
                return
            budget -= await self.load(exp_id, page=False, budget=budget)
            self.model.experiment(exp_id)
            await anyio.sleep(0)  # a page's request between two experiments

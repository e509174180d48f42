"""Compaction: the state to a snapshot, the journal begun afresh, so neither grows with history.

When the journal passes ``Settings.compact_bytes`` (4 MB: replaying what is
left after a crash then takes about a second, whatever the history), and at a
clean stop, the state is
encoded as it is (``store.snapshot.take``) and a new journal begins (epoch
N+1), in one step of the event loop, so the snapshot and the new journal meet
at one record. Making the archive files and the snapshot durable happens in a
worker thread while the daemon serves on; the old journal is deleted only once
the snapshot is on disk (see ``store.snapshot`` for why that order is safe).
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import structlog

from ..store import snapshot
from ..store.archive import ExperimentArchive
from ..store.journal import retired_path
from .base import DaemonBase

log = structlog.get_logger("tuned.daemon")

class Compaction(DaemonBase):
    _compacting = False

    def maybe_compact(self) -> None:
        if self._compacting or self.journal.size < self.settings.compact_bytes:
            return
        if self.tg is None or self.stopping or not self.recovered.is_set():
            return
        self._compacting = True
        self.tg.start_soon(self.compact, name="compaction")

    async def compact(self) -> None:
        """Snapshot and a new journal now; durability in a thread; then the old journal goes."""
        try:
            started = time.monotonic()
            data, files, old = self._begin()
            await anyio.to_thread.run_sync(snapshot.persist, self._snapshot_path, data, files)
            old.unlink(missing_ok=True)
            log.info(
                "journal compacted",
                epoch=self.epoch,
                snapshot_bytes=len(data),
                seconds=round(time.monotonic() - started, 3),
            )
        except OSError as exc:  # the old journal and snapshot stay: nothing is lost
            log.warning("could not compact the journal", error=str(exc))
        finally:
            self._compacting = False

    def compact_now(self) -> None:
        """The same, all at once (a clean stop: the next start reads the snapshot only)."""
        try:
            data, files, old = self._begin()
            snapshot.persist(self._snapshot_path, data, files)
            old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not compact the journal", error=str(exc))

    @property
    def _snapshot_path(self) -> Path:
        return self.settings.snapshot_path

    def _begin(self) -> tuple[bytes, list[ExperimentArchive], Path]:
        """The state encoded and the next journal begun, at one point between two records."""
        epoch = self.epoch + 1
        self.journal.flush()  # results held for the end of the turn: before the snapshot
        data = snapshot.take(self.state, epoch, self.bus.seq)
        files = snapshot.archives(self.state)
        self.journal.begin(epoch)
        self.epoch = epoch
        return data, files, retired_path(self.settings.journal_path, epoch - 1)

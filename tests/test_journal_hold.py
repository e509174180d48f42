"""Held journal records: written together at the end of the loop's turn, never out of order."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
from tuned_client import protocol as p

from tuned.core.records import Control
from tuned.store.journal import Journal, encode_record


def _result(seq: int) -> bytes:
    return encode_record(
        p.TrialResult(seq=seq, ts=0.0, experiment_id="e", trial_id="t", metrics=p.pack_user({}))
    )


def _kinds(path: Path) -> list[object]:
    return [getattr(r, "seq", getattr(r, "action", None)) for r in Journal.replay(path)]


def test_held_records_are_written_together_when_the_turn_ends(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"

    async def main() -> None:
        journal = Journal(path)
        journal.open()
        journal.append_encoded(_result(1), hold=True)
        journal.append_encoded(_result(2), hold=True)
        assert path.stat().st_size == 0  # still held
        await anyio.lowlevel.checkpoint()  # one turn of the loop
        await anyio.lowlevel.checkpoint()  # one turn of the loop
        assert _kinds(path) == [1, 2]
        journal.close()

    anyio.run(main)


def test_a_record_not_held_writes_the_held_ones_first(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"

    async def main() -> None:
        journal = Journal(path)
        journal.open()
        journal.append_encoded(_result(1), hold=True)
        journal.append(Control("close", "e"))  # written now, after the held one
        assert _kinds(path) == [1, "close"]
        journal.append_encoded(_result(2), hold=True)
        await journal.sync()  # a checkpoint's acknowledgement waits for this
        assert _kinds(path) == [1, "close", 2]
        journal.append_encoded(_result(3), hold=True)
        journal.close()
        assert _kinds(path) == [1, "close", 2, 3]

    anyio.run(main)


def test_without_a_loop_nothing_is_held(tmp_path: Path) -> None:
    path = tmp_path / "journal.bin"
    journal = Journal(path)
    journal.open()
    journal.append_encoded(_result(1), hold=True)  # recovery appends before the loop serves
    assert _kinds(path) == [1]
    journal.close()

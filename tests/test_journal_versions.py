"""Journals written by every released version replay; one this version cannot read stops start-up.

``tests/fixtures/journal-<version>.bin`` are real journals, written by that
version's daemon running ``tests/fixtures/make_journal.py``: a grid with
checkpoints, a trial that failed once and was retried, one that failed for
good, an ASHA experiment that stopped trials early, and a cancelled one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import anyio
import pytest

from tuned.config import Settings
from tuned.daemon import Daemon
from tuned.daemon.recovery import recover
from tuned.run.inventory import NoGpus
from tuned.run.launcher import SpawnLauncher
from tuned.serve import views
from tuned.store.journal import Journal, JournalUnreadable

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("journal-*.bin"))


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_a_released_versions_journal_replays(fixture: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(fixture, state / "journal.bin")
    settings = Settings(
        socket_path=tmp_path / "s.sock", state_dir=state, num_cpus=2, num_gpus=0, memory=1 << 30
    )
    daemon = Daemon(settings, NoGpus(), SpawnLauncher())
    anyio.run(recover, daemon)
    daemon.journal.close()
    by_name = {e.spec.name: e for e in daemon.experiments.values()}
    assert set(by_name) == {"grid", "flaky", "broken", "steered", "cancelled"}
    assert all(e.done for e in by_name.values())
    assert by_name["grid"].counts() == {"TERMINATED": 3}
    assert by_name["flaky"].counts() == {"TERMINATED": 1}
    assert by_name["broken"].counts() == {"ERROR": 1}
    assert sum(by_name["steered"].counts().values()) == 4
    assert by_name["cancelled"].counts() == {"ERROR": 1} and by_name["cancelled"].cancelled
    # Finished trials were archived with what they knew: errors, checkpoints.
    broken = views.experiment_reply(daemon, by_name["broken"].id).trials[0]
    assert "ValueError: always fails" in broken.error
    for info in views.experiment_reply(daemon, by_name["grid"].id).trials:
        assert info.checkpoint.endswith("checkpoint_000001")


def record(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + zlib.crc32(body).to_bytes(4, "big") + body


def test_a_whole_record_this_version_cannot_read_stops_start_up_and_cuts_nothing(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.bin"
    whole = FIXTURES[-1].read_bytes()
    # As a newer version might write it: a kind this one does not know, checksum intact.
    journal.write_bytes(whole + record(b"\x82\xa4kind\xa9from-2099\xa1x\x01") + whole[:200])
    before = journal.read_bytes()
    with pytest.raises(JournalUnreadable):
        list(Journal.replay(journal))
    out = subprocess.run(
        [sys.executable, "-m", "tuned", "start", "--foreground", "--num-cpus", "1",
         "--socket", str(tmp_path / "s" / "tuned.sock"), "--state-dir", str(state)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "holds a record this version of tuned" in out.stderr
    assert f"at byte {len(whole)}" in out.stderr
    assert "left as it is" in out.stderr
    assert journal.read_bytes() == before

"""The web process's own state: curves read from result files, the snapshot a page gets
first, the deltas after it, and the daemon's stream cut into messages."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from test_summary import events, result
from tuned_client import protocol as p
from tuned_client.framing import encode_frame

from tuned.web.curves import Curves, read_results
from tuned.web.feed import DaemonGone, Frames
from tuned.web.model import Series, WebModel


def rows(*its: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"training_iteration": it, "loss": 1.0 / it, "time_total_s": 0.5, "trial_id": "x", **extra}
        for it in its
    ]


def same(a: Series, b: Series) -> bool:
    return (a.it, a.values) == (b.it, b.values)


def test_a_result_file_read_at_once_gives_the_curve_that_row_by_row_gives() -> None:
    odd = [
        *rows(1, 2, 3),
        {"training_iteration": 4, "loss": float("nan"), "acc": 0.5, "note": "text"},
        {"training_iteration": 5, "loss": True, "acc": 0.7},  # a bool is no number
        {"training_iteration": 6, "loss": 2},  # an int is
    ]
    retried = [*rows(1, 2, 3), *rows(2, 3, 4)]  # a retry reported 2 and 3 again
    no_iterations = [{"loss": 0.5}, {"loss": 0.25}]
    for case in (odd, retried, no_iterations):
        by_row, at_once = Series(), Series()
        for row in case:
            by_row.add(row)
        at_once.add_rows(case)
        assert same(by_row, at_once), case
    s = Series()
    s.add_rows(odd)
    assert s.it == [1, 2, 3, 4, 5, 6]
    assert s.values == {
        "loss": [1.0, 0.5, 1 / 3, None, None, 2.0],
        "acc": [None, None, None, 0.5, 0.7, None],
    }  # "note" never a number: no column; the run's own keys (time_total_s...) none


def test_a_torn_line_in_a_result_file_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in rows(1, 2, 3)]
    (tmp_path / "result.json").write_text(
        lines[0] + "\n" + '{"training_iter' + "\n" + lines[1] + "\n" + lines[2] + "\n" + '{"lo'
    )
    assert [r["training_iteration"] for r in read_results(str(tmp_path))] == [1, 2, 3]
    assert read_results(str(tmp_path / "none")) == []


def reply(exp_id: str, folders: dict[str, Path], finished: bool = True) -> p.ExperimentReply:
    trials = [
        p.TrialInfo(
            trial_id=trial_id, tag="", name=trial_id, path=str(folder),
            status="TERMINATED" if finished else "RUNNING",
            config=msgspec.Raw(p.pack_user({"i": n})),
        )
        for n, (trial_id, folder) in enumerate(folders.items())
    ]  # fmt: skip
    return p.ExperimentReply(
        experiment_id=exp_id, name=exp_id, path="/r", finished=finished, trials=trials
    )


def trial_dirs(tmp_path: Path, exp_id: str, n: int, results: int) -> dict[str, Path]:
    out = {}
    for i in range(n):
        folder = tmp_path / exp_id / str(i)
        folder.mkdir(parents=True)
        text = "".join(json.dumps(r) + "\n" for r in rows(*range(1, results + 1)))
        (folder / "result.json").write_text(text)
        out[f"{exp_id}_{i}"] = folder
    return out


def test_a_running_trials_curve_joins_its_file_and_the_live_results(tmp_path: Path) -> None:
    """Iterations 1-3 came before tuned web subscribed, 4 as an event; the file has 1-5
    by the time a page asks (4 and 5 written since): 1-3 from the file, 4 live."""
    folders = trial_dirs(tmp_path, "e", 1, 5)
    model = WebModel()
    model.add_reply(reply("e", folders, finished=False))
    model.on_event(result(10, "e_0", 4, loss=0.2))
    anyio.run(Curves(model, lambda: None).load, "e")
    s = model.series["e_0"]
    assert s.it == [1, 2, 3, 4] and s.values["loss"] == [1.0, 0.5, 1 / 3, 0.2]
    model.on_event(result(11, "e_0", 5, loss=0.1))
    assert s.it == [1, 2, 3, 4, 5] and model.complete("e_0")


def test_the_newest_experiments_are_read_at_start_up_within_the_budget(tmp_path: Path) -> None:
    model = WebModel()
    old, new = trial_dirs(tmp_path, "old", 2, 50), trial_dirs(tmp_path, "new", 2, 50)
    model.add_reply(reply("old", old))
    model.add_reply(reply("new", new))
    curves = Curves(model, lambda: None)
    new_bytes = sum((f / "result.json").stat().st_size for f in new.values())
    anyio.run(curves.warm, new_bytes)
    assert all(model.complete(t) for t in new) and not any(model.complete(t) for t in old)
    snapshot = model.experiment("new")  # built at start-up: the page's first visit reuses it
    assert snapshot is not None and all(isinstance(t, msgspec.Raw) for t in snapshot["trials"])
    anyio.run(curves.load, "old")  # a page shows the older one: read then
    assert all(model.series[t].it == list(range(1, 51)) for t in old)


def started(seq: int, trial: str) -> p.TrialStarted:
    return p.TrialStarted(
        seq=seq,
        ts=100.0 + seq,
        experiment_id="e",
        trial_id=trial,
        pid=1,
        attempt=0,
        resources={"cpu": 1.0},
    )


def decoded(snapshot: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(snapshot))
    return out


def test_an_ended_trials_part_of_the_snapshot_follows_what_happens_to_it() -> None:
    model = WebModel()
    for ev in events():
        model.on_event(ev)
    model.on_event(started(6, "e_0"))
    model.on_event(result(7, "e_0", 1, loss=0.5))
    model.on_event(p.TrialFinished(seq=8, ts=102.0, experiment_id="e", trial_id="e_0",
                                   status="TERMINATED"))  # fmt: skip
    first = decoded(model.experiment("e"))
    assert isinstance(model.experiment("e")["trials"][0], msgspec.Raw)  # type: ignore[index]
    [row] = [t for t in first["trials"] if t["id"] == "e_0"]
    assert row["status"] == "TERMINATED" and row["series"]["it"] == [1]
    # Resumed (PBT, restore): queued again, runs, reports: the next page sees it all.
    model.on_event(p.TrialQueued(seq=9, ts=103.0, experiment_id="e", trial_id="e_0",
                                 name="t0", config=p.pack_user({"lr": 0.5})))  # fmt: skip
    model.on_event(started(10, "e_0"))
    model.on_event(result(11, "e_0", 2, loss=0.25))
    [row] = [t for t in decoded(model.experiment("e"))["trials"] if t["id"] == "e_0"]
    assert row["status"] == "RUNNING" and row["config"] == {"lr": 0.5}
    assert row["series"] == {"from": 0, "it": [1, 2], "m": {"loss": [0.5, 0.25]}}
    assert row["best"] == 0.25


def test_deltas_carry_trials_only_for_experiments_a_page_shows() -> None:
    model = WebModel()
    for ev in events():
        model.on_event(ev)
    model.on_event(result(10, "e_0", 1, loss=0.5))
    nobody = model.take_deltas(set())  # only overview pages are open
    assert set(nobody) == {""} and nobody[""]["experiments"][0]["id"] == "e"
    model.on_event(result(11, "e_0", 2, loss=0.25))
    [row] = model.take_deltas({"e"})["e"]["trials"]  # a page opened the experiment since
    assert row["series"] == {"from": 1, "it": [2], "m": {"loss": [0.25]}}  # its snapshot had 1


class Chunks:
    """A byte stream that hands out the given chunks, then ends."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)


def test_messages_cut_anywhere_across_reads_come_out_whole_and_in_order() -> None:
    sent: list[Any] = [
        *events(),
        *(result(10 + i, "e_0", i + 1, loss=1 / (i + 1)) for i in range(50)),
    ]
    data = b"".join(encode_frame(m) for m in sent)
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    async def main() -> list[Any]:
        frames = Frames(Chunks(chunks))  # type: ignore[arg-type]
        got: list[Any] = []
        with pytest.raises(DaemonGone):
            while True:
                got += await frames.read()
        return got

    got = anyio.run(main)
    assert [(type(m), m.seq) for m in got] == [(type(m), m.seq) for m in sent]
    assert p.unpack_opaque(got[-1].metrics)["loss"] == 1 / 50

"""result.json and progress.csv rows: the fast path for flat rows writes what csv writes."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from tuned.store.results import TrialFiles

ROWS: list[dict[str, Any]] = [
    {"loss": 0.1, "i": 1, "ok": True, "none": None, "tag": "a,b", "q": 'say "hi"'},
    {"loss": 1e16, "i": -2, "ok": False, "none": None, "tag": "line\nbreak", "q": "é中"},
    {"loss": math.inf, "i": 3, "tag": "cr\rhere", "extra": "not in the header"},  # missing keys
    {"loss": -0.0, "i": 2**70, "ok": True, "none": None, "tag": " lead", "q": ""},
    {"loss": float("nan"), "i": 5, "nested": {"a": 1}, "tag": "x"},  # not flat: the slow path
    {1: "int key", "loss": 0.5, "i": 6},  # not a string key: the slow path
]


def _reference_csv(rows: list[dict[str, Any]]) -> str:
    """What csv.DictWriter writes, the header taken from the first row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = {str(k): (json.dumps(v) if isinstance(v, dict) else v) for k, v in row.items()}
        writer.writerow(flat)
    return out.getvalue()


def test_flat_rows_are_written_as_csv_writes_them(tmp_path: Path) -> None:
    files = TrialFiles(tmp_path, fresh=True)
    for row in ROWS[:4]:
        files.append(row)
    files.close()
    assert (tmp_path / "progress.csv").read_bytes().decode() == _reference_csv(ROWS[:4])
    lines = (tmp_path / "result.json").read_text().splitlines()
    assert [json.loads(x)["i"] for x in lines] == [r["i"] for r in ROWS[:4]]


def test_rows_that_are_not_flat_take_the_general_path(tmp_path: Path) -> None:
    files = TrialFiles(tmp_path, fresh=True)
    for row in ROWS:
        files.append(row)
    files.close()
    got = list(csv.reader((tmp_path / "progress.csv").open(newline="")))
    header, rows = got[0], got[1:]
    assert header == ["loss", "i", "ok", "none", "tag", "q"]
    assert rows[4] == ["nan", "5", "", "", "x", ""]  # nested/a is not a column: ignored
    assert rows[5] == ["0.5", "6", "", "", "", ""]
    assert [r[:2] for r in rows[:4]] == [
        ["0.1", "1"],
        ["1e+16", "-2"],
        ["inf", "3"],
        ["-0.0", str(2**70)],
    ]

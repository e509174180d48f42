"""A daemon that has lived for months: a million finished trials in its history, then restarts.

The history is written through the real journal code (``store.journal``): a
thousand experiments of a thousand trials, each queued, started, reporting and
finished, as the daemon journals them. A daemon then starts on it (a first
start: the whole journal is read), and again after a clean stop (from its
snapshot), and the figures the issue names are taken: the journal's size, the
time until ``tuned status`` answers with the state recovered, the peak and
settled RSS, the archive's size and whether a restart rewrote it.

``--tree PATH`` runs the daemon of another checkout on the same history (the
code before snapshots, say), so both are measured in one run:

    python -m bench.soak --trials 1000000 --tree /path/to/old/checkout
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonUnavailable

from tuned.core.records import Submitted
from tuned.store.journal import Journal

from .daemon import REPO
from .figures import Figure

PER_EXPERIMENT = 1000
MB = 1 << 20


def write_history(state: Path, storage: Path, trials: int) -> None:
    """``trials`` finished trials, as a daemon's journal holds them."""
    journal = Journal(state / "journal.bin")
    journal.open()
    seq = 0
    row = p.pack_user({"loss": 0.5, "training_iteration": 1, "time_total_s": 1.0})
    config = p.pack_user({"lr": 0.01, "layers": 4})
    for e in range(max(1, trials // PER_EXPERIMENT)):
        exp_id = f"{e:05x}"
        ids = [f"{exp_id}_{i:05d}" for i in range(PER_EXPERIMENT)]
        spec = p.ExperimentSpec(
            name=f"exp{e}", storage_path=str(storage), trainable_name="train", trainable=b"",
            python=sys.executable, cwd="/", sys_path=[], env={"HOME": "/root"},
            trials=[p.TrialSpec(tag=str(i), config=config) for i in range(PER_EXPERIMENT)],
        )  # fmt: skip
        journal.append(Submitted(exp_id, str(storage / f"exp{e}"), ids, spec))
        events: list[tuple[type, dict[str, object]]] = [
            (p.ExperimentAccepted, {"name": f"exp{e}", "path": str(storage),
                                    "num_trials": PER_EXPERIMENT}),
        ]  # fmt: skip
        for i, tid in enumerate(ids):
            events.append(
                (p.TrialQueued, {"trial_id": tid, "name": f"train_{tid}", "config": config,
                                 "tag": str(i)})
            )  # fmt: skip
        for tid in ids:
            folder = str(storage / f"exp{e}" / f"train_{tid}")
            events += [
                (p.TrialStarted, {"trial_id": tid, "pid": 0, "attempt": 1, "resources": {},
                                  "trial_dir": folder}),
                (p.TrialResult, {"trial_id": tid, "metrics": msgspec.Raw(row)}),
                (p.TrialFinished, {"trial_id": tid, "status": "TERMINATED"}),
            ]  # fmt: skip
        events.append((p.ExperimentFinished, {"counts": {"TERMINATED": PER_EXPERIMENT}}))
        for cls, fields in events:
            seq += 1
            journal.append(cls(seq=seq, ts=time.time(), experiment_id=exp_id, **fields))
    journal.close()


def rss(pid: int) -> tuple[float, float]:
    """(peak, current) resident memory of ``pid`` in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def start(state: Path, sock: Path, tree: Path) -> tuple[subprocess.Popen[bytes], float]:
    """A daemon on ``state`` from ``tree``; seconds until ``status`` shows it recovered."""
    env = dict(os.environ, PYTHONPATH=f"{tree}:{tree / 'client'}")
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuned", "start", "--foreground", "--num-cpus", "2",
         "--socket", str(sock), "--state-dir", str(state), "--log-level", "warning"],
        cwd=tree, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=open(state / "daemon.stderr", "ab"),  # noqa: SIM115
    )  # fmt: skip
    while True:
        if proc.poll() is not None:
            raise RuntimeError((state / "daemon.stderr").read_text()[-2000:])
        try:
            with Connection.open(sock, autostart=False) as conn:
                reply = conn.request(p.GetStatus())
            if isinstance(reply, p.StatusReply) and not reply.recovering:
                return proc, time.monotonic() - began
        except (OSError, DaemonUnavailable):
            pass  # not listening yet
        time.sleep(0.05)  # another process's start-up: nothing to wait on but its socket


def folder_bytes(path: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in path.glob(pattern) if f.is_file())


def settle(state: Path, timeout: float = 600) -> None:
    """Until a compaction after a long replay is over (the old journal deleted)."""
    deadline = time.monotonic() + timeout
    while any(state.glob("journal-*.bin")) and time.monotonic() < deadline:
        time.sleep(0.2)


def measure_tree(label: str, tree: Path, history: Path, trials: int) -> list[Figure]:
    base = Path(tempfile.mkdtemp(prefix="tuned-soak-"))
    sock = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp")) / "tuned.sock"
    state = base / "state"
    shutil.copytree(history, state)
    try:
        journal_before = folder_bytes(state, "journal*.bin") / MB
        proc, first_s = start(state, sock, tree)
        peak, _ = rss(proc.pid)
        settle(state)
        _, after = rss(proc.pid)
        journal_after = (folder_bytes(state, "journal*.bin") + folder_bytes(state, "snap*")) / MB
        archive = folder_bytes(state / "archive") / MB
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
        stamps = {f: f.stat().st_mtime_ns for f in (state / "archive").iterdir()}
        proc, again_s = start(state, sock, tree)
        again_peak, _ = rss(proc.pid)
        rewritten = sum(
            1 for f in (state / "archive").iterdir() if stamps.get(f) != f.stat().st_mtime_ns
        )
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(sock.parent, ignore_errors=True)
    n = f"{trials:,} finished trials"
    return [
        Figure(f"soak {label}: journal before", None, journal_before, "MB", note=n),
        Figure(f"soak {label}: journal + snapshot after", 32.0, journal_after, "MB"),
        Figure(f"soak {label}: first start, status answers", None, first_s, "s"),
        Figure(f"soak {label}: peak RSS, first start", 250.0, peak, "MB"),
        Figure(f"soak {label}: RSS after replay", 250.0, after, "MB"),
        Figure(f"soak {label}: restart, status answers", 2.0, again_s, "s"),
        Figure(f"soak {label}: peak RSS, restart", 250.0, again_peak, "MB"),
        Figure(f"soak {label}: archive", None, archive, "MB"),
        Figure(f"soak {label}: archive files rewritten by a restart", 0.0, rewritten, "files"),
    ]


def measure(trials: int = 1_000_000, trees: list[tuple[str, Path]] | None = None) -> list[Figure]:
    history = Path(tempfile.mkdtemp(prefix="tuned-soak-history-"))
    try:
        began = time.monotonic()
        (history / "results").mkdir()
        write_history(history, history / "results", trials)
        print(f"history of {trials:,} trials written in {time.monotonic() - began:.0f} s")
        figures: list[Figure] = []
        for label, tree in trees or [("now", REPO)]:
            figures += measure_tree(label, tree, history, trials)
            for fig in figures[-9:]:
                print(fig.line())
        return figures
    finally:
        shutil.rmtree(history, ignore_errors=True)


def trees_from_env() -> list[tuple[str, Path]]:
    """The checkouts to measure: ``TUNED_BENCH_BEFORE``'s first, if set, then this one."""
    before = os.environ.get("TUNED_BENCH_BEFORE")
    trees = [(f"before ({Path(before).name})", Path(before))] if before else []
    return [*trees, ("now", REPO)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--tree", type=Path, action="append", default=[])
    args = parser.parse_args()
    trees = [(f"before ({t.name})", t) for t in args.tree] + [("now", REPO)]
    for fig in measure(args.trials, trees):
        print(fig.row())


if __name__ == "__main__":
    main()

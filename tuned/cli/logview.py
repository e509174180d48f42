"""``tuned logs TRIAL [-f]``: a trial's stdout or stderr, like ``pueue log``/``follow``.

A trial's output goes straight from its process to files in its folder; the
CLI reads those files itself. Following reads what the file grew by, waiting
on the event stream (with a short timeout) between reads, and ends once the
daemon says the trial finished: nothing printed before the end is missed,
because the file is read to its end after that event.
"""

from __future__ import annotations

import argparse
import select
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonError

FINAL = ("TERMINATED", "ERROR")
POLL_S = 0.2


def _trial(conn: Connection, trial_id: str) -> p.TrialReply:
    try:
        reply = conn.request(p.GetTrial(trial_id=trial_id))
    except DaemonError as exc:
        raise SystemExit(f"tuned: {exc.message}") from exc
    assert isinstance(reply, p.TrialReply)
    return reply


def _copy(src: BinaryIO, out: BinaryIO) -> None:
    while chunk := src.read(65536):
        out.write(chunk)
    out.flush()


def cmd_logs(args: argparse.Namespace, connect: Callable[[], Connection]) -> int:
    which = "stderr" if args.stderr else "stdout"
    out = sys.stdout.buffer
    try:
        with connect() as conn, connect() as events:
            trial = _trial(conn, args.trial)
            if args.follow and trial.status not in FINAL:
                events.send(p.Subscribe(experiment_id=trial.experiment_id, since=-1))
                trial = _trial(conn, args.trial)  # after subscribing: no end is missed
                if trial.status not in FINAL:
                    return _follow(conn, events, trial, which, out)
            if not trial.path:
                raise SystemExit(
                    f"tuned: trial {trial.trial_id} has not started yet ({trial.status}); "
                    "`tuned logs -f` waits for it"
                )
            path = Path(trial.path) / which
            if not path.exists():
                raise SystemExit(f"tuned: {path} does not exist")
            with open(path, "rb") as src:
                _copy(src, out)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    return 0


def _ended(
    conn: Connection, events: Connection, trial: p.TrialReply, timeout: float
) -> tuple[bool, str]:
    """Wait up to ``timeout`` for events; (the trial ended, its dir if it started)."""
    trial_id = trial.trial_id
    readable, _, _ = select.select([events.sock], [], [], timeout)
    ended, trial_dir = False, ""
    while readable:
        msg = events.recv()
        if isinstance(msg, p.Lagged):  # fell behind: ask again from now, and ask the state
            events.send(p.Subscribe(experiment_id=trial.experiment_id, since=-1))
            now = _trial(conn, trial_id)
            ended, trial_dir = now.status in FINAL, now.path
        elif isinstance(msg, p.TrialStarted) and msg.trial_id == trial_id:
            trial_dir = msg.trial_dir
        elif isinstance(msg, p.TrialFinished) and msg.trial_id == trial_id:
            ended = True
        readable, _, _ = select.select([events.sock], [], [], 0)
    return ended, trial_dir


def _follow(
    conn: Connection, events: Connection, trial: p.TrialReply, which: str, out: BinaryIO
) -> int:
    trial_dir = trial.path
    src: BinaryIO | None = None
    try:
        while True:
            if src is None and trial_dir and (Path(trial_dir) / which).exists():
                src = open(Path(trial_dir) / which, "rb")  # noqa: SIM115 (closed below)
            if src is not None:
                _copy(src, out)
            ended, started_dir = _ended(conn, events, trial, POLL_S)
            trial_dir = trial_dir or started_dir
            if ended:
                if src is None and trial_dir and (Path(trial_dir) / which).exists():
                    src = open(Path(trial_dir) / which, "rb")  # noqa: SIM115
                if src is not None:
                    _copy(src, out)
                return 0
    finally:
        if src is not None:
            src.close()

"""TensorBoard files for one experiment, written by a process of their own.

``Tuner.fit()`` starts this (``with_default_loggers``) instead of running
Ray's ``TBXLoggerCallback`` in the script itself: importing a TensorBoard
writer costs the script ~200 MiB and seconds when torch is installed
(tensorboardX imports it), several times what the whole sweep of small
trials costs, and the experiment outlives the script anyway. This process is
one more client of the daemon: it follows the experiment's events and feeds
them to a ``TBXLoggerCallback`` (the same files as Ray's, in each trial's
folder), until the experiment has finished, whether or not the script that
started it is still there.

What it writes is brought up to date with each trial's ``result.json``
first (``catch_up``), so it can start late, fall behind the event stream,
or be run by hand afterwards (``tuned tensorboard EXPERIMENT``) without
losing rows or writing one twice. One writer per experiment at a time: it
holds ``.tensorboard.lock`` in the experiment folder while it runs.

Run as ``python -m tuned_client.tune.logger.writer_process --socket S EXPERIMENT_ID``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import subprocess
import sys
from typing import Any

from ... import protocol as p
from ...connection import Connection
from ...errors import TunedError
from ...framing import FrameError
from ..analysis.trial_folder import read_rows
from ..events_apply import fold, view_from_info
from ..trial import TrialView
from . import tensorboardx
from .tensorboardx import TBXLoggerCallback

LOCK_FILE = ".tensorboard.lock"
LOG_FILE = ".tensorboard.log"


def has_event_files(trial_dir: str) -> bool:
    pattern = os.path.join(glob.escape(trial_dir), "events.out.tfevents.*")
    return bool(trial_dir) and bool(glob.glob(pattern))


def _iteration(row: dict[str, Any]) -> int:
    value = row.get("training_iteration", 0)
    return int(value) if isinstance(value, int | float) else 0


class ExperimentWriter:
    """Feeds one experiment's trials to a ``TBXLoggerCallback``, each row once."""

    def __init__(self) -> None:
        self.tbx = TBXLoggerCallback()
        self.trials: dict[str, TrialView] = {}
        self.written: dict[str, int] = {}  # trial id -> last training_iteration written
        self.iteration = 0

    def catch_up(self, reply: p.ExperimentReply) -> None:
        """Bring every trial's files up to its ``result.json`` (a snapshot of the experiment)."""
        for info in reply.trials:
            view = self.trials.get(info.trial_id)
            if view is None:
                view = self.trials[info.trial_id] = view_from_info(info)
            else:
                view.status, view.path = info.status, info.path or view.path
            if not view.path or (info.status == "PENDING" and info.trial_id not in self.written):
                continue
            rows = read_rows(view.path)
            if info.trial_id not in self.written and has_event_files(view.path):
                # written before this process (a live logger, an earlier run): left as it is
                self.written[info.trial_id] = max((_iteration(r) for r in rows), default=0)
                continue
            for row in rows:
                self._result(view, row)
            if info.status in ("TERMINATED", "ERROR"):
                self.tbx.log_trial_end(view, failed=info.status == "ERROR")

    def _result(self, view: TrialView, row: dict[str, Any]) -> None:
        it = _iteration(row)
        if it <= self.written.get(view.trial_id, 0):
            return  # already written (caught up from result.json before its event came)
        self.written[view.trial_id] = it
        self.tbx.log_trial_result(self.iteration, view, row)

    def apply(self, event: Any) -> bool:
        """One event; True once the experiment has finished."""
        for hook, kwargs in fold(self.trials, event):
            view = kwargs["trial"]
            if hook == "on_trial_start":
                self.tbx.log_trial_start(view)
            elif hook == "on_trial_result":
                self._result(view, kwargs["result"])
            elif hook in ("on_trial_complete", "on_trial_error"):
                self.tbx.log_trial_end(view, failed=hook == "on_trial_error")
        self.iteration += 1
        return isinstance(event, p.ExperimentFinished)

    def close(self) -> None:
        for view in list(self.tbx._trial_writer):
            self.tbx.log_trial_end(view)


def follow(socket: str, experiment_id: str, *, follow: bool = True) -> int:
    """Write the experiment's TensorBoard files; with ``follow``, until it finishes."""
    writer = ExperimentWriter()
    try:
        while True:
            conn = Connection.open(socket, autostart=False)
            try:
                reply = conn.request(p.GetExperiment(experiment_id=experiment_id))
                assert isinstance(reply, p.ExperimentReply)
                writer.catch_up(reply)
                if reply.finished or not follow:
                    return len(writer.written)
                conn.send(p.Subscribe(experiment_id=experiment_id, since=reply.seq))
                while True:
                    msg = conn.recv()
                    if isinstance(msg, p.Lagged):
                        break  # fell behind: take a fresh snapshot and catch up from the files
                    if isinstance(msg, p.Error):
                        raise TunedError(msg.message)
                    if isinstance(msg, p.Event) and writer.apply(msg):
                        return len(writer.written)
            except (FrameError, OSError):
                pass  # the daemon went away: catch up once it is back (or fail to connect)
            finally:
                conn.close()
    finally:
        writer.close()


def lock(experiment_path: str) -> int | None:
    """An fd holding the experiment's writer lock, or None if a writer already holds it."""
    fd = os.open(os.path.join(experiment_path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def spawn(socket: str, experiment_id: str, experiment_path: str) -> subprocess.Popen[bytes] | None:
    """Start the writer in the background (its own session: it outlives the script)."""
    try:
        fd = lock(experiment_path)
    except OSError:
        return None  # no experiment folder to write in (yet): nothing to follow
    if fd is None:
        return None  # one is already following this experiment
    try:
        with open(os.path.join(experiment_path, LOG_FILE), "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", __name__, "--socket", socket, "--lock-fd", str(fd),
                 experiment_id],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(fd,),
                start_new_session=True, cwd=experiment_path,
            )  # fmt: skip
    finally:
        os.close(fd)  # the child holds the lock now (the same open file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--lock-fd", type=int, default=-1)
    parser.add_argument("experiment_id")
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(10)  # background work: the trials, the daemon and the script go first
    tensorboardx.hide_torch = True  # our own process: nothing here hands it a torch tensor
    with contextlib.suppress(KeyboardInterrupt):
        follow(args.socket, args.experiment_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())

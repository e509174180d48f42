"""``tuned tensorboard EXPERIMENT``: an experiment's TensorBoard files, afterwards or live.

``Tuner.fit()`` starts a writer process for its experiment when a TensorBoard
writer is installed. This command runs the same writer by hand, for what
that one did not cover: command trials (``tuned submit``), an experiment run
with ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` or from an environment without
tensorboardX, a writer killed with the machine. It writes each trial's files
from its ``result.json`` (trials that already have event files are left as
they are), then, while the experiment runs, follows it to its end.
"""

from __future__ import annotations

import argparse
import os
import sys

from tuned_client import protocol as p
from tuned_client.connection import Connection
from tuned_client.errors import DaemonError, DaemonUnavailable
from tuned_client.paths import default_socket_path


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from tuned_client.tune.logger import tensorboardx, writer_process

    if not tensorboardx.writer_available():
        raise SystemExit(
            "tuned: writing TensorBoard files needs tensorboardX (or torch and tensorboard) in "
            f"the environment of this command ({sys.executable}): pip install 'tuned[tensorboard]'"
            ", or with pipx: pipx inject tuned tensorboardX"
        )
    socket = str(args.socket or default_socket_path())
    try:
        with Connection.open(socket, autostart=False, client="tuned-cli") as conn:
            reply = conn.request(p.GetExperiment(experiment_id=args.experiment))
    except DaemonUnavailable as exc:
        raise SystemExit(f"tuned: {exc}") from exc
    except DaemonError as exc:
        raise SystemExit(f"tuned: {exc.message}") from exc
    assert isinstance(reply, p.ExperimentReply)
    fd = writer_process.lock(reply.path)
    if fd is None:
        print(
            f"tuned: a TensorBoard writer already follows {args.experiment} (it holds "
            f"{os.path.join(reply.path, writer_process.LOCK_FILE)}); nothing to do",
            file=sys.stderr,
        )
        return 0
    try:
        if not reply.finished:
            print(f"following {args.experiment} to its end (Ctrl-C to stop)", file=sys.stderr)
        tensorboardx.hide_torch = True
        try:
            count = writer_process.follow(socket, args.experiment)
        except KeyboardInterrupt:
            return 0
        except DaemonUnavailable as exc:  # it went away while we followed
            raise SystemExit(f"tuned: {exc}") from exc
    finally:
        os.close(fd)
    print(f"TensorBoard files for {count} trials in {reply.path}")
    print(f"  tensorboard --logdir {reply.path}")
    return 0

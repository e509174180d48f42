"""The loggers ``Tuner.fit()`` adds to the user's callbacks, as Ray's driver does.

Ray adds a CSV, a JSON and a TensorBoard logger unless the user passed one of
each or set ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``. Here the daemon writes
``progress.csv``, ``result.json`` and ``params.json`` for every trial on its
own, so the one logger left to add is TensorBoard's, and only when a writer
can be imported: nothing is required, and nothing is said, when neither
tensorboardX nor torch's writer is installed (Ray warns, but it ships
tensorboardX with ``ray[tune]``; here it is the ``tensorboard`` extra).

It runs as a process of its own (``writer_process``), started as soon as
the daemon has accepted the experiment: the script stays as light and as fast as without it, and
the files keep coming when the script is gone and the daemon finishes the
experiment. A ``TBXLoggerCallback`` passed in ``callbacks`` runs in the
script instead, as in Ray, and no process is started.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ... import protocol as p
from . import writer_process
from .tensorboardx import TBXLoggerCallback, writer_available


def with_default_loggers(
    callbacks: list[Any] | None, socket: str | Path, accepted: p.Accepted
) -> list[Any]:
    """The callbacks to run in the script; starts the TensorBoard writer process if due.

    Nothing is added to the list itself: with no callback of the user's, the
    driver loop stays free of per-event hook calls.
    """
    out = list(callbacks or [])
    if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0") == "1":
        return out
    if any(isinstance(c, TBXLoggerCallback) for c in out) or not writer_available():
        return out
    writer_process.spawn(str(socket), accepted.experiment_id, accepted.path)
    return out

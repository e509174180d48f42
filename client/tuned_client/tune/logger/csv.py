"""``ray.tune.logger.CSVLoggerCallback``: ``progress.csv`` in each trial's folder.

The daemon writes every trial's ``progress.csv`` itself, whether or not a
script is following the experiment, so this callback writes nothing: it is
here so that Ray scripts that name it (in ``RunConfig(callbacks=...)``, in a
subclass, in an ``isinstance`` check) run unchanged, without a second copy
of each row.
"""

from __future__ import annotations

from .logger import LoggerCallback


class CSVLoggerCallback(LoggerCallback):
    """Logs results to ``progress.csv`` under the trial folder (done by the daemon here)."""

    _SAVED_FILE_TEMPLATES = ["progress.csv"]

"""``ray.tune.logger.JsonLoggerCallback``: ``result.json`` and ``params.json`` per trial.

The daemon writes both for every trial, before a result is acknowledged, so
this callback writes nothing: it is here so that Ray scripts that name it run
unchanged, without a second copy of each row.
"""

from __future__ import annotations

from .logger import LoggerCallback


class JsonLoggerCallback(LoggerCallback):
    """Logs results to ``result.json`` and the config to ``params.json`` (done by the daemon)."""

    _SAVED_FILE_TEMPLATES = ["result.json", "params.json"]

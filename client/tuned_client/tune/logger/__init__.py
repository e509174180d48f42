"""``ray.tune.logger``: the logger callbacks Ray users import, under Ray's names.

``TBXLoggerCallback`` writes TensorBoard files and is added by default when a
writer is installed; ``CSVLoggerCallback`` and ``JsonLoggerCallback`` are
accepted and write nothing, because the daemon writes those files for every
trial. ``LoggerCallback`` is the base class for loggers of your own.
"""

from __future__ import annotations

from .csv import CSVLoggerCallback
from .json import JsonLoggerCallback
from .logger import LoggerCallback
from .tensorboardx import TBXLoggerCallback

__all__ = ["CSVLoggerCallback", "JsonLoggerCallback", "LoggerCallback", "TBXLoggerCallback"]

"""``ray.tune.logger.comet``: Ray's older path to ``CometLoggerCallback``."""

from __future__ import annotations

from ...air.integrations.comet import CometLoggerCallback

__all__ = ["CometLoggerCallback"]

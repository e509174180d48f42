"""``ray.tune.logger.mlflow``: Ray's older path to ``MLflowLoggerCallback``."""

from __future__ import annotations

from ...air.integrations.mlflow import MLflowLoggerCallback

__all__ = ["MLflowLoggerCallback"]

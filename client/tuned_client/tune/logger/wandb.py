"""``ray.tune.logger.wandb``: Ray's older path to ``WandbLoggerCallback``."""

from __future__ import annotations

from ...air.integrations.wandb import WandbLoggerCallback

__all__ = ["WandbLoggerCallback"]

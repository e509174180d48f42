"""``ray.tune.tune_config``, the module path Ray's scripts import ``TuneConfig`` from."""

from .config import TuneConfig

__all__ = ["TuneConfig"]

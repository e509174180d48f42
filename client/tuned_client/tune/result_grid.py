"""``ray.tune.result_grid``, the module path Ray's scripts import ``ResultGrid`` from."""

from .result import Result, ResultGrid

__all__ = ["Result", "ResultGrid"]

"""``ray.tune.execution``: only the module paths Ray's scripts import from."""

"""Per-trial resources: ``tune.with_resources`` and ``tune.PlacementGroupFactory``.

Resources are bundles of ``{"cpu": .., "gpu": .., "memory": .., custom: ..}``.
A dict is one bundle (missing ``cpu`` means 0 CPUs, as in Ray); a
PlacementGroupFactory's bundles are reserved together, all or nothing; a
callable gets the trial's spec (``spec.config.x``) and returns either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_RESOURCES: list[dict[str, float]] = [{"cpu": 1.0}]
_ATTR = "__tuned_resources__"


class PlacementGroupFactory:
    """Bundles of resources reserved together for one trial (``ray.tune.PlacementGroupFactory``)."""

    def __init__(self, bundles: list[dict[str, float]], strategy: str = "PACK", **_: Any) -> None:
        if not bundles:
            raise ValueError("PlacementGroupFactory needs at least one bundle")
        self.bundles = [dict(b) for b in bundles]
        self.strategy = strategy

    @property
    def required_resources(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for b in self.bundles:
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + float(v)
        return total

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupFactory) and other.bundles == self.bundles

    def __repr__(self) -> str:
        return f"<PlacementGroupFactory (bundles={self.bundles}, strategy={self.strategy})>"


ResourceSpec = Mapping[str, float] | PlacementGroupFactory | Callable[[Any], Any]


def to_bundles(resources: Any) -> list[dict[str, float]]:
    """Normalize a resources value to bundles; the daemon validates amounts."""
    if resources is None:
        return [dict(b) for b in DEFAULT_RESOURCES]
    if hasattr(resources, "as_placement_group_factory"):  # train.ScalingConfig, as Ray takes it
        resources = resources.as_placement_group_factory()
    if isinstance(resources, PlacementGroupFactory):
        return [dict(b) for b in resources.bundles]
    if isinstance(resources, Mapping):
        bundle = dict(resources)
        custom = bundle.pop("custom_resources", None)
        if isinstance(custom, Mapping):
            bundle.update(custom)
        return [bundle] if bundle else [{"cpu": 0.0}]
    raise TypeError(
        "resources must be a dict like {'cpu': 2, 'gpu': 0.5}, a PlacementGroupFactory, "
        f"or a function of the trial spec returning one; got {type(resources).__name__}"
    )


def with_resources(trainable: Callable[..., Any], resources: Any) -> Callable[..., Any]:
    """Attach per-trial resources to a trainable, like ``ray.tune.with_resources``."""
    if not (callable(resources) and not isinstance(resources, PlacementGroupFactory)):
        to_bundles(resources)  # refuse a bad type now, not when the Tuner runs

    if isinstance(trainable, type):  # a class Trainable stays a class
        return type(
            trainable.__name__, (trainable,), {_ATTR: resources, "__module__": trainable.__module__}
        )

    @functools.wraps(trainable)
    def wrapped(config: Any, **kwargs: Any) -> Any:
        return trainable(config, **kwargs)

    setattr(wrapped, _ATTR, resources)
    return wrapped


def resources_of(trainable: Any) -> Any:
    return getattr(trainable, _ATTR, None)


def trial_bundles(resources: Any, spec: Any) -> list[dict[str, float]]:
    """The bundles of one trial; a callable is given the trial's spec."""
    if callable(resources) and not isinstance(resources, PlacementGroupFactory):
        resources = resources(spec)
    return to_bundles(resources)

"""``ray.tune.execution.placement_groups``, where Ray keeps ``PlacementGroupFactory``."""

from ..resources import PlacementGroupFactory

__all__ = ["PlacementGroupFactory"]

"""``ray.air``: the part Ray Tune users import, ``air.integrations`` (the trackers)."""

"""Helpers of the integrations (Ray's ``ray.air._internal``)."""

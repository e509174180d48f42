"""Ax (Bayesian optimisation on BoTorch) as a searcher (``pip install tuned[ax]``)."""

from .ax_search import AxSearch

__all__ = ["AxSearch"]

"""Nevergrad's optimisers as a searcher (``pip install tuned[nevergrad]``)."""

from .nevergrad_search import NevergradSearch

__all__ = ["NevergradSearch"]

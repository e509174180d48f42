"""HEBO (Huawei's heteroscedastic evolutionary BO) as a searcher (``pip install tuned[hebo]``)."""

from .hebo_search import HEBOSearch

__all__ = ["HEBOSearch"]

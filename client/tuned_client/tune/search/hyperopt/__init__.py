"""HyperOpt as a searcher (optional extra: ``pip install tuned[hyperopt]``)."""

from .hyperopt_search import HyperOptSearch

__all__ = ["HyperOptSearch"]

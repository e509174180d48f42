"""Optuna as a searcher (optional extra: ``pip install optuna``)."""

from .optuna_search import OptunaSearch

__all__ = ["OptunaSearch"]

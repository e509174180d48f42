"""Bayesian optimisation (``bayes_opt``) as a searcher (``pip install tuned[bayesopt]``)."""

from .bayesopt_search import BayesOptSearch

__all__ = ["BayesOptSearch"]

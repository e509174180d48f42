"""BOHB (``hpbandster`` on ``ConfigSpace``) as a searcher (``pip install tuned[bohb]``).

Use it with ``tune.schedulers.HyperBandForBOHB``, which tells it the budget of
each result.
"""

from .bohb_search import TuneBOHB

__all__ = ["TuneBOHB"]

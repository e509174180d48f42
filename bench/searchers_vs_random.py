"""Every added search library against random search, on bench/tpe_vs_random.py's functions.

Each searcher (HyperOpt, BayesOpt, Nevergrad, Ax, BOHB, HEBO: those whose extra
is installed; Optuna's TPE for reference) gets the same number of evaluations
of Branin (2-D) and Hartmann-6 as random search (``BasicVariantGenerator``),
over 5 seeds. The figure is regret (best found minus the known optimum);
printed per searcher and function as the ratio of its median regret to
random search's, measured in this one run (below 1: it beats random).
Searchers run in-process, asked and told as the steering loop does.
Run: ``python -m bench.searchers_vs_random [--budget N] [--seeds N] [--only NAME,...]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from tuned_client.tune.search import BasicVariantGenerator, Searcher

from .tpe_vs_random import PROBLEMS


def _hyperopt(space: dict[str, Any], seed: int) -> Searcher:
    from tuned_client.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(space, metric="y", mode="min", random_state_seed=seed)


def _bayesopt(space: dict[str, Any], seed: int) -> Searcher:
    from tuned_client.tune.search.bayesopt import BayesOptSearch

    return BayesOptSearch(space, metric="y", mode="min", random_state=seed, patience=10**6)


def _nevergrad(space: dict[str, Any], seed: int) -> Searcher:
    import nevergrad as ng
    import numpy as np
    from tuned_client.tune.search.nevergrad import NevergradSearch

    np.random.seed(seed)
    return NevergradSearch(ng.optimizers.OnePlusOne, space=space, metric="y", mode="min")


def _ax(space: dict[str, Any], seed: int) -> Searcher:
    import logging

    from tuned_client.tune.search.ax import AxSearch

    logging.getLogger("ax").setLevel(logging.ERROR)
    return AxSearch(space, metric="y", mode="min", random_seed=seed)


def _bohb(space: dict[str, Any], seed: int) -> Searcher:
    import numpy as np
    from tuned_client.tune.search.bohb import TuneBOHB

    np.random.seed(seed)  # hpbandster draws from numpy's global state
    return TuneBOHB(space, metric="y", mode="min", seed=seed)


def _hebo(space: dict[str, Any], seed: int) -> Searcher:
    from tuned_client.tune.search.hebo import HEBOSearch

    return HEBOSearch(space, metric="y", mode="min", random_state_seed=seed, max_concurrent=1)


def _optuna(space: dict[str, Any], seed: int) -> Searcher:
    from tuned_client.tune.search.optuna import OptunaSearch

    return OptunaSearch(space, metric="y", mode="min", seed=seed)


SEARCHERS: dict[str, tuple[str, Callable[[dict[str, Any], int], Searcher]]] = {
    "hyperopt": ("hyperopt", _hyperopt),
    "bayesopt": ("bayes_opt", _bayesopt),
    "nevergrad": ("nevergrad", _nevergrad),
    "ax": ("ax", _ax),
    "bohb": ("hpbandster", _bohb),
    "hebo": ("hebo", _hebo),
    "optuna": ("optuna", _optuna),
}


def search(searcher: Searcher, fn: Callable[[dict[str, Any]], float], budget: int) -> float:
    """The best value in ``budget`` evaluations (a searcher that waits is asked again)."""
    best, asked = math.inf, 0
    for i in range(budget):
        config: Any = None
        while not isinstance(config, dict) and asked < budget * 20:
            asked += 1
            config = searcher.suggest(f"{i}-{asked}")
            if config == Searcher.FINISHED:
                return best
        if not isinstance(config, dict):
            return best
        value = fn(config)
        searcher.on_trial_result(
            f"{i}-{asked}", {"y": value, "training_iteration": 1, "hyperband_info": {"budget": 1}}
        )
        searcher.on_trial_complete(f"{i}-{asked}", {"y": value})
        best = min(best, value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated searcher names")
    args = parser.parse_args()
    chosen = [n for n in (args.only.split(",") if args.only else SEARCHERS) if n]
    print(
        f"budget {args.budget} evaluations, seeds 0..{args.seeds - 1}; "
        "ratio = median regret / random search's median regret (below 1 beats random)"
    )
    random_regret: dict[str, list[float]] = {}
    for name, (fn, space, optimum) in PROBLEMS.items():
        random_regret[name] = []
        for seed in range(args.seeds):
            gen = BasicVariantGenerator(random_state=seed)
            gen.setup(space, args.budget, seed)
            random_regret[name].append(search(gen, fn, args.budget) - optimum)
    for searcher in chosen:
        module, make = SEARCHERS[searcher]
        if importlib.util.find_spec(module) is None:
            print(f"{searcher:>10}: skipped ({module} is not installed)")
            continue
        cells = []
        started = time.perf_counter()
        for name, (fn, space, optimum) in PROBLEMS.items():
            regrets = [search(make(space, s), fn, args.budget) - optimum for s in range(args.seeds)]
            rnd = statistics.median(random_regret[name])
            med = statistics.median(regrets)
            wins = sum(r < q for r, q in zip(regrets, random_regret[name], strict=True))
            cells.append(
                f"{name} {med / rnd if rnd else math.inf:.2f}x "
                f"(median {med:.4f} vs {rnd:.4f}, better in {wins}/{args.seeds})"
            )
        took = time.perf_counter() - started
        print(f"{searcher:>10}: " + "; ".join(cells) + f"  [{took:.0f} s]")


if __name__ == "__main__":
    main()

"""Optuna's TPE (``OptunaSearch``) against random search on known functions, same budget.

Each searcher gets the same number of evaluations of a function whose optimum
is known (Branin, 2-D; Hartmann, 6-D), over several seeds; the figure is the
regret (best found minus the optimum), lower is better. Searchers run
in-process, asked and told as the steering loop does against the daemon.
Run: ``python -m bench.tpe_vs_random`` (needs the optuna extra).
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable
from typing import Any

from tuned_client import tune
from tuned_client.tune.search import BasicVariantGenerator, Searcher
from tuned_client.tune.search.optuna import OptunaSearch


def branin(c: dict[str, Any]) -> float:
    x, y = c["x"], c["y"]
    b, cc, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    return (y - b * x**2 + cc * x - r) ** 2 + s * (1 - t) * math.cos(x) + s


_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
      [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]  # fmt: skip
_P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
      [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
      [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
      [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]  # fmt: skip
_ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(c: dict[str, Any]) -> float:
    xs = [c[f"x{i}"] for i in range(6)]
    return -sum(
        _ALPHA[i] * math.exp(-sum(_A[i][j] * (xs[j] - _P[i][j]) ** 2 for j in range(6)))
        for i in range(4)
    )


PROBLEMS: dict[str, tuple[Callable[[dict[str, Any]], float], dict[str, Any], float]] = {
    "branin": (branin, {"x": tune.uniform(-5, 10), "y": tune.uniform(0, 15)}, 0.397887),
    "hartmann6": (hartmann6, {f"x{i}": tune.uniform(0, 1) for i in range(6)}, -3.32237),
}


def search(searcher: Searcher, fn: Callable[[dict[str, Any]], float], budget: int) -> float:
    best = math.inf
    for i in range(budget):
        config = searcher.suggest(str(i))
        assert isinstance(config, dict), config
        value = fn(config)
        searcher.on_trial_complete(str(i), {"y": value})
        best = min(best, value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(
        f"budget {args.budget} evaluations per run, seeds 0..{args.seeds - 1}; regret, lower wins"
    )
    for name, (fn, space, optimum) in PROBLEMS.items():
        tpe, rnd = [], []
        for seed in range(args.seeds):
            opt = OptunaSearch(space, metric="y", mode="min", seed=seed)
            tpe.append(search(opt, fn, args.budget) - optimum)
            gen = BasicVariantGenerator(random_state=seed)
            gen.setup(space, args.budget, seed)
            rnd.append(search(gen, fn, args.budget) - optimum)
        wins = sum(t < r for t, r in zip(tpe, rnd, strict=True))
        print(
            f"{name:>10}: TPE regret median {statistics.median(tpe):.4f} "
            f"(mean {statistics.mean(tpe):.4f}), random median {statistics.median(rnd):.4f} "
            f"(mean {statistics.mean(rnd):.4f}); TPE better in {wins}/{args.seeds} seeds"
        )


if __name__ == "__main__":
    main()

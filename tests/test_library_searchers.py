"""The search libraries Ray users pick after Optuna, under Ray's module paths.

Each is an optional extra; a test needs its library and is skipped, saying
which extra to install, where it is missing. They follow Ray's
``test_searchers.py``: NaN and infinite results never break a search or win
it, points to evaluate come first, the state survives a save and restore, and
a space given twice is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.tune.search import ConcurrencyLimiter, Searcher, restore_searcher, save_searcher

SPACE = {"report": tune.uniform(0.0, 5.0), "fixed": 7}


def invalid(config: dict[str, Any]) -> float:
    """Ray's invalid-values objective: NaN below 1, inf above 4, else the value itself."""
    x = config["report"]
    if x < 1.0:
        return math.nan
    if x > 4.0:
        return math.inf
    return x


def drive(searcher: Searcher, n: int, fn: Callable[[dict[str, Any]], float]) -> list[Any]:
    """Ask and tell as the steering loop does; the configs, in order."""
    configs = []
    for i in range(n):
        config = searcher.suggest(str(i))
        if not isinstance(config, dict):
            continue
        configs.append(config)
        searcher.on_trial_result(str(i), {"_metric": fn(config), "training_iteration": 1})
        searcher.on_trial_complete(str(i), {"_metric": fn(config)})
    return configs


def best_valid(configs: list[dict[str, Any]]) -> float:
    return max(c["report"] for c in configs if 1.0 <= c["report"] <= 4.0)


def check_roundtrip(searcher: Searcher, tmp_path: Path, same: bool = True) -> None:
    """Saved and restored, the searcher goes on as the original would (the same next
    suggestion where the library is deterministic given its saved random state)."""
    save_searcher(searcher, tmp_path)
    restored = restore_searcher(tmp_path)
    assert type(restored) is type(searcher)
    expected = searcher.suggest("after")
    got = restored.suggest("after")
    assert got == expected if same else isinstance(got, dict)


# ------------------------------------------------------------------ HyperOpt


def test_hyperopt(tmp_path: Path) -> None:
    pytest.importorskip("hyperopt", reason="HyperOptSearch needs the hyperopt extra")
    from tuned_client.tune.search.hyperopt import HyperOptSearch

    search = HyperOptSearch(
        SPACE,
        metric="_metric",
        mode="max",
        random_state_seed=1,
        n_initial_points=5,
        points_to_evaluate=[{"report": 2.5}],
    )
    configs = drive(search, 20, invalid)
    assert configs[0] == {"report": 2.5, "fixed": 7}
    assert all(c["fixed"] == 7 and 0 <= c["report"] <= 5 for c in configs)
    assert best_valid(configs) > 2.5
    check_roundtrip(search, tmp_path)
    with pytest.raises(ValueError, match="Grid search"):
        HyperOptSearch({"g": tune.grid_search([1, 2])}, metric="m", mode="min")
    assert not search.set_search_properties("m", "min", {"report": tune.uniform(0, 1)})
    spaces = HyperOptSearch.convert_search_space(
        {"a": tune.randint(0, 3), "b": {"c": tune.choice(["x", "y"])}}
    )
    assert set(spaces) == {"a", "b"} and "c" in spaces["b"]


@pytest.mark.daemon_args("--num-cpus", "2")
def test_hyperopt_through_the_daemon(daemon: RunningDaemon) -> None:
    pytest.importorskip("hyperopt", reason="HyperOptSearch needs the hyperopt extra")
    from tuned_client.tune.search.hyperopt import HyperOptSearch

    def objective(config: dict[str, Any]) -> dict[str, Any]:
        return {"loss": (config["x"] - 1.0) ** 2, "n": config["n"]}

    search = ConcurrencyLimiter(HyperOptSearch(random_state_seed=3, n_initial_points=3), 2)
    results = tune.Tuner(
        objective,
        param_space={"x": tune.uniform(-2, 2), "n": tune.randint(0, 3)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=search, num_samples=8),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert len(results) == 8 and results.num_terminated == 8
    assert all(-2 <= r.config["x"] <= 2 and r.config["n"] in (0, 1, 2) for r in results)


# ------------------------------------------------------------------ BayesOpt


@pytest.mark.slow
def test_bayesopt(tmp_path: Path) -> None:
    pytest.importorskip("bayes_opt", reason="BayesOptSearch needs the bayesopt extra")
    from tuned_client.tune.search.bayesopt import BayesOptSearch

    search = BayesOptSearch(
        SPACE, metric="_metric", mode="max", random_search_steps=4, random_state=1, patience=100
    )
    configs = drive(search, 20, invalid)
    assert all(c["fixed"] == 7 and 0 <= c["report"] <= 5 for c in configs)
    assert best_valid(configs) > 2.5
    check_roundtrip(search, tmp_path)
    with pytest.raises(ValueError, match="does not support parameters of type `Categorical`"):
        BayesOptSearch({"c": tune.choice([1, 2])}, metric="m", mode="min")


def test_bayesopt_waits_for_its_random_phase_and_skips_duplicates() -> None:
    pytest.importorskip("bayes_opt", reason="BayesOptSearch needs the bayesopt extra")
    from tuned_client.tune.search.bayesopt import BayesOptSearch

    search = BayesOptSearch(
        {"x": tune.uniform(0, 1)}, metric="m", mode="min", random_search_steps=2
    )
    assert isinstance(search.suggest("a"), dict) and isinstance(search.suggest("b"), dict)
    assert search.suggest("c") is None  # the random phase's results are not in yet
    point = BayesOptSearch(
        {"x": tune.uniform(0, 1)}, metric="m", mode="min", points_to_evaluate=[{"x": 0.5}] * 2
    )
    assert point.suggest("a") == {"x": 0.5}
    assert point.suggest("b") is None  # the same config again


# ------------------------------------------------------------------ Nevergrad


def test_nevergrad(tmp_path: Path) -> None:
    ng = pytest.importorskip("nevergrad", reason="NevergradSearch needs the nevergrad extra")
    from tuned_client.tune.search.nevergrad import NevergradSearch

    search = NevergradSearch(
        ng.optimizers.OnePlusOne,
        space=SPACE,
        metric="_metric",
        mode="max",
        points_to_evaluate=[{"report": 2.5}],
    )
    configs = drive(search, 30, invalid)
    assert configs[0] == {"report": 2.5, "fixed": 7}
    assert best_valid(configs) > 2.5
    check_roundtrip(search, tmp_path)
    built = NevergradSearch(
        ng.optimizers.CMA(parametrization=2, budget=10), space=["a", "b"], metric="m", mode="min"
    )
    assert set(built.suggest("x") or {}) == {"a", "b"}
    with pytest.raises(ValueError, match="list of parameter names"):
        NevergradSearch(ng.optimizers.CMA(parametrization=2, budget=10), space=SPACE)


# ------------------------------------------------------------------ Ax


@pytest.mark.slow
def test_ax(tmp_path: Path) -> None:
    pytest.importorskip("ax", reason="AxSearch needs the ax extra (ax-platform, CPU torch)")
    from tuned_client.tune.search.ax import AxSearch

    search = AxSearch(
        {"report": tune.uniform(0.0, 5.0), "n": tune.randint(0, 3), "fixed": 7},
        metric="_metric",
        mode="max",
        points_to_evaluate=[{"report": 2.5, "n": 1}],
        random_seed=1,
    )
    configs = drive(search, 7, invalid)
    assert configs[0] == {"report": 2.5, "n": 1, "fixed": 7}
    assert all(0 <= c["report"] <= 5 and c["n"] in (0, 1, 2) for c in configs)
    params = AxSearch.convert_search_space({"x": tune.loguniform(1e-3, 1), "k": 3})
    assert {"name": "k", "type": "fixed", "value": 3} in params
    assert any(p.get("log_scale") for p in params)
    check_roundtrip(search, tmp_path, same=False)


# ------------------------------------------------------------------ BOHB


def test_bohb_learns_per_budget(tmp_path: Path) -> None:
    pytest.importorskip("hpbandster", reason="TuneBOHB needs the bohb extra")
    from tuned_client.tune.search.bohb import TuneBOHB

    search = TuneBOHB(
        {"report": tune.uniform(0.0, 5.0), "q": tune.qrandint(0, 10, 5), "fixed": 7},
        metric="_metric",
        mode="max",
        seed=2,
    )
    for i in range(20):
        config = search.suggest(str(i))
        assert isinstance(config, dict) and config["q"] in (0, 5, 10)
        for budget in (1, 3):
            result = {"_metric": invalid(config), "hyperband_info": {"budget": budget}}
            search.on_trial_result(str(i), result)
        search.on_trial_complete(str(i))
    assert search.bohber.configs[1] and search.bohber.configs[3]
    check_roundtrip(search, tmp_path, same=False)  # hpbandster draws from numpy's global state


def test_bohb_with_hyperband_for_bohb_through_the_daemon(daemon: RunningDaemon) -> None:
    pytest.importorskip("hpbandster", reason="TuneBOHB needs the bohb extra")
    from tuned_client.tune.schedulers import HyperBandForBOHB
    from tuned_client.tune.search.bohb import TuneBOHB

    def steps(config: dict[str, Any]) -> None:
        for i in range(9):
            tune.report({"score": config["x"] * (i + 1)})

    search = TuneBOHB(seed=1)
    results = tune.Tuner(
        steps,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            search_alg=search,
            scheduler=HyperBandForBOHB(max_t=9, reduction_factor=3),
            num_samples=6,
        ),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert len(results) == 6 and results.num_errors == 0
    assert sum(len(c) for c in search.bohber.configs.values()) > 0  # it saw budgets


# ------------------------------------------------------------------ HEBO


def test_hebo(tmp_path: Path) -> None:
    pytest.importorskip(
        "hebo",
        reason="HEBOSearch needs HEBO, which pins numpy<1.25 and so cannot share the test "
        "environment (numpy 2, pandas 3): install tuned[hebo] in an environment of its own",
    )
    from tuned_client.tune.search.hebo import HEBOSearch

    search = HEBOSearch(SPACE, metric="_metric", mode="max", random_state_seed=1, max_concurrent=2)
    configs = drive(search, 10, invalid)
    assert all(c["fixed"] == 7 and 0 <= c["report"] <= 5 for c in configs)
    limiter = ConcurrencyLimiter(search, max_concurrent=3)
    assert search._max_concurrent == 3 and not limiter._limit_concurrency

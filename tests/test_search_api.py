"""The search names Ray users call: Repeater, ConcurrencyLimiter's hand-off, OptunaSearch's
space conversion and several objectives, set_search_properties, Domain.sample(size=N)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.tune.search import ConcurrencyLimiter, Repeater, Searcher

optuna = pytest.importorskip("optuna", reason="OptunaSearch needs the optuna extra")
from tuned_client.tune.search.optuna import OptunaSearch  # noqa: E402


class Fixed(Searcher):
    """Suggests {"i": 1}, {"i": 2}, ... and records what it is told."""

    def __init__(self, limits_itself: bool = False) -> None:
        super().__init__(metric="y", mode="min")
        self.n = 0
        self.told: list[tuple[str, Any]] = []
        self.limits_itself = limits_itself
        self.max_concurrent = 0

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return self.limits_itself

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self.n += 1
        return {"i": self.n}

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        self.told.append((trial_id, result))


def test_repeater_runs_each_config_n_times_and_reports_the_mean() -> None:
    inner = Fixed()
    rep = Repeater(inner, repeat=3)
    configs = [rep.suggest(f"t{i}") for i in range(6)]
    assert configs == [
        {"i": 1, "__trial_index__": 0},
        {"i": 1, "__trial_index__": 1},
        {"i": 1, "__trial_index__": 2},
        {"i": 2, "__trial_index__": 0},
        {"i": 2, "__trial_index__": 1},
        {"i": 2, "__trial_index__": 2},
    ]
    rep.on_trial_complete("t0", {"y": 1.0})
    rep.on_trial_complete("t1", {"y": 2.0})
    assert inner.told == []  # the group is not done yet
    rep.on_trial_complete("t2", {})  # reported nothing: NaN, left out of the mean
    assert inner.told == [("t0", {"y": 1.5})]
    assert Repeater(Fixed(), repeat=2, set_index=False).suggest("a") == {"i": 1}


def test_concurrency_limiter_leaves_a_self_limiting_searcher_alone() -> None:
    own = Fixed(limits_itself=True)
    limiter = ConcurrencyLimiter(own, max_concurrent=1)
    assert own.max_concurrent == 1
    assert [limiter.suggest(str(i)) for i in range(3)] == [{"i": 1}, {"i": 2}, {"i": 3}]
    limiter.on_trial_complete("0", {"y": 1})
    assert own.told == [("0", {"y": 1})]
    plain = Fixed()
    limited = ConcurrencyLimiter(plain, max_concurrent=1)
    assert plain.max_concurrent == 1 and limited.suggest("a") and limited.suggest("b") is None
    assert limited.set_max_concurrency(2) and limited.suggest("b") == {"i": 2}


def test_optuna_convert_search_space_is_a_static_method_as_rays() -> None:
    dists = OptunaSearch.convert_search_space(
        {"a": tune.uniform(0, 1), "b": {"c": tune.choice([1, 2])}, "k": 3}
    )
    assert set(dists) == {"a", "b/c"}
    assert isinstance(dists["a"], optuna.distributions.FloatDistribution)
    searcher = OptunaSearch(metric="y", mode="min")
    assert searcher.set_search_properties(None, None, {"a": tune.uniform(0, 1)})
    # it has a space now: a second one is refused with False, as Ray's searchers do
    assert not searcher.set_search_properties("y", "min", {"a": tune.uniform(0, 1)})


def test_optuna_takes_several_objectives() -> None:
    search = OptunaSearch(
        {"x": tune.uniform(0, 1)}, metric=["a", "b"], mode=["min", "max"], seed=0
    )
    for i in range(8):
        config = search.suggest(str(i))
        assert isinstance(config, dict)
        search.on_trial_result(str(i), {"a": 1.0, "b": 1.0, "training_iteration": 1})
        search.on_trial_complete(str(i), {"a": config["x"], "b": config["x"] ** 2})
    study = search._study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert len(study.trials) == 8 and all(len(t.values) == 2 for t in study.trials)
    with pytest.raises(ValueError, match="same length"):
        OptunaSearch(metric=["a", "b"], mode=["min"])


def objective(config: dict[str, Any]) -> dict[str, Any]:
    return {"y": (config["x"] - 0.3) ** 2}


def test_a_param_space_beside_a_searchers_own_space_is_refused(daemon: RunningDaemon) -> None:
    search = OptunaSearch({"x": tune.uniform(0, 1)}, metric="y", mode="min")
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        tune.Tuner(
            objective,
            param_space={"x": tune.uniform(0, 1)},
            tune_config=tune.TuneConfig(search_alg=search, num_samples=2),
            run_config=tune.RunConfig(verbose=0),
        ).fit()


def test_repeater_through_the_daemon(daemon: RunningDaemon) -> None:
    search = Repeater(OptunaSearch({"x": tune.uniform(0, 1)}, metric="y", mode="min", seed=3), 2)
    results = tune.Tuner(
        objective,
        tune_config=tune.TuneConfig(search_alg=search, num_samples=6),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    xs = sorted(r.config["x"] for r in results)
    assert len(results) == 6 and xs[0] == xs[1] and xs[2] == xs[3] and xs[4] == xs[5]
    assert sorted(r.config["__trial_index__"] for r in results) == [0, 0, 0, 1, 1, 1]
    assert len(search.searcher._study.trials) == 3


def test_domain_sample_draws_many_and_takes_numpy_generators() -> None:
    np = pytest.importorskip("numpy", reason="numpy generators as random_state")
    values = tune.uniform(-5, 5).sample(size=1000)
    assert len(values) == 1000 and all(-5 <= v < 5 for v in values)
    assert not isinstance(tune.uniform(0, 1).sample(size=1), list)
    ints = tune.randint(0, 3).sample(size=200, random_state=np.random.default_rng(0))
    assert set(ints) == {0, 1, 2}
    again = tune.randint(0, 3).sample(size=200, random_state=np.random.default_rng(0))
    assert ints == again
    legacy = tune.choice(["a", "b"]).sample(size=5, random_state=np.random.RandomState(1))
    assert set(legacy) <= {"a", "b"}
    assert math.isfinite(tune.randn().sample(random_state=7))

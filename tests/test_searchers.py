"""Searchers: the default generator, the concurrency limiter, Optuna, and their saved state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.tune.search import (
    BasicVariantGenerator,
    ConcurrencyLimiter,
    Searcher,
    restore_searcher,
    save_searcher,
)

optuna = pytest.importorskip("optuna", reason="OptunaSearch needs the optuna extra")
from tuned_client.tune.search.optuna import OptunaSearch  # noqa: E402
from tuned_client.tune.search.optuna.optuna_search import convert_search_space  # noqa: E402


class Counting(Searcher):
    def __init__(self) -> None:
        super().__init__(metric="y", mode="min")
        self.n = 0
        self.completed: list[str] = []

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self.n += 1
        return {"i": self.n}

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        self.completed.append(trial_id)


def test_concurrency_limiter_holds_suggestions_until_a_trial_completes() -> None:
    inner = Counting()
    limiter = ConcurrencyLimiter(inner, max_concurrent=2)
    assert limiter.suggest("a") == {"i": 1} and limiter.suggest("b") == {"i": 2}
    assert limiter.suggest("c") is None
    limiter.on_trial_complete("a", {"y": 1})
    assert inner.completed == ["a"]
    assert limiter.suggest("c") == {"i": 3}
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimiter(inner, max_concurrent=0)


def test_batch_mode_waits_for_the_whole_batch() -> None:
    limiter = ConcurrencyLimiter(Counting(), max_concurrent=2, batch=True)
    limiter.suggest("a"), limiter.suggest("b")
    limiter.on_trial_complete("a", {"y": 1})
    assert limiter.suggest("c") is None
    limiter.on_trial_complete("b", {"y": 2})
    assert limiter.suggest("c") == {"i": 3}


def test_basic_variant_generator_continues_after_restore(tmp_path: Path) -> None:
    gen = BasicVariantGenerator(random_state=3)
    gen.setup({"x": tune.uniform(0, 1), "g": tune.grid_search([1, 2])}, num_samples=2, seed=None)
    first = [gen.suggest(str(i)) for i in range(2)]
    save_searcher(gen, tmp_path)
    restored = restore_searcher(tmp_path)
    assert isinstance(restored, BasicVariantGenerator)
    rest = [restored.suggest(str(i)) for i in range(3)]
    again = BasicVariantGenerator(random_state=3)
    again.setup({"x": tune.uniform(0, 1), "g": tune.grid_search([1, 2])}, 2, None)
    assert [again.suggest(str(i)) for i in range(5)] == [*first, *rest[:2], Searcher.FINISHED]
    assert rest[2] == Searcher.FINISHED
    assert restore_searcher(tmp_path / "nothing") is None


def test_optuna_space_conversion_keeps_ray_bounds() -> None:
    dists, constants = convert_search_space(
        {"lr": tune.loguniform(1e-4, 1e-1), "n": tune.randint(1, 5), "q": tune.qrandint(0, 10, 5),
         "act": tune.choice(["relu", "tanh"]), "nested": {"w": tune.quniform(0, 1, 0.25)}, "k": 3}
    )  # fmt: skip
    assert dists["lr"].log and dists["n"].high == 4  # randint excludes its upper bound
    assert dists["q"].high == 10 and dists["q"].step == 5
    assert dists["nested/w"].step == 0.25 and constants == {"k": 3}
    with pytest.raises(ValueError, match="grid search"):
        convert_search_space({"g": tune.grid_search([1, 2])})
    with pytest.raises(ValueError, match="Optuna cannot sample"):
        convert_search_space({"r": tune.randn()})


def test_optuna_suggests_inside_the_space_and_learns_from_results() -> None:
    search = OptunaSearch(
        {"x": tune.uniform(-5, 5), "sub": {"n": tune.randint(0, 3)}}, metric="y", mode="min",
        seed=0,
    )  # fmt: skip
    for i in range(30):
        config = search.suggest(str(i))
        assert isinstance(config, dict)
        assert -5 <= config["x"] <= 5 and config["sub"]["n"] in (0, 1, 2)
        search.on_trial_complete(str(i), {"y": (config["x"] - 2) ** 2})
    best = search._study.best_params
    assert abs(best["x"] - 2) < 1.0


def objective(config: dict[str, Any]) -> None:
    tune.report({"y": (config["x"] - 1) ** 2 + config["c"]})


@pytest.mark.daemon_args("--num-cpus", "4")
def test_optuna_search_through_the_daemon_saves_its_state(daemon: RunningDaemon) -> None:
    search = ConcurrencyLimiter(OptunaSearch(seed=1), max_concurrent=2)
    results = tune.Tuner(
        objective,
        param_space={"x": tune.uniform(-4, 4), "c": 10},
        tune_config=tune.TuneConfig(metric="y", mode="min", search_alg=search, num_samples=6),
        run_config=tune.RunConfig(name="optuna", verbose=0),
    ).fit()
    assert len(results) == 6 and results.num_terminated == 6
    assert all(r.config["c"] == 10 and -4 <= r.config["x"] <= 4 for r in results)
    assert len({r.config["x"] for r in results}) == 6
    best = results.get_best_result()
    assert best.metrics["y"] == min(r.metrics["y"] for r in results)
    restored = restore_searcher(results.experiment_path)
    assert isinstance(restored, ConcurrencyLimiter)
    assert isinstance(restored.searcher, OptunaSearch)
    assert len(restored.searcher._study.trials) == 6
    assert all(t.state.name == "COMPLETE" for t in restored.searcher._study.trials)
    assert restored.live_trials == set()


def test_search_alg_must_be_a_searcher() -> None:
    with pytest.raises(TypeError, match="Searcher"):
        tune.Tuner(objective, tune_config=tune.TuneConfig(search_alg=object()))
    with pytest.raises(TypeError, match="TrialScheduler"):
        tune.Tuner(objective, tune_config=tune.TuneConfig(scheduler="asha"))

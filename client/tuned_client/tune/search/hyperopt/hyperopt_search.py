"""``HyperOptSearch``: HyperOpt's TPE through its trials database, as Ray drives it.

Each suggestion inserts one hyperopt trial document (``tpe.suggest`` with
``n_startup_jobs=n_initial_points`` random ones first); each finished trial
writes its loss (the metric, negated for ``max``) back into that document, so
HyperOpt sees exactly the history it would in its own ``fmin`` loop. Points
to evaluate are queued as hyperopt's own ``generate_trials_to_calculate``.
"""

from __future__ import annotations

import copy
import importlib
import math
from functools import partial
from typing import Any

from ..sample import Categorical, Float, Integer, LogUniform, Normal, Quantized, Uniform
from ..space_searcher import SpaceSearcher, flatten, need


def _hpo() -> Any:
    return need("hyperopt", "HyperOptSearch", "hyperopt", "hyperopt")


def _convert_domain(name: str, domain: Any) -> Any:
    hpo = _hpo()
    sampler = domain.get_sampler()
    q = None
    if isinstance(sampler, Quantized):
        q, sampler = sampler.q, sampler.get_sampler()
    if isinstance(domain, Float):
        if isinstance(sampler, LogUniform):
            lo, hi = math.log(domain.lower), math.log(domain.upper)
            return hpo.hp.qloguniform(name, lo, hi, q) if q else hpo.hp.loguniform(name, lo, hi)
        if isinstance(sampler, Uniform):
            if q:
                return hpo.hp.quniform(name, domain.lower, domain.upper, q)
            return hpo.hp.uniform(name, domain.lower, domain.upper)
        if isinstance(sampler, Normal):
            if q:
                return hpo.hp.qnormal(name, sampler.mean, sampler.sd, q)
            return hpo.hp.normal(name, sampler.mean, sampler.sd)
    elif isinstance(domain, Integer):
        if isinstance(sampler, LogUniform):
            lo, hi = math.log(domain.lower), math.log(domain.upper)
            return hpo.pyll.scope.int(hpo.hp.qloguniform(name, lo, hi, q or 1.0))
        if isinstance(sampler, Uniform):
            if q:  # quantized integers include their upper bound (as Ray)
                return hpo.pyll.scope.int(hpo.hp.quniform(name, domain.lower, domain.upper, q))
            return hpo.hp.uniformint(name, domain.lower, domain.upper - 1)
    elif isinstance(domain, Categorical) and isinstance(sampler, Uniform):
        return hpo.hp.choice(name, list(domain.categories))
    raise ValueError(
        f"HyperOpt does not support parameters of type `{type(domain).__name__}` with samplers "
        f"of type `{type(sampler).__name__}` ({name})"
    )


class HyperOptSearch(SpaceSearcher):
    NAME = "HyperOpt"

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        n_initial_points: int = 20,
        random_state_seed: int | None = None,
        gamma: float = 0.25,
    ) -> None:
        _hpo()
        self._n_initial_points = n_initial_points
        self._seed = random_state_seed
        self._gamma = gamma
        self._live: dict[str, Any] = {}
        self._trials: Any = None
        self._categories: dict[str, list[Any]] = {}
        super().__init__(space, metric, mode, points_to_evaluate)

    @staticmethod
    def convert_search_space(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """A tune space as hyperopt expressions, nested as the space is (Ray's form)."""
        from ..space_searcher import split_space, unflatten

        domains, constants = split_space(spec, "HyperOpt")
        converted = {n: _convert_domain(prefix + n, d) for n, d in domains.items()}
        return unflatten({**constants, **converted})

    def _is_native(self, space: Any) -> bool:
        hpo = _hpo()
        return any(isinstance(v, hpo.pyll.base.Apply) for v in flatten(space).values())

    def _convert(self, domains: dict[str, Any]) -> dict[str, Any]:
        self._categories = {
            n: list(d.categories) for n, d in domains.items() if isinstance(d, Categorical)
        }
        return {name: _convert_domain(name, d) for name, d in domains.items()}

    def _setup(self) -> None:
        import numpy as np

        hpo = _hpo()
        self._algo = partial(
            hpo.tpe.suggest, n_startup_jobs=self._n_initial_points, gamma=self._gamma
        )
        self._domain = hpo.Domain(lambda spc: spc, self._space)
        self._rstate = np.random.default_rng(self._seed)
        if self._points:
            fmin = importlib.import_module("hyperopt.fmin")
            self._trials = fmin.generate_trials_to_calculate(
                [self._hpo_point(p) for p in self._points]
            )
            self._trials.refresh()
        else:
            self._trials = hpo.Trials()
        self._queued = len(self._points)

    def _hpo_point(self, point: dict[str, Any]) -> dict[str, Any]:
        """A point as hyperopt stores it: a choice by its index."""
        out = dict(point)
        for name, categories in self._categories.items():
            if name in out:
                if out[name] not in categories:
                    raise ValueError(f"point to evaluate: {name}={out[name]!r} not in {categories}")
                out[name] = categories.index(out[name])
        return out

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._require_ready()
        hpo = _hpo()
        if self._queued > 0:  # the points to evaluate, in the order given
            new_trial = self._trials.trials[len(self._points) - self._queued]
            self._queued -= 1
        else:
            new_ids = self._trials.new_trial_ids(1)
            self._trials.refresh()
            seed = int(self._rstate.integers(2**31 - 1))
            new_trials = self._algo(new_ids, self._domain, self._trials, seed)
            self._trials.insert_trial_docs(new_trials)
            self._trials.refresh()
            new_trial = new_trials[0]
        self._live[trial_id] = new_trial["tid"]
        config = hpo.base.spec_from_misc(new_trial["misc"])
        ctrl = hpo.base.Ctrl(self._trials, current_trial=new_trial)
        memo = self._domain.memo_from_config(config)
        hpo.utils.use_obj_for_literal_in_memo(self._domain.expr, ctrl, hpo.base.Ctrl, memo)
        suggested = hpo.pyll.rec_eval(self._domain.expr, memo=memo)
        return self._config(copy.deepcopy(flatten(suggested)))

    def _trial_doc(self, trial_id: str) -> Any:
        tid = self._live.get(trial_id)
        return next((t for t in self._trials.trials if t["tid"] == tid), None)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        hpo = _hpo()
        doc = self._trial_doc(trial_id)
        self._live.pop(trial_id, None)
        if doc is None:
            return
        doc["refresh_time"] = hpo.utils.coarse_utcnow()
        score = self._score(result)
        if error or score is None:
            doc["state"] = hpo.base.JOB_STATE_ERROR
            doc["misc"]["error"] = ("TuneError", "trial failed or reported no metric")
        else:
            doc["state"] = hpo.base.JOB_STATE_DONE
            doc["result"] = {"loss": -score, "status": "ok"}
        self._trials.refresh()

    def get_state(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_domain", None)  # rebuilt from the space
        state.pop("_algo", None)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._space is not None and self._ready:
            hpo = _hpo()
            self._algo = partial(
                hpo.tpe.suggest, n_startup_jobs=self._n_initial_points, gamma=self._gamma
            )
            self._domain = hpo.Domain(lambda spc: spc, self._space)

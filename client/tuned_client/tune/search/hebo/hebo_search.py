"""``HEBOSearch``: HEBO's batch suggestions, handed out one trial at a time as Ray does.

HEBO proposes ``max_concurrent`` points at once (it limits its own
concurrency: ``ConcurrencyLimiter`` leaves it alone); they are cached and
handed out as trials ask, and each result is observed as it comes (HEBO
minimises: the metric is negated for ``max``). ``points_to_evaluate`` with
``evaluated_rewards`` are observed up front; without rewards they run first.

HEBO 0.3.6 requires numpy < 1.25, so it cannot share an environment with
numpy 2 (pandas 3, recent scipy): install it in an environment of its own.
"""

from __future__ import annotations

from typing import Any

from ..sample import Categorical, Float, Integer, LogUniform, Quantized, Uniform
from ..space_searcher import SpaceSearcher, finite, need


def _convert_domain(name: str, domain: Any) -> dict[str, Any]:
    sampler = domain.get_sampler()
    if isinstance(sampler, Quantized):
        raise ValueError("HEBO does not support quantization.")
    if isinstance(domain, Float) and isinstance(sampler, LogUniform):
        return {"name": name, "type": "pow", "lb": domain.lower, "ub": domain.upper, "base": 10}
    if isinstance(domain, Float) and isinstance(sampler, Uniform):
        return {"name": name, "type": "num", "lb": domain.lower, "ub": domain.upper}
    if isinstance(domain, Integer) and isinstance(sampler, LogUniform):
        return {
            "name": name,
            "type": "pow_int",
            "lb": domain.lower,
            "ub": domain.upper - 1,
            "base": 10,
        }
    if isinstance(domain, Integer) and isinstance(sampler, Uniform):
        return {"name": name, "type": "int", "lb": domain.lower, "ub": domain.upper - 1}
    if isinstance(domain, Categorical) and isinstance(sampler, Uniform):
        return {"name": name, "type": "cat", "categories": list(domain.categories)}
    raise ValueError(
        f"HEBO does not support parameters of type `{type(domain).__name__}` with samplers of "
        f"type `{type(sampler).__name__}` ({name})"
    )


class HEBOSearch(SpaceSearcher):
    NAME = "HEBO"

    def __init__(
        self,
        space: Any = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        evaluated_rewards: list[float] | None = None,
        random_state_seed: int | None = None,
        max_concurrent: int = 8,
        **kwargs: Any,
    ) -> None:
        need("hebo", "HEBOSearch", "hebo", "HEBO")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self._evaluated_rewards = evaluated_rewards
        self._seed = random_state_seed
        self._max_concurrent = max_concurrent
        self._hebo_config = kwargs
        self._cache: list[dict[str, Any]] = []
        self._live: dict[str, dict[str, Any]] = {}
        self._opt: Any = None
        super().__init__(space, metric, mode, points_to_evaluate)

    @staticmethod
    def convert_search_space(spec: dict[str, Any]) -> Any:
        """A tune space as a HEBO ``DesignSpace`` of flat names."""
        from ..space_searcher import split_space

        domains, _ = split_space(spec, "HEBO")
        design = need("hebo.design_space.design_space", "HEBOSearch", "hebo", "HEBO")
        return design.DesignSpace().parse([_convert_domain(n, d) for n, d in domains.items()])

    def _is_native(self, space: Any) -> bool:
        return type(space).__name__ == "DesignSpace"

    def _convert(self, domains: dict[str, Any]) -> Any:
        design = need("hebo.design_space.design_space", "HEBOSearch", "hebo", "HEBO")
        return design.DesignSpace().parse([_convert_domain(n, d) for n, d in domains.items()])

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self._max_concurrent = max_concurrent
        return True

    def _setup(self) -> None:
        import numpy as np
        import pandas as pd

        hebo = need("hebo.optimizers.hebo", "HEBOSearch", "hebo", "HEBO")
        if self._seed is not None:
            np.random.seed(self._seed)
            import torch

            torch.manual_seed(self._seed)
        self._opt = hebo.HEBO(space=self._space, **self._hebo_config)
        if self._points and self._evaluated_rewards:
            if len(self._points) != len(self._evaluated_rewards):
                raise ValueError("`points_to_evaluate` and `evaluated_rewards` differ in length")
            rewards = np.array(self._evaluated_rewards, dtype=float) * -self.metric_op
            self._opt.observe(pd.DataFrame(self._points), rewards)
            self._points = []

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._require_ready()
        if self._points:
            params = dict(self._points.pop(0))
        else:
            if not self._cache:
                batch = self._opt.suggest(n_suggestions=self._max_concurrent)
                self._cache = [
                    {k: _plain(v) for k, v in row.items()} for row in batch.to_dict("records")
                ]
            params = self._cache.pop(0)
        self._live[trial_id] = params
        return self._config(params)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        import numpy as np
        import pandas as pd

        params = self._live.pop(trial_id, None)
        value: Any = (result or {}).get(str(self._metric))
        if params is None or error or not finite(value):
            return
        self._opt.observe(pd.DataFrame([params]), np.array([-self.metric_op * float(value)]))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    return value

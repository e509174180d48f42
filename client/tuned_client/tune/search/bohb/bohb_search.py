"""``TuneBOHB``: BOHB's model-based configurations (hpbandster), fed budget by budget.

As Ray's: configurations come from hpbandster's ``BOHB`` config generator,
and every result that carries ``hyperband_info["budget"]`` (set by
``HyperBandForBOHB``) is a new observation at that budget, so BOHB fits a
density model per budget and proposes from the largest budget with enough
results. The space is tune's domains or a ``ConfigSpace.ConfigurationSpace``.
ConfigSpace 1.x has no quantized parameters: a quantized domain is drawn
continuously and rounded to its ``q``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from ..sample import Categorical, Float, Integer, LogUniform, Quantized, Uniform
from ..space_searcher import SpaceSearcher, need

log = logging.getLogger("tuned_client")


def _cs() -> Any:
    return need("ConfigSpace", "TuneBOHB", "bohb", "'hpbandster ConfigSpace'")


def _convert_domain(name: str, domain: Any) -> Any:
    cs = _cs()
    sampler = domain.get_sampler()
    if isinstance(sampler, Quantized):
        sampler = sampler.get_sampler()
    log_scale = isinstance(sampler, LogUniform)
    if isinstance(domain, Float) and isinstance(sampler, LogUniform | Uniform):
        return cs.Float(name, bounds=(domain.lower, domain.upper), log=log_scale)
    if isinstance(domain, Integer) and isinstance(sampler, LogUniform | Uniform):
        upper = domain.upper if domain.q else domain.upper - 1  # quantized ones include it
        return cs.Integer(name, bounds=(domain.lower, upper), log=log_scale)
    if isinstance(domain, Categorical) and isinstance(sampler, Uniform):
        return cs.Categorical(name, list(domain.categories))
    raise ValueError(
        f"TuneBOHB does not support parameters of type `{type(domain).__name__}` with "
        f"samplers of type `{type(sampler).__name__}` ({name})"
    )


class _JobWrapper:
    """What hpbandster's ``new_result`` reads of a finished job."""

    def __init__(self, loss: float, budget: float, config: dict[str, Any]) -> None:
        self.result = {"loss": loss}
        self.kwargs = {"budget": budget, "config": config.copy()}
        self.exception = None


class TuneBOHB(SpaceSearcher):
    NAME = "BOHB"

    def __init__(
        self,
        space: Any = None,
        bohb_config: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        seed: int | None = None,
        max_concurrent: int = 0,
    ) -> None:
        _cs()
        need("hpbandster", "TuneBOHB", "bohb", "hpbandster")
        self._bohb_config = dict(bohb_config or {})
        self._seed = seed
        self._max_concurrent = max_concurrent
        self._quanta: dict[str, float] = {}
        self.trial_to_params: dict[str, dict[str, Any]] = {}
        self._warned = False
        super().__init__(space, metric, mode, points_to_evaluate)

    @staticmethod
    def convert_search_space(spec: dict[str, Any]) -> Any:
        """A tune space as a ``ConfigSpace.ConfigurationSpace`` of flat names."""
        from ..space_searcher import split_space

        domains, _ = split_space(spec, "BOHB")
        space = _cs().ConfigurationSpace()
        space.add([_convert_domain(n, d) for n, d in domains.items()])
        return space

    def _is_native(self, space: Any) -> bool:
        return isinstance(space, _cs().ConfigurationSpace)

    def _convert(self, domains: dict[str, Any]) -> Any:
        self._quanta = {n: float(d.q) for n, d in domains.items() if getattr(d, "q", None)}
        space = _cs().ConfigurationSpace()
        space.add([_convert_domain(n, d) for n, d in domains.items()])
        return space

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self._max_concurrent = max_concurrent
        return True

    def _setup(self) -> None:
        from hpbandster.optimizers.config_generators.bohb import BOHB

        if self._seed is not None:
            self._space.seed(self._seed)
        self.bohber = BOHB(self._space, **self._bohb_config)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._require_ready()
        if self._max_concurrent and len(self.trial_to_params) >= self._max_concurrent:
            return None
        if self._points:
            config = dict(self._points.pop(0))
        else:
            config, _info = self.bohber.get_config(None)  # the budget is unused by hpbandster
            config = {k: _plain(v) for k, v in dict(config).items()}
            for name, q in self._quanta.items():
                if name in config:
                    rounded = round(config[name] / q) * q
                    config[name] = type(config[name])(rounded)
        self.trial_to_params[trial_id] = copy.deepcopy(config)
        return self._config(config)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        score = self._score(result)
        if trial_id not in self.trial_to_params or score is None:
            return
        info = result.get("hyperband_info")
        if not isinstance(info, dict):
            if not self._warned:
                log.warning(
                    "BOHB Info not detected in result. Are you using HyperBandForBOHB as a "
                    "scheduler?"
                )
                self._warned = True
            return
        if "budget" in info:
            params = self.trial_to_params[trial_id]
            self.bohber.new_result(_JobWrapper(-score, info["budget"], params))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self.trial_to_params.pop(trial_id, None)


def _plain(value: Any) -> Any:
    """numpy scalars from ConfigSpace as Python values."""
    if hasattr(value, "item"):
        value = value.item()
    return value

"""``NevergradSearch``: any Nevergrad optimiser, asked and told as Ray drives it.

``optimizer`` is an optimiser class or registry entry (``ng.optimizers.OnePlusOne``;
it is built on the converted space with ``optimizer_kwargs``) or an optimiser
instance already built on a parametrization (then ``space`` is a list of the
parameter names, or None). Nevergrad minimises: the metric is negated for
``max``. Points to evaluate are given to the optimiser with ``suggest``.
"""

from __future__ import annotations

from typing import Any

from ..sample import Categorical, Float, Integer, LogUniform, Quantized, Uniform
from ..space_searcher import SpaceSearcher, need


def _ng() -> Any:
    return need("nevergrad", "NevergradSearch", "nevergrad", "nevergrad")


def _convert_domain(name: str, domain: Any) -> Any:
    ng = _ng()
    sampler = domain.get_sampler()
    if isinstance(sampler, Quantized):
        raise ValueError("Nevergrad does not support quantization.")
    if isinstance(domain, Float | Integer) and isinstance(sampler, LogUniform):
        param = ng.p.Log(lower=domain.lower, upper=domain.upper)
    elif isinstance(domain, Float | Integer) and isinstance(sampler, Uniform):
        upper = domain.upper - 1 if isinstance(domain, Integer) else domain.upper
        param = ng.p.Scalar(lower=domain.lower, upper=upper)
    elif isinstance(domain, Categorical) and isinstance(sampler, Uniform):
        return ng.p.Choice(list(domain.categories))
    else:
        raise ValueError(
            f"Nevergrad does not support parameters of type `{type(domain).__name__}` with "
            f"samplers of type `{type(sampler).__name__}` ({name})"
        )
    return param.set_integer_casting() if isinstance(domain, Integer) else param


class NevergradSearch(SpaceSearcher):
    NAME = "Nevergrad"

    def __init__(
        self,
        optimizer: Any = None,
        optimizer_kwargs: dict[str, Any] | None = None,
        space: dict[str, Any] | list[str] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
    ) -> None:
        ng = _ng()
        if optimizer is None:
            raise ValueError("NevergradSearch needs an optimizer, e.g. ng.optimizers.OnePlusOne")
        self._optimizer_kwargs = dict(optimizer_kwargs or {})
        self._factory: Any = None
        self._opt: Any = None
        self._names: list[str] | None = None
        if isinstance(optimizer, ng.optimization.Optimizer):
            if space is not None and not isinstance(space, list):
                raise ValueError(
                    "If you pass a configured optimizer to Nevergrad, either pass a list of "
                    "parameter names or None as the `space` parameter."
                )
            if self._optimizer_kwargs:
                raise ValueError(
                    "If you pass in optimizer kwargs, either pass an `Optimizer` subclass or an "
                    "instance of `ConfiguredOptimizer`."
                )
            self._opt = optimizer
            self._names = space
            space = None
        else:
            self._factory = optimizer
        self._live: dict[str, Any] = {}
        super().__init__(space, metric, mode, points_to_evaluate)
        if self._opt is not None and self._metric and self._mode:
            self._setup()
            self._ready = True

    @staticmethod
    def convert_search_space(spec: dict[str, Any]) -> Any:
        """A tune space as a Nevergrad ``ng.p.Dict`` of flat names."""
        from ..space_searcher import split_space

        domains, _ = split_space(spec, "Nevergrad")
        return _ng().p.Dict(**{n: _convert_domain(n, d) for n, d in domains.items()})

    def _is_native(self, space: Any) -> bool:
        return isinstance(space, _ng().p.Parameter)

    def _convert(self, domains: dict[str, Any]) -> Any:
        return _ng().p.Dict(**{n: _convert_domain(n, d) for n, d in domains.items()})

    def set_search_properties(
        self, metric: Any, mode: Any, config: dict[str, Any], **spec: Any
    ) -> bool:
        if self._opt is not None:
            return False
        return super().set_search_properties(metric, mode, config, **spec)

    def _setup(self) -> None:
        if self._opt is None:
            self._opt = self._factory(self._space, **self._optimizer_kwargs)
        for point in self._points:
            self._opt.suggest(point)
        self._points = []

    def _values(self, candidate: Any) -> dict[str, Any]:
        value = candidate.value
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, tuple):
            args = list(candidate.args)
        elif hasattr(value, "tolist"):  # an array parametrization: one value per name
            args = list(value.tolist()) if getattr(value, "ndim", 0) else [value.item()]
        else:
            args = [value]
        if self._names is None:
            raise ValueError("give the parameter names as `space` with a configured optimizer")
        return dict(zip(self._names, args, strict=True))

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._require_ready()
        candidate = self._opt.ask()
        self._live[trial_id] = candidate
        return self._config(self._values(candidate))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        candidate = self._live.pop(trial_id, None)
        score = self._score(result)
        if candidate is not None and score is not None and not error:
            self._opt.tell(candidate, -score)  # Nevergrad minimises

"""``AxSearch``: Ax's ``AxClient`` (Sobol, then BoTorch), asked and told as Ray drives it.

The space is tune's domains or Ax's own parameter list (``[{"name": "x",
"type": "range", "bounds": [0, 1]}, ...]``); ``parameter_constraints`` and
``outcome_constraints`` are Ax's strings; an ``ax_client`` of your own may be
passed instead (then ``space``, metric and mode come from it). A failed trial
is logged to Ax as failed; one that reported no metric is abandoned.
"""

from __future__ import annotations

from typing import Any

from ..sample import Categorical, Float, Integer, LogUniform, Quantized, Uniform
from ..space_searcher import SpaceSearcher, finite, need


def _ax() -> Any:
    return need("ax.service.ax_client", "AxSearch", "ax", "ax-platform")


def _convert_domain(name: str, domain: Any) -> dict[str, Any]:
    sampler = domain.get_sampler()
    if isinstance(sampler, Quantized):
        raise ValueError("Ax search does not support quantization.")
    log = isinstance(sampler, LogUniform)
    if isinstance(domain, Float) and isinstance(sampler, LogUniform | Uniform):
        return {
            "name": name,
            "type": "range",
            "bounds": [domain.lower, domain.upper],
            "value_type": "float",
            "log_scale": log,
        }
    if isinstance(domain, Integer) and isinstance(sampler, LogUniform | Uniform):
        return {
            "name": name,
            "type": "range",
            "bounds": [domain.lower, domain.upper - 1],  # randint excludes its upper bound
            "value_type": "int",
            "log_scale": log,
        }
    if isinstance(domain, Categorical) and isinstance(sampler, Uniform):
        return {"name": name, "type": "choice", "values": list(domain.categories)}
    raise ValueError(
        f"Ax search does not support parameters of type `{type(domain).__name__}` with "
        f"samplers of type `{type(sampler).__name__}` ({name})"
    )


class AxSearch(SpaceSearcher):
    NAME = "Ax"

    def __init__(
        self,
        space: dict[str, Any] | list[dict[str, Any]] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        parameter_constraints: list[str] | None = None,
        outcome_constraints: list[str] | None = None,
        ax_client: Any = None,
        **ax_kwargs: Any,
    ) -> None:
        _ax()
        self._parameter_constraints = parameter_constraints
        self._outcome_constraints = outcome_constraints
        self._ax_kwargs = ax_kwargs
        self._ax: Any = ax_client
        self._live: dict[str, int] = {}
        if ax_client is not None and space is not None:
            raise ValueError(
                "Invalid AxSearch arguments: when passing an `ax_client`, do not pass a `space`."
            )
        super().__init__(space, metric, mode, points_to_evaluate)
        if ax_client is not None:
            self._from_client()

    @staticmethod
    def convert_search_space(spec: dict[str, Any]) -> list[dict[str, Any]]:
        """A tune space as Ax's parameter list (constants become ``fixed`` parameters)."""
        from ..space_searcher import split_space

        domains, constants = split_space(spec, "Ax")
        fixed = [{"name": n, "type": "fixed", "value": v} for n, v in constants.items()]
        return fixed + [_convert_domain(n, d) for n, d in domains.items()]

    def _is_native(self, space: Any) -> bool:
        return isinstance(space, list)

    def _convert(self, domains: dict[str, Any]) -> list[dict[str, Any]]:
        return [_convert_domain(n, d) for n, d in domains.items()]

    def _from_client(self) -> None:
        exp = self._ax.experiment
        objective = exp.optimization_config.objective
        self._metric = self._metric or objective.metric.name
        self._mode = self._mode or ("min" if objective.minimize else "max")
        self._space = [{"name": n} for n in exp.parameters]
        self._ready = True

    def set_search_properties(
        self, metric: Any, mode: Any, config: dict[str, Any], **spec: Any
    ) -> bool:
        if self._ax is not None:
            return False
        return super().set_search_properties(metric, mode, config, **spec)

    def _setup(self) -> None:
        ax = _ax()
        if self._ax is None:
            self._ax = ax.AxClient(
                random_seed=self._ax_kwargs.pop("random_seed", None), verbose_logging=False
            )
            self._ax.create_experiment(
                parameters=self._space,
                objectives={self._metric: ax.ObjectiveProperties(minimize=self._mode != "max")},
                parameter_constraints=self._parameter_constraints,
                outcome_constraints=self._outcome_constraints,
                **self._ax_kwargs,
            )

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._require_ready()
        if self._points:
            parameters, index = self._ax.attach_trial(self._points.pop(0))
        else:
            parameters, index = self._ax.get_next_trial()
        self._live[trial_id] = index
        return self._config(dict(parameters))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        index = self._live.pop(trial_id, None)
        if index is None:
            return
        value: Any = (result or {}).get(str(self._metric))
        if error:
            self._ax.log_trial_failure(trial_index=index)
        elif finite(value):  # NaN or inf is no observation a GP can fit
            data = {str(self._metric): (float(value), None)}
            for name in self._outcome_names():
                if name in (result or {}):
                    data[name] = (float((result or {})[name]), None)
            self._ax.complete_trial(trial_index=index, raw_data=data)
        else:
            self._ax.abandon_trial(trial_index=index, reason="no finite metric reported")

    def _outcome_names(self) -> list[str]:
        names = []
        for constraint in self._outcome_constraints or []:
            names.append(constraint.split()[0])
        return names

"""What the searchers wrapping an optimisation library share (HyperOpt, BayesOpt, ...).

Each takes its space either in its constructor (in tune's domains, or the
library's own) or from the Tuner's ``param_space`` through
``set_search_properties``, which answers False once it has one, as Ray's
searchers do. Nested parameters go by flat names (``"a/b"``); constants in the
space ride along unchanged. ``metric_op`` turns the metric into "larger is
better" (1 for ``max``, -1 for ``min``); a library that minimises negates it.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from .searcher import Searcher


def need(module: str, searcher: str, extra: str, pip_name: str) -> Any:
    """Import an optional library, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{searcher} needs {pip_name}: pip install {pip_name} (or tuned[{extra}])"
        ) from exc


def flatten(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``"a/b"`` names; a ``grid_search`` stays a leaf (and is refused)."""
    out: dict[str, Any] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and "grid_search" not in value:
            out.update(flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def split_space(
    space: dict[str, Any], searcher: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(domains by flat name, constants by flat name); a grid search is refused."""
    from .sample import Domain

    domains: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    for name, value in flatten(space).items():
        if isinstance(value, dict) and "grid_search" in value:
            raise ValueError(
                f"Grid search parameters cannot be automatically converted to a {searcher} "
                f"search space ({name})."
            )
        if isinstance(value, Domain):
            domains[name] = value
        else:
            constants[name] = value
    return domains, constants


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class SpaceSearcher(Searcher):
    """A searcher over a space converted for a library; subclasses fill in the library."""

    NAME = "Searcher"

    def __init__(
        self,
        space: Any = None,
        metric: Any = None,
        mode: Any = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._space: Any = None
        self._constants: dict[str, Any] = {}
        self._points = [flatten(p) for p in points_to_evaluate or []]
        self._ready = False
        if space:
            self._take_space(space)
        if self._space is not None and self._metric and self._mode:
            self._setup()
            self._ready = True

    # ------------------------------------------------------------ for subclasses

    def _convert(self, space: dict[str, Any]) -> Any:
        """The library's space from a tune space (domains only; constants are kept apart)."""
        raise NotImplementedError

    def _is_native(self, space: Any) -> bool:
        """True if ``space`` is already in the library's own form."""
        return False

    def _setup(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ shared

    def _take_space(self, space: Any) -> None:
        if self._is_native(space):
            self._space = space
            return
        if not isinstance(space, dict):
            raise TypeError(f"{self.NAME} takes a dict search space, got {type(space).__name__}")
        domains, self._constants = split_space(space, self.NAME)
        self._space = self._convert(domains)

    @property
    def metric_op(self) -> float:
        return 1.0 if self._mode == "max" else -1.0

    def set_search_properties(
        self, metric: Any, mode: Any, config: dict[str, Any], **spec: Any
    ) -> bool:
        if self._space is not None:
            return False
        self._take_space(config)
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        self._setup()
        self._ready = True
        return True

    def _require_ready(self) -> None:
        if not self._ready:
            raise RuntimeError(
                f"Trying to sample a configuration from {self.NAME}, but no search space or "
                "no metric/mode has been set: pass `space`, `metric` and `mode` to the "
                "searcher, or a param_space and TuneConfig(metric=..., mode=...) to the Tuner."
            )

    def _config(self, flat: dict[str, Any]) -> dict[str, Any]:
        return unflatten({**self._constants, **flat})

    def _score(self, result: dict[str, Any] | None) -> float | None:
        """The result's metric, larger is better; None if missing, NaN or infinite."""
        value: Any = (result or {}).get(str(self._metric))
        return self.metric_op * float(value) if finite(value) else None



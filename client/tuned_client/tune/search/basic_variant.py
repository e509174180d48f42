"""``BasicVariantGenerator``: the default search, as a searcher the steering loop can drive.

It hands out the configs of ``generate_variants`` (grid times ``num_samples``,
random parts resampled per repetition), ``points_to_evaluate`` first, then says
``FINISHED``. The Tuner gives it the param_space, ``num_samples`` and seed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from .searcher import Searcher
from .variant_generator import generate_variants


def _merge(base: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in point.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class BasicVariantGenerator(Searcher):
    # Made by the Tuner (no search_alg given), not by the user: its trials are queued
    # all at once, not one at a time as an adaptive searcher's. Kept through a restore.
    implicit = False

    def __init__(
        self,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        max_concurrent: int = 0,
        random_state: int | None = None,
        constant_grid_search: bool = False,
    ) -> None:
        super().__init__()
        self._points = list(points_to_evaluate or [])
        self.max_concurrent = max_concurrent
        self._seed = random_state
        self._param_space: dict[str, Any] = {}
        self._num_samples = 1
        self._iter: Iterator[tuple[str, dict[str, Any]]] | None = None
        self._handed_out = 0
        self.last_tag = ""

    def setup(self, param_space: dict[str, Any], num_samples: int, seed: int | None) -> None:
        """What Ray passes through ``add_configurations``: the space and how often."""
        self._param_space = dict(param_space)
        self._num_samples = num_samples
        if self._seed is None:
            self._seed = seed
        self._iter = None

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        super().set_search_properties(metric, mode, config)
        if config and not self._param_space:
            self._param_space = dict(config)
        return True

    def _variants(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for point in self._points:
            yield from generate_variants(_merge(self._param_space, point), 1, seed=self._seed)
        remaining = max(self._num_samples - len(self._points), 0)
        yield from generate_variants(self._param_space, remaining, seed=self._seed)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._iter is None:
            self._iter = self._variants()
            for _ in range(self._handed_out):  # after restore: skip what was handed out
                next(self._iter, None)
        item = next(self._iter, None)
        if item is None:
            return Searcher.FINISHED
        self._handed_out += 1
        self.last_tag, config = item
        return config

    def get_state(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_iter"] = None  # a generator does not pickle; replayed from _handed_out
        return state

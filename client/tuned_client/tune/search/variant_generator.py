"""Expand a Ray-Tune-style ``param_space`` into concrete trial configs.

Follows Ray's ``BasicVariantGenerator``: ``num_samples`` repeats the whole grid (outer
loop), every ``grid_search`` is expanded as a cartesian product whose first variable
(sorted by path) varies fastest, random domains are redrawn for every grid point, and
``sample_from`` functions are retried in passes until the values they read are
resolved.  Each config comes with Ray's tag (``format_vars``) so trial names match the
ones users know from Ray.
"""

from __future__ import annotations

import copy
import functools
import itertools
import random
from collections.abc import Iterator, Mapping
from typing import Any

from tuned_client import protocol as p
from tuned_client.gridplan import clean_value, pieces
from tuned_client.tune.search.sample import Categorical, Domain, Function, grid_search

__all__ = [
    "AttrDict",
    "RecursiveDependencyError",
    "count_variants",
    "format_vars",
    "generate_variants",
    "grid_plan",
    "grid_search",
    "make_spec",
]

Path = tuple[Any, ...]
Spec = dict[str, Any]

# Ray gives up after this many passes over functions that read unresolved values.
_MAX_RESOLUTION_PASSES = 20
# Names available to ``{"eval": "..."}`` expressions (Ray also offers ``np``).
_EVAL_GLOBALS: dict[str, Any] = {"random": random}


class RecursiveDependencyError(Exception):
    """A ``sample_from`` function read a value that is not resolved yet."""


class AttrDict(dict[str, Any]):
    """A dict whose keys are also attributes, nested dicts included.

    Ray hands ``sample_from`` functions (and resource lambdas) a spec on which both
    ``spec.config.lr`` and ``spec["config"]["lr"]`` work; keys win over dict methods on
    attribute access, as in Ray, so a key named ``items`` is still reachable.
    """

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("__") and dict.__contains__(self, name):
            return self[name]
        return super().__getattribute__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __getitem__(self, key: str) -> Any:
        # Looked up on the type: a config key named ``_wrap`` must not shadow it.
        return type(self)._wrap(self, key, dict.__getitem__(self, key))

    def _wrap(self, key: Any, value: Any) -> Any:
        if isinstance(value, dict) and type(value) is not type(self):
            return type(self)(value)
        return value


class _UnresolvedAccessGuard(AttrDict):
    """Spec view for ``sample_from``: reading an unresolved value defers the function."""

    def _wrap(self, key: Any, value: Any) -> Any:
        if not _is_resolved(value):
            raise RecursiveDependencyError(f"`{key}` recursively depends on {value!r}")
        return super()._wrap(key, value)


def make_spec(config: Mapping[str, Any]) -> AttrDict:
    """The ``spec`` Ray passes to per-trial lambdas: ``spec.config`` is ``config``."""
    return AttrDict({"config": dict(config)})


def _try_resolve(value: Any) -> tuple[bool, Any]:
    """(True, value) for a plain value, else (False, the Domain to expand or sample)."""
    if isinstance(value, Domain):
        return False, value
    if isinstance(value, dict) and len(value) == 1:
        if "grid_search" in value:
            return False, Categorical(value["grid_search"]).grid()
        if "eval" in value:
            expr = value["eval"]
            return False, Function(lambda spec: eval(expr, dict(_EVAL_GLOBALS), {"spec": spec}))
    return True, value


def _is_resolved(value: Any) -> bool:
    return _try_resolve(value)[0]


def _unresolved(node: Any, prefix: Path = ()) -> dict[Path, Domain]:
    """Paths of every domain / grid inside nested dicts, lists and tuples."""
    found: dict[Path, Domain] = {}
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        resolved, value = _try_resolve(value)
        if not resolved:
            found[(*prefix, key)] = value
        elif isinstance(value, dict | list | tuple):
            found.update(_unresolved(value, (*prefix, key)))
    return found


def _path_key(path: Path) -> tuple[tuple[int, Any], ...]:
    """Sort key equal to Ray's tuple order, but total when int and str keys mix."""
    return tuple(
        (0, p) if isinstance(p, int | float) else (1, p) if isinstance(p, str) else (2, repr(p))
        for p in path
    )


def _get(spec: Any, path: Path) -> Any:
    for key in path:
        spec = spec[key]
    return spec


def _assign(spec: Any, path: Path, value: Any) -> None:
    """Set a nested value, rebuilding tuples since they cannot be assigned into."""
    parent: Any = None
    for key in path[:-1]:
        parent, spec = spec, spec[key]
    key = path[-1]
    if isinstance(spec, tuple):
        parent[path[-2]] = (*spec[:key], value, *spec[key + 1 :])
    else:
        spec[key] = value


def _grid_specs(spec: Spec, grid_vars: list[tuple[Path, Domain]]) -> Iterator[Spec]:
    """One spec per grid point; the first grid variable changes fastest, as in Ray."""
    if not grid_vars:
        yield spec
        return
    skeleton = copy.deepcopy(spec)
    for path, _ in grid_vars:
        _assign(skeleton, path, None)  # cheaper to copy than the grids' values
    fresh = _plain_copy if _is_plain_tree(skeleton) else copy.deepcopy
    ordered = list(reversed(grid_vars))
    columns = [domain.categories for _, domain in ordered if isinstance(domain, Categorical)]
    for point in itertools.product(*columns):
        variant = fresh(skeleton)
        for (path, _), value in zip(ordered, point, strict=True):
            _assign(variant, path, value)
        yield variant


_ATOMS = (str, int, float, bool, type(None))


def _is_plain_tree(node: Any, seen: set[int] | None = None) -> bool:
    """Dicts and lists of strings, numbers and None, nothing held twice: a tree.

    Such a spec is copied by ``_plain_copy`` exactly as ``deepcopy`` would copy
    it, several times faster: a grid of a million points copies it a million times.
    """
    if type(node) in _ATOMS:
        return True
    if type(node) not in (dict, list):
        return False
    seen = set() if seen is None else seen
    if id(node) in seen:
        return False  # shared: deepcopy would keep it shared
    seen.add(id(node))
    values = node.values() if isinstance(node, dict) else node
    if isinstance(node, dict) and any(type(k) not in _ATOMS for k in node):
        return False
    return all(_is_plain_tree(v, seen) for v in values)


def _plain_copy(node: Any) -> Any:
    if type(node) is dict:
        return {k: _plain_copy(v) for k, v in node.items()}
    if type(node) is list:
        return [_plain_copy(v) for v in node]
    return node


def _resolve_domains(
    spec: Spec, domain_vars: list[tuple[Path, Domain]], rng: random.Random
) -> dict[Path, Any]:
    """Sample every domain into ``spec``, retrying functions whose inputs are pending."""
    resolved: dict[Path, Any] = {}
    pending: RecursiveDependencyError | None = None
    for _ in range(_MAX_RESOLUTION_PASSES):
        pending = None
        for path, domain in domain_vars:
            if path in resolved:
                continue
            try:
                value = domain.sample(rng, _UnresolvedAccessGuard(spec))
            except RecursiveDependencyError as exc:
                pending = exc
                continue
            except Exception as exc:
                raise ValueError(f"Failed to evaluate expression: {path}: {domain}") from exc
            _assign(spec, path, value)
            resolved[path] = value
        if pending is None:
            return resolved
    assert pending is not None
    raise pending


def _variants(spec: Spec, rng: random.Random) -> Iterator[tuple[dict[Path, Any], Spec]]:
    """One grid repetition: (resolved variables by path, resolved spec) pairs."""
    spec = copy.deepcopy(spec)
    unresolved = _unresolved(spec)
    if not unresolved:
        yield {}, spec
        return
    grid_vars = sorted(
        ((p, d) for p, d in unresolved.items() if d.is_grid()), key=lambda v: _path_key(v[0])
    )
    domain_vars = [(p, d) for p, d in unresolved.items() if not d.is_grid()]
    # Values that cannot hold a grid or a domain need no second look: most grids.
    flat = not domain_vars and all(
        isinstance(d, Categorical) and all(type(v) in _ATOMS for v in d.categories)
        for _, d in grid_vars
    )
    for grid_spec in _grid_specs(spec, grid_vars):
        sampled = _resolve_domains(grid_spec, domain_vars, rng)
        if flat:
            yield {path: _get(grid_spec, path) for path, _ in grid_vars}, grid_spec
            continue
        # Grid values may themselves hold grids or domains: resolve them recursively.
        for inner, final in _variants(grid_spec, rng):
            resolved = dict(sampled)
            resolved.update((path, _get(final, path)) for path, _ in grid_vars)
            resolved.update(inner)
            yield resolved, final


@functools.lru_cache(maxsize=4096)
def _tag_key(path: Path) -> tuple[tuple[tuple[int, Any], ...], str]:
    """A variable's place among the others and its name in the tag, once per path."""
    return _path_key(path), clean_value(path[-1])


def _sort_key(item: tuple[tuple[Any, str], Any]) -> Any:
    return item[0][0]


def format_vars(resolved_vars: Mapping[Path, Any]) -> str:
    """Ray's experiment tag: ``last_key=value`` for each resolved variable, by path."""
    keyed = sorted(
        ((_tag_key(path), value) for path, value in resolved_vars.items()), key=_sort_key
    )
    return ",".join(f"{name}={clean_value(value)}" for (_, name), value in keyed)


def grid_plan(param_space: Mapping[str, Any], num_samples: int = 1) -> p.GridPlan | None:
    """The space as a ``GridPlan`` if it is a plain grid, else None.

    Plain: every unresolved value is a ``grid_search`` of strings, numbers,
    booleans or None (no random domain, no function, no grid inside a grid), so
    the trials ``generate_variants`` makes follow from the point's index alone.
    The grids' values are packed once, not copied into a config per point.
    """
    spec: Spec = {"config": dict(param_space)}
    unresolved = _unresolved(spec)
    grid_vars = sorted(unresolved.items(), key=lambda v: _path_key(v[0]))
    columns = []
    for _, domain in grid_vars:
        if not isinstance(domain, Categorical) or not domain.is_grid():
            return None
        if not all(type(v) in _ATOMS for v in domain.categories):
            return None
        columns.append(domain.categories)
    skeleton = _without(spec, [path for path, _ in grid_vars])
    try:
        axes = [
            p.GridAxis(path=list(path[1:]), values=pieces(list(column)))
            for (path, _), column in zip(grid_vars, columns, strict=True)
        ]
        packed = p.pack_user(skeleton["config"])
    except Exception:
        return None  # whatever it is, the enumeration says it the usual way
    return p.GridPlan(skeleton=packed, axes=axes, repeats=num_samples)


def _without(node: Any, paths: list[Path]) -> Any:
    """``node`` with None at each path: copied along the paths, shared elsewhere."""
    if not paths:
        return node
    here = {path[0] for path in paths}
    if isinstance(node, dict):
        out: Any = dict(node)
    else:
        out = list(node)
    for key in here:
        below = [path[1:] for path in paths if path[0] == key and len(path) > 1]
        out[key] = _without(node[key], below) if below else None
    return tuple(out) if isinstance(node, tuple) else out


def count_variants(param_space: Mapping[str, Any], num_samples: int = 1) -> int:
    """Number of configs ``generate_variants`` yields (top-level grids, as Ray counts)."""
    total = num_samples
    for domain in _unresolved(dict(param_space)).values():
        if domain.is_grid() and isinstance(domain, Categorical):
            total *= len(domain.categories)
    return total


def generate_variants(
    param_space: Mapping[str, Any], num_samples: int = 1, seed: int | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(tag, config)`` for every trial, ``num_samples`` times the whole grid.

    ``seed`` seeds one ``random.Random`` for all draws, so the same seed yields the same
    configs; the Tuner prefixes the trial index to the tag (``"0_lr=0.0100"``).
    """
    rng = random.Random(seed)
    for _ in range(num_samples):
        for resolved_vars, spec in _variants({"config": dict(param_space)}, rng):
            yield format_vars(resolved_vars), spec["config"]

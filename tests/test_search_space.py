"""Property tests: search spaces expand and sample exactly as Ray Tune's would.

Ported scripts rely on Ray's trial counts, bounds, quantization and tags, so each test
pins one of those behaviours (see ``ray/tune/search/sample.py`` / ``variant_generator.py``).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tuned_client.tune.search import (
    Domain,
    choice,
    count_variants,
    format_vars,
    generate_variants,
    grid_search,
    lograndint,
    loguniform,
    make_spec,
    qlograndint,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    uniform,
)

QUANTA = st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0, 5.0])
DRAWS = 200


def _draws(domain: Domain, seed: int) -> list[Any]:
    rng = random.Random(seed)
    return [domain.sample(rng) for _ in range(DRAWS)]


def _on_quantum(value: float, q: float) -> bool:
    return math.isclose(value / q, round(value / q), abs_tol=1e-9)


# --- grid x num_samples ------------------------------------------------------------


@st.composite
def spaces(draw: st.DrawFn, depth: int = 0) -> tuple[dict[str, Any], int]:
    """A nested param space and the number of grid points it spans."""
    space: dict[str, Any] = {}
    points = 1
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["grid", "dictgrid", "plain", "random", "nested", "list"]))
        key = f"k{depth}_{i}"
        if kind in ("grid", "dictgrid"):
            values = draw(st.lists(st.integers(), min_size=1, max_size=3))
            space[key] = grid_search(values) if kind == "grid" else {"grid_search": values}
            points *= len(values)
        elif kind == "plain":
            space[key] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
        elif kind == "random":
            space[key] = uniform(0, 1)
        elif kind == "nested" and depth < 2:
            space[key], inner = draw(spaces(depth + 1))
            points *= inner
        else:
            space[key] = [1, grid_search(["a", "b"]), randint(0, 5)]
            points *= 2
    return space, points


@settings(deadline=None, max_examples=60)
@given(spaces(), st.integers(1, 3), st.integers(0, 2**32))
def test_count_is_grid_product_times_num_samples(
    space_points: tuple[dict[str, Any], int], num_samples: int, seed: int
) -> None:
    space, points = space_points
    variants = list(generate_variants(space, num_samples=num_samples, seed=seed))
    assert len(variants) == points * num_samples == count_variants(space, num_samples)


def test_grid_order_first_path_fastest_num_samples_outer() -> None:
    space = {"b": grid_search(["x", "y"]), "a": grid_search([1, 2]), "r": uniform(0, 1)}
    configs = [c for _, c in generate_variants(space, num_samples=2, seed=3)]
    pairs = [(c["a"], c["b"]) for c in configs]
    assert pairs == [(1, "x"), (2, "x"), (1, "y"), (2, "y")] * 2
    # Random domains are redrawn at every grid point (Ray's constant_grid_search=False).
    assert len({c["r"] for c in configs}) == len(configs)


def test_grid_inside_grid_values_is_expanded() -> None:
    space = {"opt": grid_search([{"name": "sgd", "lr": grid_search([0.1, 0.01])}, "adam"])}
    configs = [c["opt"] for _, c in generate_variants(space)]
    assert configs == [{"name": "sgd", "lr": 0.1}, {"name": "sgd", "lr": 0.01}, "adam"]


# --- bounds and quantization ---------------------------------------------------------


@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6), st.integers(0, 2**32))
def test_uniform_in_bounds(lower: float, width: float, seed: int) -> None:
    for v in _draws(uniform(lower, lower + width), seed):
        assert isinstance(v, float) and lower <= v <= lower + width


@given(st.integers(-50, 50), st.integers(1, 50), QUANTA, st.integers(0, 2**32))
def test_quniform_in_bounds_on_quantum(a: int, n: int, q: float, seed: int) -> None:
    lower, upper = a * q, (a + n) * q
    for v in _draws(quniform(lower, upper, q), seed):
        assert lower - 1e-9 <= v <= upper + 1e-9 and _on_quantum(v, q)


@given(st.floats(1e-8, 1e3), st.floats(1.001, 1e6), st.integers(0, 2**32))
def test_loguniform_in_bounds(lower: float, ratio: float, seed: int) -> None:
    for v in _draws(loguniform(lower, lower * ratio), seed):
        assert lower <= v <= lower * ratio


@given(st.integers(1, 50), st.integers(1, 500), QUANTA, st.integers(0, 2**32))
def test_qloguniform_in_bounds_on_quantum(a: int, n: int, q: float, seed: int) -> None:
    lower, upper = a * q, (a + n) * q
    for v in _draws(qloguniform(lower, upper, q), seed):
        assert lower - 1e-9 <= v <= upper + 1e-9 and _on_quantum(v, q)


@given(st.floats(-100, 100), st.floats(0.01, 10), QUANTA, st.integers(0, 2**32))
def test_randn_and_qrandn(mean: float, sd: float, q: float, seed: int) -> None:
    assert all(isinstance(v, float) and math.isfinite(v) for v in _draws(randn(mean, sd), seed))
    assert all(_on_quantum(v, q) for v in _draws(qrandn(mean, sd, q), seed))


@given(st.integers(-1000, 1000), st.integers(1, 1000), st.integers(0, 2**32))
def test_randint_upper_exclusive(lower: int, width: int, seed: int) -> None:
    for v in _draws(randint(lower, lower + width), seed):
        assert isinstance(v, int) and lower <= v < lower + width


@given(st.integers(-1000, 1000), st.integers(1, 1000), st.integers(2, 20), st.integers(0, 2**32))
def test_qrandint_in_bounds_on_quantum(lower: int, width: int, q: int, seed: int) -> None:
    upper = lower + width
    # Needs two multiples of q in range: otherwise Ray's integer draw range is empty.
    assume(math.floor(upper / q) > math.ceil(lower / q))
    for v in _draws(qrandint(lower, upper, q), seed):
        assert isinstance(v, int) and lower <= v <= upper and v % q == 0


@given(st.integers(1, 1000), st.integers(1, 10**5), st.integers(0, 2**32))
def test_lograndint_upper_exclusive(lower: int, width: int, seed: int) -> None:
    for v in _draws(lograndint(lower, lower + width), seed):
        assert isinstance(v, int) and lower <= v < lower + width


@given(st.integers(1, 1000), st.integers(1, 10**5), st.integers(2, 20), st.integers(0, 2**32))
def test_qlograndint_in_bounds_on_quantum(lower: int, width: int, q: int, seed: int) -> None:
    upper = lower + width
    assume(math.floor(upper / q) >= math.ceil(lower / q))  # some multiple of q in range
    for v in _draws(qlograndint(lower, upper, q), seed):
        assert isinstance(v, int) and lower <= v <= upper and v % q == 0


@given(st.lists(st.one_of(st.integers(), st.text(), st.none()), min_size=1), st.integers())
def test_choice_picks_categories(categories: list[Any], seed: int) -> None:
    assert all(v in categories for v in _draws(choice(categories), seed))


def test_randint_exclusive_vs_qrandint_inclusive_like_ray() -> None:
    assert set(_draws(randint(0, 10), 0)) == set(range(10))
    assert set(_draws(qrandint(0, 10, 5), 0)) == {0, 5, 10}
    # With q == 1 every integer is on the grid: the draw is randint's, upper exclusive.
    assert set(_draws(qrandint(0, 10), 0)) == set(range(10))
    # Floats are rounded at q == 1 too (current Ray; older releases skipped it).
    assert set(_draws(quniform(-2, 2, 1), 0)) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    # Quantization rounds half to even like np.round: 1 / 2 -> 0, so 2 is never drawn.
    assert set(_draws(qrandint(0, 2, 2), 0)) == {0}


def test_domain_attributes_and_errors() -> None:
    d = qrandint(1, 10, 3)
    assert (d.lower, d.upper, d.q) == (1, 10, 3)
    assert uniform(0, 1).q is None and choice([1, 2]).categories == [1, 2]
    with pytest.raises(ValueError):
        quniform(0.05, 1, 0.1)  # bound not divisible by q
    with pytest.raises(ValueError):
        loguniform(0, 1)
    with pytest.warns(DeprecationWarning):
        loguniform(1e-3, 1, base=10)
    assert isinstance(uniform(0, 1).sample(size=3), list)


# --- reproducibility -----------------------------------------------------------------

SEEDED = {
    "lr": loguniform(1e-5, 1e-1),
    "m": quniform(0, 1, 0.01),
    "x": uniform(-1, 1),
    "g": grid_search([1, 2]),
    "n": {"k": randn(), "c": choice(["a", "b", "c"])},
}


@settings(deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 2**32))
def test_seed_reproducible(seed: int, other: int) -> None:
    first = list(generate_variants(SEEDED, num_samples=3, seed=seed))
    assert first == list(generate_variants(SEEDED, num_samples=3, seed=seed))
    if other != seed:
        assert first != list(generate_variants(SEEDED, num_samples=3, seed=other))


# --- sample_from ---------------------------------------------------------------------


@settings(deadline=None)
@given(st.integers(0, 2**32))
def test_sample_from_sees_resolved_values(seed: int) -> None:
    space = {
        # Defined before its inputs: Ray retries it once they are resolved.
        "late": sample_from(lambda spec: spec.config.nested.w + spec.config["a"]),
        "a": randint(0, 100),
        "g": grid_search(["p", "q"]),
        "nested": {"w": uniform(0, 1), "twice": sample_from(lambda spec: spec.config.a * 2)},
        "tag": sample_from(lambda spec: f"{spec.config.g}-{spec['config']['a']}"),
        "new_style": sample_from(lambda config: config["a"] + 1),
        "no_arg": sample_from(lambda: 7),
    }
    for _, c in generate_variants(space, num_samples=2, seed=seed):
        assert c["late"] == c["nested"]["w"] + c["a"]
        assert c["nested"]["twice"] == 2 * c["a"]
        assert c["tag"] == f"{c['g']}-{c['a']}"
        assert (c["new_style"], c["no_arg"]) == (c["a"] + 1, 7)


def test_make_spec_for_resource_lambdas() -> None:
    def resources(spec: Any) -> dict[str, int]:
        return {"gpu": 1} if spec.config.use_gpu else {"gpu": 0}

    assert resources(make_spec({"use_gpu": True})) == {"gpu": 1}
    assert resources(make_spec({"use_gpu": False})) == {"gpu": 0}
    spec = make_spec({"model": {"items": 3}})
    assert spec.config.model["items"] == spec["config"].model.items == 3


# --- tags ----------------------------------------------------------------------------


def test_tags_like_ray() -> None:
    tags = [t for t, _ in generate_variants({"model_id": grid_search(["model_0", "model_1"])})]
    assert tags == ["model_id=model_0", "model_id=model_1"]
    space = {
        "z": grid_search([0.1]),
        "act": grid_search(["relu/x y!"]),
        "fixed": 5,
        "net": {"layers": [grid_search([32]), 7]},
        "n": choice([5]),
    }
    ((tag, config),) = generate_variants(space)
    # Sorted by path, last key only, floats to 4 places, unsafe characters -> "_".
    assert tag == "act=relu_x_y,n=5,0=32,z=0.1000"
    assert config == {"z": 0.1, "act": "relu/x y!", "fixed": 5, "net": {"layers": [32, 7]}, "n": 5}
    assert list(generate_variants({"a": 1, "b": [2]})) == [("", {"a": 1, "b": [2]})]


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.floats(), st.integers(), st.text())))
def test_format_vars_is_path_safe(values: dict[str, Any]) -> None:
    tag = format_vars({("config", k): v for k, v in values.items()})
    for part in filter(None, tag.split(",")):
        assert re.fullmatch(r"[A-Za-z0-9_-]*=[A-Za-z0-9_.-]*", part)


# --- nested structure ----------------------------------------------------------------


@given(st.integers(0, 2**32))
def test_nested_dicts_lists_tuples_kept(seed: int) -> None:
    space: dict[str, Any] = {
        "opt": {"name": "adam", "betas": (0.9, uniform(0.9, 0.999)), "eps": [1e-8]},
        "layers": [{"units": randint(1, 4)}, {"units": grid_search([8, 16])}],
    }
    for _, c in generate_variants(space, seed=seed):
        assert c["opt"]["name"] == "adam" and c["opt"]["eps"] == [1e-8]
        assert isinstance(c["opt"]["betas"], tuple) and 0.9 <= c["opt"]["betas"][1] <= 0.999
        assert 1 <= c["layers"][0]["units"] < 4 and c["layers"][1]["units"] in (8, 16)
    assert isinstance(space["opt"]["betas"][1], Domain)  # the input is not mutated


def test_each_variant_is_a_copy_of_its_own_that_keeps_what_the_space_shares() -> None:
    shared = [1, 2]
    space = {"a": shared, "b": shared, "nested": {"x": [3]}, "g": grid_search([1, 2])}
    first, second = (config for _, config in generate_variants(space))
    assert first["a"] is first["b"] and first["a"] == [1, 2]  # deepcopy keeps what is shared
    assert first["a"] is not shared and first["a"] is not second["a"]
    plain = {"nested": {"x": [3]}, "g": grid_search([1, 2])}
    one, two = (config for _, config in generate_variants(plain))
    one["nested"]["x"].append(4)  # a variant's values are its own
    assert two["nested"]["x"] == [3] and plain["nested"] == {"x": [3]}

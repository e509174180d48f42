"""A plain grid sent as a ``GridPlan`` makes exactly the trials Ray's enumeration makes.

The daemon makes a plain grid's trials from its plan as its queue needs them
(``tuned_client.gridplan``); the client enumerates every other space. Both
must give each trial the same tag and config, whichever way it went: these
hold the plan to ``generate_variants`` (itself held to Ray's order elsewhere),
for chosen spaces and for spaces hypothesis makes up.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.gridplan import Grid, pieces
from tuned_client.tune.search.variant_generator import generate_variants, grid_plan


class Thing:
    """A user object in the config: it travels pickled, never unpickled by the daemon."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Thing) and other.n == self.n

    def __hash__(self) -> int:
        return self.n


def enumerated(space: dict[Any, Any], num_samples: int = 1) -> list[tuple[str, Any]]:
    """Each trial's tag and config as the enumeration makes them (fit()'s other path),
    the config as its trial receives it (msgpack: a tuple arrives as a list either way)."""
    return [
        (f"{i}_{suffix}" if suffix else str(i), p.unpack_user(p.pack_user(config)))
        for i, (suffix, config) in enumerate(generate_variants(space, num_samples))
    ]


def planned(space: dict[Any, Any], num_samples: int = 1) -> list[tuple[str, Any]]:
    plan = grid_plan(space, num_samples)
    assert plan is not None, space
    grid = Grid(msgspec.msgpack.decode(msgspec.msgpack.encode(plan), type=p.GridPlan))
    out = []
    for index in range(grid.total):
        tag, config = grid.trial(index)
        out.append((tag, p.unpack_user(config)))
    return out


SPACES: list[tuple[dict[Any, Any], int]] = [
    ({"lr": tune.grid_search([0.1, 0.01, 0.001]), "layers": tune.grid_search([1, 2])}, 1),
    ({"a": {"grid_search": [True, None, "x y/z"]}, "b": {"c": tune.grid_search([1, 2])}}, 3),
    ({"nested": [1, {"deep": tune.grid_search([0.5, 1.5])}], 3: "an int key"}, 1),
    ({"pair": (1, tune.grid_search(["p", "q"])), "thing": Thing(7)}, 2),
    ({"fixed": 1}, 4),  # no grid: num_samples copies of one config
    ({"empty": tune.grid_search([])}, 1),  # an empty grid: no trial at all
]


@pytest.mark.parametrize(("space", "num_samples"), SPACES)
def test_a_plan_makes_the_trials_the_enumeration_makes(
    space: dict[Any, Any], num_samples: int
) -> None:
    assert planned(space, num_samples) == enumerated(space, num_samples)


def test_plain_configs_are_the_same_bytes() -> None:
    space = {"x": tune.grid_search([1, 2.5, "s"]), "y": {"z": tune.grid_search([None, False])}}
    grid = Grid(grid_plan(space, 2))  # type: ignore[arg-type]
    for index, (_, config) in enumerate(enumerated(space, 2)):
        assert bytes(grid.trial(index)[1]) == bytes(p.pack_user(config))


@pytest.mark.parametrize(
    "space",
    [
        {"lr": tune.uniform(0, 1), "b": tune.grid_search([1, 2])},  # a random domain
        {"c": tune.choice([1, 2])},
        {"f": tune.sample_from(lambda spec: 1)},
        {"g": tune.grid_search([[1], [2]])},  # grid values that are not plain
        {"g": tune.grid_search([{"grid_search": [1, 2]}, 3])},  # a grid inside a grid
    ],
)
def test_a_space_that_is_not_a_plain_grid_is_enumerated(space: dict[str, Any]) -> None:
    assert grid_plan(space, 1) is None


def test_a_plan_goes_on_from_a_point_after_the_trials_listed_before_it() -> None:
    """Tuner.restore of a lost experiment: the unfinished trials are listed, the rest planned."""
    space = {"i": tune.grid_search(list(range(10)))}
    plan = grid_plan(space, 1)
    assert plan is not None
    plan.start, plan.first_trial = 6, 2  # points 0-5 made before; two of them listed again
    grid = Grid(plan)
    assert grid.total == 2 + 4
    assert [grid.trial(i)[0] for i in range(2, 6)] == [f"{k}_i={k}" for k in range(6, 10)]
    with pytest.raises(IndexError):
        grid.trial(6)


def _axis(path: list[Any], *pieces: bytes) -> p.GridAxis:
    return p.GridAxis(path=path, values=[msgspec.Raw(piece) for piece in pieces])


@pytest.mark.parametrize(
    "plan",
    [
        p.GridPlan(skeleton=msgspec.Raw(b"\x80"), axes=[], repeats=-1),
        p.GridPlan(skeleton=msgspec.Raw(b"\x80"), axes=[], chunk=0),
        p.GridPlan(skeleton=msgspec.Raw(b"\x80"), axes=[_axis([], b"\x91\x01")]),
        p.GridPlan(skeleton=msgspec.Raw(b"\x80"), axes=[_axis(["a"], b"\x01")]),  # no array
        p.GridPlan(skeleton=msgspec.Raw(b"\x80"), axes=[_axis(["a"], b"\x90")]),  # empty piece
        p.GridPlan(  # a piece short of the chunk before the last
            skeleton=msgspec.Raw(b"\x80"),
            axes=[_axis(["a"], b"\x91\x01", b"\x92\x01\x02")],
            chunk=2,
        ),
    ],
)
def test_a_malformed_plan_is_refused(plan: p.GridPlan) -> None:
    with pytest.raises(ValueError):
        Grid(plan)


def test_values_come_a_piece_at_a_time_in_the_order_sent() -> None:
    space = {"a": tune.grid_search(list(range(10))), "b": tune.grid_search(["x", "y", "z"])}
    plan = grid_plan(space, 1)
    assert plan is not None
    plan.axes = [  # each axis' one piece cut again into pieces of 4
        p.GridAxis(path=axis.path, values=pieces(p.unpack_user(axis.values[0]), 4))
        for axis in plan.axes
    ]
    plan.chunk = 4  # pieces of 4, 4 and 2 values for "a", 3 for "b"
    assert [len(a.values) for a in plan.axes] == [3, 1]
    grid = Grid(plan)
    assert [grid.trial(i)[0] for i in range(grid.total)] == [t for t, _ in enumerated(space)]


def test_a_million_point_grid_is_a_plan_of_its_values() -> None:
    """What fit() sends for a million points: the values once, not a million configs."""
    plan = grid_plan({"i": tune.grid_search(list(range(1_000_000))), "fixed": "x"}, 1)
    assert plan is not None
    assert len(msgspec.msgpack.encode(plan)) < 6_000_000
    grid = Grid(plan)
    assert grid.total == 1_000_000
    assert grid.trial(999_999)[0] == "999999_i=999999"


atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=6),
)
keys = st.text(min_size=1, max_size=4)


@st.composite
def plain_grids(draw: st.DrawFn) -> dict[str, Any]:
    """A nested dict with a few plain grid_searches among fixed values."""

    def node(depth: int) -> Any:
        kind = draw(st.sampled_from(["atom", "grid", "dict", "list"] if depth < 3 else ["atom"]))
        if kind == "atom":
            return draw(atoms)
        if kind == "grid":
            return tune.grid_search(draw(st.lists(atoms, min_size=1, max_size=3)))
        if kind == "list":
            return [node(depth + 1) for _ in range(draw(st.integers(0, 3)))]
        return {k: node(depth + 1) for k in draw(st.lists(keys, max_size=3, unique=True))}

    return {k: node(1) for k in draw(st.lists(keys, min_size=1, max_size=4, unique=True))}


@settings(max_examples=150, deadline=None)
@given(plain_grids(), st.integers(1, 3))
def test_any_plain_grid_plans_as_it_enumerates(space: dict[str, Any], num_samples: int) -> None:
    assert planned(space, num_samples) == enumerated(space, num_samples)

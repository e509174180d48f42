"""Tests of the fixed-point ledger: examples of the packing users expect, and a
stateful property test proving it never over-commits and always returns to full."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle as Live
from hypothesis.stateful import (
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from tuned.core.ledger import (
    SCALE,
    Allocation,
    Bundle,
    Capacity,
    Hold,
    ImpossibleRequest,
    Ledger,
    Request,
    ResourceError,
    parse_request,
    to_units,
)

GiB = 2**30


def cap(cpu: float = 8, gpus: int = 4, memory: int = 64 * GiB, **custom: float) -> Capacity:
    return Capacity(
        cpu=to_units(cpu, resource="cpu"),
        memory=memory,
        gpu_ids=tuple(str(i) for i in range(gpus)),
        custom={k: to_units(v, resource=k) for k, v in custom.items()},
    )


def req(*bundles: dict[str, float]) -> Request:
    return parse_request(list(bundles))


def devices(alloc: Allocation | None) -> list[int]:
    assert alloc is not None
    return [index for index, _ in alloc.gpus]


# --- parsing and units -------------------------------------------------------------


def test_to_units_rounds_once_so_sums_do_not_drift() -> None:
    assert to_units(0.1, resource="cpu") == 1_000
    assert to_units(0.1 + 0.2, resource="cpu") == 3_000
    assert to_units(0.29, resource="cpu") == 2_900  # 0.29 * 10000 == 2899.9999999999995
    assert to_units(3, resource="cpu") == 3 * SCALE
    ledger = Ledger(cap(cpu=1))
    tenth = req({"cpu": 0.1})
    allocs = [ledger.acquire(tenth) for _ in range(10)]
    assert all(a is not None for a in allocs)
    assert ledger.free_cpu() == 0
    assert ledger.acquire(tenth) is None
    assert ledger.shortfall(tenth) == {"cpu"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.5, -1, True, "1", None])
def test_to_units_rejects_non_finite_negative_and_non_numbers(bad: object) -> None:
    with pytest.raises(ResourceError, match="cpu"):
        to_units(bad, resource="cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ({"gpu": 1.5}, "gpu must be a whole number when above 1, got 1.5"),
        ({"GPU": 2.25}, "gpu must be a whole number when above 1"),
        ({"cpu": math.nan}, "cpu must be a finite number >= 0, got nan"),
        ({"cpu": -1}, "cpu must be a finite number >= 0, got -1"),
        ({"memory": math.inf}, "memory must be a finite number >= 0, got inf"),
        ({"foo": -0.1}, "foo must be a finite number >= 0"),
        ({"cpu": "two"}, "cpu must be a number, got 'two'"),
        ({"gpu": False}, "gpu must be a number, got False"),
        ({"cpu": 0.00001}, "below the ledger's precision"),
        ({"cpu": 1, "CPU": 1}, "names 'cpu' twice"),
    ],
)
def test_parse_request_rejects_bad_amounts_with_clear_messages(
    bundle: dict[str, float], message: str
) -> None:
    with pytest.raises(ResourceError, match=message.replace("(", r"\(")):
        req(bundle)


def test_parse_request_rejects_empty_bundle_list_and_non_lists() -> None:
    with pytest.raises(ResourceError, match="at least one bundle"):
        parse_request([])
    with pytest.raises(ResourceError, match="list of bundles"):
        parse_request({"cpu": 1})  # type: ignore[arg-type]


def test_parse_request_accepts_ray_keys_and_omits_zero() -> None:
    request = req({"CPU": 2, "GPU": 0.5, "memory": 1.6, "foo": 0, "Foo": 1}, {"gpu": 2, "cpu": 0})
    assert request.bundles == (
        Bundle(cpu=2 * SCALE, gpu=SCALE // 2, memory=2, custom={"Foo": SCALE}),
        Bundle(gpu=2 * SCALE),
    )
    assert (request.total_cpu, request.total_memory) == (2 * SCALE, 2)
    assert request.total_custom == {"Foo": SCALE}


# --- GPU placement -----------------------------------------------------------------


def test_quarter_gpus_pack_best_fit_then_whole_gpus_need_empty_devices() -> None:
    ledger = Ledger(cap(cpu=64, gpus=4))
    quarter, whole = req({"gpu": 0.25}), req({"gpu": 1})
    quarters = [ledger.acquire(quarter) for _ in range(16)]
    # Best fit fills a device before opening the next: four per device, in order.
    assert [devices(a) for a in quarters] == [[i // 4] for i in range(16)]
    assert [ledger.gpu_free(i) for i in range(4)] == [0, 0, 0, 0]
    assert [ledger.acquire(whole) for _ in range(4)] == [None] * 4
    assert ledger.shortfall(whole) == {"gpu"}
    # Free device 2 entirely and one quarter of device 1: the whole GPU takes device 2,
    # the next quarter goes back onto device 1 rather than device 2.
    for a in quarters[8:12] + quarters[4:5]:
        assert a is not None
        ledger.release(a)
    assert devices(ledger.acquire(whole)) == [2]
    assert devices(ledger.acquire(quarter)) == [1]
    assert ledger.acquire(whole) is None


def test_whole_gpus_first_then_quarters_do_not_fit() -> None:
    ledger = Ledger(cap(cpu=64, gpus=4))
    wholes = [ledger.acquire(req({"gpu": 1})) for _ in range(4)]
    assert [devices(a) for a in wholes] == [[0], [1], [2], [3]]
    assert ledger.acquire(req({"gpu": 0.25})) is None


def test_best_fit_prefers_the_fullest_device_not_the_lowest() -> None:
    ledger = Ledger(cap(gpus=3))
    half_a, half_b = ledger.acquire(req({"gpu": 0.5})), ledger.acquire(req({"gpu": 0.5}))
    assert devices(half_a) == devices(half_b) == [0]  # second half fills device 0 exactly
    assert devices(ledger.acquire(req({"gpu": 0.5}))) == [1]
    assert devices(ledger.acquire(req({"gpu": 0.25}))) == [1]  # leaves 0.25, not 0.75
    assert half_a is not None
    ledger.release(half_a)
    # Free room: device 0 has 0.5, device 1 has 0.25, device 2 has 1. First fit would
    # put a quarter on device 0; best fit puts it where it leaves no room: device 1.
    assert devices(ledger.acquire(req({"gpu": 0.25}))) == [1]
    assert devices(ledger.acquire(req({"gpu": 0.5}))) == [0]
    assert ledger.snapshot().gpu_used == (SCALE, SCALE, 0)


def test_fractional_gpu_gets_exactly_one_visible_device() -> None:
    capacity = cap(gpus=4)
    ledger = Ledger(capacity)
    a = ledger.acquire(req({"gpu": 0.5}))
    assert a is not None
    assert a.cuda_visible_devices(capacity) == "0"
    assert a.gpus == ((0, SCALE // 2),)


def test_whole_two_gpus_take_two_entirely_free_devices() -> None:
    capacity = cap(gpus=4)
    ledger = Ledger(capacity)
    half = ledger.acquire(req({"gpu": 0.5}))
    two = ledger.acquire(req({"gpu": 2}))
    assert two is not None and half is not None
    assert two.cuda_visible_devices(capacity) == "1,2"
    assert two.gpus == ((1, SCALE), (2, SCALE))
    assert ledger.acquire(req({"gpu": 2})) is None  # only device 3 is entirely free
    ledger.release(half)
    assert devices(ledger.acquire(req({"gpu": 2}))) == [0, 3]


def test_cuda_visible_devices_uses_physical_ids() -> None:
    capacity = Capacity(cpu=8 * SCALE, memory=GiB, gpu_ids=("2", "3"), custom={})
    ledger = Ledger(capacity)
    first, second = ledger.acquire(req({"gpu": 1})), ledger.acquire(req({"gpu": 0.5}))
    assert first is not None and second is not None
    assert first.cuda_visible_devices(capacity) == "2"
    assert second.cuda_visible_devices(capacity) == "3"
    cpu_only = ledger.acquire(req({"cpu": 1}))
    assert cpu_only is not None and cpu_only.cuda_visible_devices(capacity) == ""


def test_multi_bundle_request_is_all_or_nothing() -> None:
    capacity = cap(cpu=4, gpus=2, foo=1)
    ledger = Ledger(capacity)
    ledger.acquire(req({"gpu": 0.75}))
    before = ledger.snapshot()
    # The first bundle fits (on device 1); the second does not fit anywhere.
    too_much = req({"cpu": 1, "gpu": 0.5, "foo": 1}, {"cpu": 1, "gpu": 0.75})
    assert ledger.acquire(too_much) is None
    assert ledger.shortfall(too_much) == {"gpu"}
    assert ledger.snapshot() == before
    fits = req({"cpu": 1, "gpu": 0.5, "foo": 1}, {"cpu": 1, "gpu": 0.25})
    a = ledger.acquire(fits)
    assert a is not None
    assert a.bundle_gpus == (((1, SCALE // 2),), ((0, SCALE // 4),))
    assert a.gpus == ((0, SCALE // 4), (1, SCALE // 2))
    assert a.cuda_visible_devices(capacity) == "0,1"
    assert (ledger.free_cpu(), ledger.free_custom("foo")) == (2 * SCALE, 0)


def test_release_is_exact_inverse_and_twice_is_loud() -> None:
    ledger = Ledger(cap(foo=2))
    empty = ledger.snapshot()
    a = ledger.acquire(req({"cpu": 1.5, "memory": GiB, "gpu": 0.3, "foo": 0.5}, {"gpu": 1}))
    assert a is not None and not ledger.is_full
    ledger.release(a)
    assert ledger.snapshot() == empty and ledger.is_full
    with pytest.raises(KeyError):
        ledger.release(a)
    with pytest.raises(KeyError):
        Ledger(cap()).release(a)


def test_a_cluster_that_shrinks_admits_nothing_new_until_its_trials_fit_again() -> None:
    """A Ray cluster losing a node: live allocations stay, new ones wait for room."""
    ledger = Ledger(cap(cpu=8, gpus=4, foo=2))
    a = ledger.acquire(req({"cpu": 6, "gpu": 1}))
    b = ledger.acquire(req({"gpu": 1}))
    assert a is not None and b is not None and devices(b) == [1]
    ledger.resize(cap(cpu=4, gpus=1))  # the node with devices 1-3 and 'foo' left
    assert ledger.acquire(req({"cpu": 0.5})) is None  # 6 of 4 cpus still held
    assert ledger.acquire(req({"gpu": 0.5})) is None
    assert "foo" in ledger.shortfall(req({"foo": 1}))
    ledger.release(a)
    ledger.release(b)
    assert ledger.snapshot().gpu_used == (0,) and ledger.is_full
    c = ledger.acquire(req({"cpu": 4, "gpu": 1}))
    assert c is not None and devices(c) == [0]
    ledger.resize(cap(cpu=8, gpus=2, foo=2))  # it came back
    d = ledger.acquire(req({"cpu": 4, "gpu": 1, "foo": 2}))
    assert d is not None and devices(d) == [1]
    ledger.release(c)
    ledger.release(d)
    assert ledger.snapshot().gpu_used == (0, 0)


# --- impossible requests -----------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "bundles", "resource", "message"),
    [
        (cap(gpus=1), [{"gpu": 2}], "gpu", "trial asks for 2 gpu but the daemon has 1 gpu"),
        (cap(cpu=2), [{"cpu": 4}], "cpu", "trial asks for 4 cpu but the daemon has 2 cpu"),
        (cap(gpus=0), [{"gpu": 0.5}], "gpu", "trial asks for 0.5 gpu but the daemon has 0 gpu"),
        (
            cap(foo=1),
            [{"tpu": 1}],
            "tpu",
            "trial asks for 1 'tpu' but the daemon has no resource 'tpu' "
            "(it has: cpu, gpu, memory, foo)",
        ),
        (cap(foo=1), [{"foo": 0.5}, {"foo": 1}], "foo", "asks for 1.5 'foo' but the daemon has 1"),
        (
            cap(memory=16 * GiB),
            [{"memory": 64 * GiB}],
            "memory",
            "trial asks for 64 GiB memory (68719476736 bytes) "
            "but the daemon has 16 GiB memory (17179869184 bytes)",
        ),
        (
            cap(gpus=2),
            [{"gpu": 0.6}, {"gpu": 0.6}, {"gpu": 0.6}],
            "gpu",
            "trial asks for 1.8 gpu but the daemon has 2 gpu (bundle shares 0.6, 0.6, 0.6",
        ),
        (cap(gpus=2), [{"gpu": 1}, {"gpu": 1}, {"gpu": 0.1}], "gpu", "asks for 2.1 gpu"),
    ],
)
def test_impossible_request_names_resource_asked_and_capacity(
    capacity: Capacity, bundles: list[dict[str, float]], resource: str, message: str
) -> None:
    ledger = Ledger(capacity)
    request = parse_request(bundles)
    with pytest.raises(ImpossibleRequest) as info:
        ledger.check(request)
    assert message in str(info.value)
    assert info.value.resource == resource
    assert ledger.acquire(request) is None  # consistent: it really never fits
    copy = pickle.loads(pickle.dumps(info.value))
    assert (str(copy), copy.resource, copy.asked) == (str(info.value), resource, info.value.asked)


def test_impossible_request_attributes_and_possible_requests_pass() -> None:
    ledger = Ledger(cap(cpu=2, gpus=1))
    with pytest.raises(ImpossibleRequest) as info:
        ledger.check(req({"cpu": 4}))
    assert (info.value.asked, info.value.capacity) == (4.0, 2.0)
    ledger.check(req({"cpu": 2, "gpu": 0.5}, {"gpu": 0.5}))
    ledger.check(req({}))


def test_capacity_is_validated() -> None:
    with pytest.raises(ResourceError, match="unique"):
        Capacity(cpu=1, memory=1, gpu_ids=("0", "0"), custom={})
    with pytest.raises(ResourceError):
        Capacity(cpu=-1, memory=1, gpu_ids=(), custom={})
    with pytest.raises(ResourceError):
        Bundle(gpu=SCALE + 1)


# --- stateful property test ---------------------------------------------------------

CUSTOM_NAMES = ("foo", "bar")
gpu_amounts = st.one_of(
    st.sampled_from([0, 0.1, 0.25, 1 / 3, 0.5, 0.75, 1, 2, 3]),
    st.floats(min_value=0.0001, max_value=1.0),
)
# Custom resources are asked for rarely, so most requests can succeed and pack GPUs.
raw_bundles = st.builds(
    lambda base, custom: {**base, **custom},
    st.fixed_dictionaries(
        {},
        optional={
            "cpu": st.one_of(st.sampled_from([0, 0.1, 0.5, 1, 2]), st.floats(0.0001, 4)),
            "GPU": gpu_amounts,
            "memory": st.integers(0, 4 * GiB),
        },
    ),
    st.one_of(
        st.just({}),
        st.dictionaries(st.sampled_from(CUSTOM_NAMES), st.sampled_from([0.1, 0.5, 1, 2])),
    ),
)
requests = st.lists(raw_bundles, min_size=1, max_size=3).map(parse_request)
capacities = st.builds(
    Capacity,
    cpu=st.one_of(st.integers(0, 16).map(lambda n: n * SCALE), st.integers(0, 16 * SCALE)),
    memory=st.one_of(st.just(64 * GiB), st.integers(0, 64 * GiB)),
    gpu_ids=st.integers(0, 4).map(lambda n: tuple(str(i + 2) for i in range(n))),
    custom=st.dictionaries(st.sampled_from(CUSTOM_NAMES), st.integers(0, 4 * SCALE)),
)


OWNERS = ("", "a", "b")
owners = st.sampled_from(OWNERS)
holds = st.builds(
    Hold,
    cpu=st.integers(0, 8 * SCALE),
    memory=st.integers(0, 8 * GiB),
    custom=st.dictionaries(st.sampled_from(CUSTOM_NAMES), st.integers(0, 2 * SCALE)),
    gpus=st.dictionaries(st.integers(0, 3), st.sampled_from([2_500, 5_000, SCALE])),
)


def expected_placement(
    used: tuple[int, ...], request: Request
) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """Reference model of Ray's rules, written independently of the ledger's code."""
    room = [SCALE - u for u in used]
    placed: list[tuple[tuple[int, int], ...]] = []
    for bundle in request.bundles:
        if bundle.gpu == 0:
            placed.append(())
        elif bundle.gpu < SCALE:
            fitting = sorted(
                (i for i in range(len(room)) if room[i] >= bundle.gpu),
                key=lambda i: (room[i] - bundle.gpu, i),
            )
            if not fitting:
                return None
            room[fitting[0]] -= bundle.gpu
            placed.append(((fitting[0], bundle.gpu),))
        else:
            empty = [i for i in range(len(room)) if room[i] == SCALE]
            n = bundle.gpu // SCALE
            if len(empty) < n:
                return None
            for i in empty[:n]:
                room[i] = 0
            placed.append(tuple((i, SCALE) for i in empty[:n]))
    return tuple(placed)


class LedgerMachine(RuleBasedStateMachine):
    """Random acquire/release interleavings against a model: the live allocations."""

    allocations = Live("allocations")

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(cap())
        self.live: dict[int, tuple[Request, Allocation]] = {}
        self.empty = self.ledger.snapshot()

    @initialize(capacity=capacities)
    def start(self, capacity: Capacity) -> None:
        self.ledger = Ledger(capacity)
        self.empty = self.ledger.snapshot()

    @rule(target=allocations, request=requests)
    def acquire(self, request: Request) -> Allocation | None:
        return self._acquire(request)

    @rule(target=allocations, shares=st.lists(gpu_amounts, min_size=1, max_size=2))
    def acquire_gpus_only(self, shares: list[float]) -> Allocation | None:
        """GPU-only requests, so packing is exercised on crowded devices."""
        return self._acquire(parse_request([{"gpu": share} for share in shares]))

    def _acquire(self, request: Request) -> Allocation | None:
        before = self.ledger.snapshot()
        short = self.ledger.shortfall(request)
        alloc = self.ledger.acquire(request)
        assert (alloc is None) == bool(short)
        import hypothesis

        hypothesis.event(
            f"ok={alloc is not None} gpu={request.total_gpu > 0} short={sorted(short)}"
        )
        assert ("gpu" in short) == (expected_placement(before.gpu_used, request) is None)
        try:
            self.ledger.check(request)
            possible = True
        except ImpossibleRequest:
            possible = False
        # check() is exactly "would acquire succeed on the empty machine".
        assert possible == (Ledger(self.ledger.capacity).acquire(request) is not None)
        if alloc is None:
            assert self.ledger.snapshot() == before
            return None
        self._check_allocation(request, alloc, before.gpu_used)
        self.live[alloc.id] = (request, alloc)
        return alloc

    def _check_allocation(self, request: Request, alloc: Allocation, used: tuple[int, ...]) -> None:
        assert (alloc.cpu, alloc.memory) == (request.total_cpu, request.total_memory)
        assert dict(alloc.custom) == request.total_custom
        assert len(alloc.bundle_gpus) == len(request.bundles)
        for bundle, shares in zip(request.bundles, alloc.bundle_gpus, strict=True):
            assert sum(units for _, units in shares) == bundle.gpu
            if 0 < bundle.gpu < SCALE:
                assert len(shares) == 1
            else:
                assert all(units == SCALE for _, units in shares)
        ids = alloc.cuda_visible_devices(self.ledger.capacity)
        assert ids == ",".join(self.ledger.capacity.gpu_ids[i] for i, _ in alloc.gpus)
        assert alloc.bundle_gpus == expected_placement(used, request)

    @rule(target=allocations, request=requests, hold=holds, owner=owners)
    def acquire_beside_a_hold(self, request: Request, hold: Hold, owner: str) -> Allocation | None:
        """What a hold keeps stays free: its amounts, its room on each device."""
        before = self.ledger.snapshot()
        short = self.ledger.shortfall(request, hold)
        alloc = self.ledger.acquire(request, owner, hold)
        assert (alloc is None) == bool(short)
        if alloc is None:
            assert self.ledger.snapshot() == before
            return None
        assert alloc.owner == owner
        if request.total_cpu:
            assert self.ledger.free_cpu() >= hold.cpu
        if request.total_memory:
            assert self.ledger.free_memory() >= hold.memory
        for name, units in request.total_custom.items():
            assert not units or self.ledger.free_custom(name) >= hold.custom.get(name, 0)
        for index, _ in alloc.gpus:
            assert self.ledger.gpu_free(index) >= hold.gpus.get(index, 0)
        self.live[alloc.id] = (request, alloc)
        return alloc

    @rule(request=requests, others=holds)
    def a_hold_is_placed_beside_the_others(self, request: Request, others: Hold) -> None:
        """Whole GPUs get devices of their own, apart from any held; amounts never grow."""
        hold = self.ledger.hold_for(request, others)
        assert hold.cpu <= request.total_cpu and hold.memory <= request.total_memory
        assert all(u <= request.total_custom.get(n, 0) for n, u in hold.custom.items())
        devices = len(self.ledger.capacity.gpu_ids)
        assert all(0 <= i < devices and 0 < u <= SCALE for i, u in hold.gpus.items())
        whole = sum(b.gpu // SCALE for b in request.bundles if b.gpu >= SCALE)
        open_ = [i for i in range(devices) if not others.gpus.get(i)]
        full = [i for i, u in hold.gpus.items() if u == SCALE and not others.gpus.get(i)]
        assert len(full) >= min(whole, len(open_))

    @invariant()
    def each_owner_s_share_is_its_largest_fraction_of_anything(self) -> None:
        cap = self.ledger.capacity
        for owner in OWNERS:
            mine = [a for _, a in self.live.values() if a.owner == owner]
            fractions = [0.0]
            if cap.cpu:
                fractions.append(sum(a.cpu for a in mine) / cap.cpu)
            if cap.memory:
                fractions.append(sum(a.memory for a in mine) / cap.memory)
            if cap.gpu_ids:
                gpu = sum(u for a in mine for _, u in a.gpus)
                fractions.append(gpu / (len(cap.gpu_ids) * SCALE))
            for name, total in cap.custom.items():
                if total:
                    fractions.append(sum(a.custom.get(name, 0) for a in mine) / total)
            assert self.ledger.share(owner) == pytest.approx(max(fractions))

    @rule(extra=st.sampled_from(["cpu", "memory", *CUSTOM_NAMES]))
    def fill_to_the_brim(self, extra: str) -> None:
        """Asking for exactly what is free fits; one unit more of anything does not."""
        ledger = self.ledger
        custom = {name: ledger.free_custom(name) for name in ledger.capacity.custom}
        brim = Bundle(cpu=ledger.free_cpu(), memory=ledger.free_memory(), custom=custom)
        assert ledger.shortfall(Request((brim,))) == frozenset()
        over = Bundle(
            cpu=brim.cpu + (extra == "cpu"),
            memory=brim.memory + (extra == "memory"),
            custom={**custom, extra: custom.get(extra, 0) + 1} if extra in CUSTOM_NAMES else custom,
        )
        before = ledger.snapshot()
        assert ledger.shortfall(Request((over,))) == {extra}
        assert ledger.acquire(Request((over,))) is None
        assert ledger.snapshot() == before

    @rule(alloc=consumes(allocations))
    def release(self, alloc: Allocation | None) -> None:
        if alloc is None:
            return
        if alloc.id in self.live:
            self.ledger.release(alloc)
            del self.live[alloc.id]
        with pytest.raises(KeyError):  # a second release is a bug and must be loud
            self.ledger.release(alloc)

    @precondition(lambda self: bool(self.live))
    @rule()
    def release_everything(self) -> None:
        for _, alloc in list(self.live.values()):
            self.ledger.release(alloc)
        self.live.clear()
        assert self.ledger.snapshot() == self.empty
        assert self.ledger.is_full

    @invariant()
    def never_over_commits_and_used_equals_live_sum(self) -> None:
        snap = self.ledger.snapshot()
        allocs = [a for _, a in self.live.values()]
        assert snap.live == len(allocs)
        assert snap.cpu_used == sum(a.cpu for a in allocs) <= snap.cpu_total
        assert snap.memory_used == sum(a.memory for a in allocs) <= snap.memory_total
        for name, total in snap.custom_total.items():
            used = sum(a.custom.get(name, 0) for a in allocs)
            assert snap.custom_used[name] == used <= total
        for index, used in enumerate(snap.gpu_used):
            assert used == sum(u for a in allocs for i, u in a.gpus if i == index)
            assert 0 <= used <= SCALE
            assert self.ledger.gpu_free(index) == SCALE - used
        assert self.ledger.free_cpu() == snap.cpu_total - snap.cpu_used
        assert self.ledger.is_full == (not allocs)

    def teardown(self) -> None:
        for _, alloc in list(self.live.values()):
            self.ledger.release(alloc)
        assert self.ledger.snapshot() == self.empty


LedgerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.pytestmark = [pytest.mark.slow]  # 300 runs of 40 steps: ~40 s

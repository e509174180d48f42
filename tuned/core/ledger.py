"""The machine's resources as a pure, integer fixed-point ledger.

Why integers: Ray's float ledger lets ten 0.1-CPU trials fail to fill one CPU
(0.1 summed ten times is not 1.0), so admissions drift. Here every amount is
rounded once, at parse time, to 1/SCALE units (memory to whole bytes), and all
arithmetic after that is exact. Why pure: the scheduler can ask "would this fit?"
cheaply and tests can prove, by random interleavings, that nothing is ever
over-committed and every release returns the ledger to exactly where it was.

GPU packing follows Ray: a fractional share lives on one device, chosen best-fit
so small trials pack onto a device before another is opened; a whole share takes
entirely free devices, lowest index first. The ledger also decides the physical
ids a trial sees in CUDA_VISIBLE_DEVICES.

Two things serve the scheduler (``tuned.core.scheduler``) and stay pure: a ``Hold``
sets capacity aside for queued trials (amounts that must stay free, devices that
take no new share), which every acquire but the holder's respects; and each
allocation names its owner (an experiment), so the ledger knows each owner's
dominant share of the machine for fair share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

SCALE = 10_000
"""Fixed-point units per 1.0 of cpu, gpu and custom resources; memory is in bytes."""

_BUILTIN_KEYS = {"gpu": "gpu", "GPU": "gpu", "cpu": "cpu", "CPU": "cpu", "memory": "memory"}

GpuShares = tuple[tuple[int, int], ...]
"""(device index, units) pairs."""


class ResourceError(ValueError):
    """A bad resource request (negative, NaN, inf, fractional GPU above 1, ...)."""


class ImpossibleRequest(ResourceError):
    """A request that can never fit, even on the empty machine.

    Raised at submit time so the person learns at once which resource is short,
    rather than watching a trial wait forever.
    """

    def __init__(self, message: str, resource: str, asked: float, capacity: float) -> None:
        super().__init__(message)
        self.resource = resource
        self.asked = asked
        self.capacity = capacity

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.resource, self.asked, self.capacity))


def _round(value: object, *, resource: str, scale: int) -> int:
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ResourceError(f"{resource} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ResourceError(f"{resource} must be a finite number >= 0, got {value!r}")
    return value * scale if isinstance(value, int) else round(number * scale)


def to_units(value: float, *, resource: str) -> int:
    """Round an amount to fixed-point units once, so later sums are exact."""
    return _round(value, resource=resource, scale=SCALE)


def _amount(resource: str, amount: int) -> str:
    """How a person reads an amount: "2 gpu", "1.5 'foo'", "16 GiB memory (17179869184 bytes)"."""
    if resource == "memory":
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if amount >= size:
                number = f"{amount / size:.2f}".rstrip("0").rstrip(".")
                return f"{number} {unit} memory ({amount} bytes)"
        return f"{amount} bytes of memory"
    number = _number(amount)
    return f"{number} {resource}" if resource in ("cpu", "gpu") else f"{number} {resource!r}"


def _number(units: int) -> str:
    return str(units // SCALE) if units % SCALE == 0 else f"{units / SCALE:.4f}".rstrip("0")


def _impossible(resource: str, asked: int, has: int, has_text: str = "") -> ImpossibleRequest:
    scale = 1 if resource == "memory" else SCALE
    message = f"trial asks for {_amount(resource, asked)} but the daemon has "
    message += has_text or _amount(resource, has)
    return ImpossibleRequest(message, resource, asked / scale, has / scale)


@dataclass(frozen=True, slots=True)
class Bundle:
    """One bundle of a request: cpu, gpu and custom in units, memory in bytes."""

    cpu: int = 0
    gpu: int = 0
    memory: int = 0
    custom: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        amounts = {"cpu": self.cpu, "gpu": self.gpu, "memory": self.memory, **self.custom}
        for name, amount in amounts.items():
            if amount < 0:
                raise ResourceError(f"{name} must be >= 0, got {amount} units")
        if self.gpu > SCALE and self.gpu % SCALE:
            raise ResourceError(f"gpu must be a whole number when above 1, got {self.gpu / SCALE}")


@dataclass(frozen=True, slots=True)
class Request:
    """Bundles reserved together, all or nothing (a Ray placement group).

    ``key`` is the request by value, hashable: trials of different experiments
    asking for the same thing share it, so the scheduler tries each once a pass.
    """

    bundles: tuple[Bundle, ...]
    key: tuple[object, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = tuple((b.cpu, b.gpu, b.memory, tuple(sorted(b.custom.items()))) for b in self.bundles)
        object.__setattr__(self, "key", key)

    @property
    def total_cpu(self) -> int:
        return sum(b.cpu for b in self.bundles)

    @property
    def total_gpu(self) -> int:
        return sum(b.gpu for b in self.bundles)

    @property
    def total_memory(self) -> int:
        return sum(b.memory for b in self.bundles)

    @property
    def total_custom(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for bundle in self.bundles:
            for name, units in bundle.custom.items():
                totals[name] = totals.get(name, 0) + units
        return totals


def _parse_bundle(raw: Mapping[str, float], index: int) -> Bundle:
    if not isinstance(raw, Mapping):
        raise ResourceError(f"bundle {index} must be a mapping of resource to amount, got {raw!r}")
    amounts: dict[str, int] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise ResourceError(f"resource names must be non-empty strings, got {key!r}")
        name = _BUILTIN_KEYS.get(key, key)
        if name in amounts:
            raise ResourceError(f"bundle {index} names {name!r} twice")
        scale = 1 if name == "memory" else SCALE
        units = _round(value, resource=name, scale=scale)
        if units == 0 and float(value) > 0:
            raise ResourceError(
                f"{name} amount {value!r} is below the ledger's precision of {1 / scale:g}"
            )
        if name == "gpu" and units > SCALE and units % SCALE:
            raise ResourceError(f"gpu must be a whole number when above 1, got {value!r}")
        amounts[name] = units
    builtin = {k: amounts.pop(k, 0) for k in ("cpu", "gpu", "memory")}
    custom = {k: v for k, v in amounts.items() if v}
    return Bundle(cpu=builtin["cpu"], gpu=builtin["gpu"], memory=builtin["memory"], custom=custom)


def parse_request(bundles: Sequence[Mapping[str, float]]) -> Request:
    """Turn Ray-style resource dicts into a validated, fixed-point Request."""
    if isinstance(bundles, Mapping | str) or not isinstance(bundles, Sequence):
        raise ResourceError(f"a request is a list of bundles, got {bundles!r}")
    if not bundles:
        raise ResourceError("a request needs at least one bundle")
    return Request(tuple(_parse_bundle(raw, i) for i, raw in enumerate(bundles)))


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the daemon owns: cpu and custom in units, memory in bytes, GPUs by physical id."""

    cpu: int
    memory: int
    gpu_ids: tuple[str, ...]
    custom: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.cpu, self.memory, *self.custom.values()) < 0:
            raise ResourceError(f"capacity must be >= 0: {self}")
        if len(set(self.gpu_ids)) != len(self.gpu_ids):
            raise ResourceError(f"gpu ids must be unique, got {self.gpu_ids}")
        if {"cpu", "gpu", "memory"} & set(self.custom):
            raise ResourceError("custom resources cannot be named cpu, gpu or memory")


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one acquire took; handing it to release gives exactly that back."""

    id: int
    cpu: int
    memory: int
    custom: Mapping[str, int]
    gpus: GpuShares
    bundle_gpus: tuple[GpuShares, ...]
    owner: str = ""  # who holds it (an experiment id): its share of the machine counts it

    def cuda_visible_devices(self, capacity: Capacity) -> str:
        """Physical ids of the devices used, in index order: the trial's CUDA_VISIBLE_DEVICES."""
        return ",".join(capacity.gpu_ids[index] for index, _ in self.gpus)


@dataclass(frozen=True, slots=True)
class Hold:
    """Capacity set aside for queued trials: amounts that must stay free.

    An acquire that respects a hold leaves at least ``cpu``, ``memory`` and each
    ``custom`` amount free (a request short of one of them can take none of it),
    and leaves ``gpus[i]`` units of room on device ``i``: a device held whole
    takes nothing new and only drains until its holder starts.
    """

    cpu: int = 0
    memory: int = 0
    custom: Mapping[str, int] = field(default_factory=dict)
    gpus: Mapping[int, int] = field(default_factory=dict)  # device index -> units kept free

    def __add__(self, other: Hold) -> Hold:
        custom = dict(self.custom)
        for name, units in other.custom.items():
            custom[name] = custom.get(name, 0) + units
        gpus = dict(self.gpus)
        for index, units in other.gpus.items():
            gpus[index] = min(SCALE, gpus.get(index, 0) + units)
        return Hold(self.cpu + other.cpu, self.memory + other.memory, custom, gpus)


NO_HOLD = Hold()


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """A frozen view for status replies and tests; two snapshots compare by value."""

    cpu_used: int
    cpu_total: int
    memory_used: int
    memory_total: int
    custom_used: Mapping[str, int]
    custom_total: Mapping[str, int]
    gpu_used: tuple[int, ...]
    live: int


def _place_gpus(
    used: Sequence[int], request: Request, kept: Mapping[int, int] | None = None
) -> list[GpuShares] | None:
    """Each bundle's gpu shares, placed in order; None if any does not fit.

    ``kept`` is room held for other trials, per device: it counts as used here.
    """
    scratch = list(used)
    for index, units in (kept or {}).items():
        if index < len(scratch):
            scratch[index] = min(SCALE, scratch[index] + units)
    placed: list[GpuShares] = []
    for bundle in request.bundles:
        if bundle.gpu == 0:
            placed.append(())
        elif bundle.gpu < SCALE:
            rooms = [(SCALE - u - bundle.gpu, i) for i, u in enumerate(scratch)]
            fitting = [(room, i) for room, i in rooms if room >= 0]
            if not fitting:
                return None
            _, best = min(fitting)  # best fit: least room left, then lowest index
            scratch[best] += bundle.gpu
            placed.append(((best, bundle.gpu),))
        else:
            free = [i for i, u in enumerate(scratch) if u == 0][: bundle.gpu // SCALE]
            if len(free) < bundle.gpu // SCALE:
                return None
            for i in free:
                scratch[i] = SCALE
            placed.append(tuple((i, SCALE) for i in free))
    return placed


def _gives(allocation: Allocation, short: frozenset[str], devices: Mapping[int, int]) -> bool:
    """Whether ending ``allocation`` frees some of what a holder is short of."""
    if ("cpu" in short and allocation.cpu) or ("memory" in short and allocation.memory):
        return True
    if "gpu" in short and any(index in devices for index, _ in allocation.gpus):
        return True
    return any(allocation.custom.get(name) for name in short)


class Ledger:
    """Free and used amounts of one machine; all methods are synchronous and exact."""

    def __init__(self, capacity: Capacity) -> None:
        self._capacity = capacity
        self._cpu_used = 0
        self._memory_used = 0
        self._custom_used = dict.fromkeys(capacity.custom, 0)
        self._gpu_used = [0] * len(capacity.gpu_ids)
        self._live: dict[int, Allocation] = {}
        self._next_id = 1
        # Per owner: cpu, memory and gpu units held, and custom units by name.
        self._owners: dict[str, tuple[int, int, int, dict[str, int]]] = {}

    @property
    def capacity(self) -> Capacity:
        return self._capacity

    def check(self, request: Request) -> None:
        """Raise ImpossibleRequest if the request could not fit even on the empty machine.

        The gpu test runs the same placement as acquire on an empty machine, so a
        request that passes is guaranteed to be admitted once the machine drains.
        """
        cap = self._capacity
        if request.total_cpu > cap.cpu:
            raise _impossible("cpu", request.total_cpu, cap.cpu)
        gpu_units = len(cap.gpu_ids) * SCALE
        if _place_gpus([0] * len(cap.gpu_ids), request) is None:
            detail = _amount("gpu", gpu_units)
            if request.total_gpu <= gpu_units:
                shares = ", ".join(_number(b.gpu) for b in request.bundles if b.gpu)
                detail += f" (bundle shares {shares} cannot be placed together: a fraction"
                detail += " needs room on one device, a whole gpu needs free devices)"
            raise _impossible("gpu", request.total_gpu, gpu_units, detail)
        if request.total_memory > cap.memory:
            raise _impossible("memory", request.total_memory, cap.memory)
        for name, units in sorted(request.total_custom.items()):
            if name not in cap.custom:
                known = ", ".join(["cpu", "gpu", "memory", *sorted(cap.custom)])
                raise _impossible(name, units, 0, f"no resource {name!r} (it has: {known})")
            if units > cap.custom[name]:
                raise _impossible(name, units, cap.custom[name])

    def resize(self, capacity: Capacity) -> None:
        """A new capacity (a cluster gained or lost nodes); live allocations stay.

        Until they are released, allocations may hold more than the new capacity:
        nothing new is admitted until they fit again. Devices past the new count
        are no longer placed on; their used shares are kept until released.
        """
        self._capacity = capacity
        for name in capacity.custom:
            self._custom_used.setdefault(name, 0)
        count = len(capacity.gpu_ids)
        if count > len(self._gpu_used):
            self._gpu_used += [0] * (count - len(self._gpu_used))
        self._trim_gpus()

    def _trim_gpus(self) -> None:
        count = len(self._capacity.gpu_ids)
        while len(self._gpu_used) > count and self._gpu_used[-1] == 0:
            self._gpu_used.pop()

    def _placeable_gpus(self) -> list[int]:
        return self._gpu_used[: len(self._capacity.gpu_ids)]

    def shortfall(self, request: Request, hold: Hold = NO_HOLD) -> frozenset[str]:
        """Resources that do not fit now; empty exactly when acquire would succeed."""
        short = self._short_without_gpu(request, hold)
        if _place_gpus(self._placeable_gpus(), request, hold.gpus) is None:
            short.add("gpu")
        return frozenset(short)

    def _short_without_gpu(self, request: Request, hold: Hold = NO_HOLD) -> set[str]:
        # A request that asks for none of a resource is never short of it because of
        # a hold (only because the machine shrank below what is in use).
        short = {
            name
            for name, units in request.total_custom.items()
            if units > self.free_custom(name) - hold.custom.get(name, 0)
        }
        cpu = request.total_cpu
        if cpu > self.free_cpu() - (hold.cpu if cpu else 0):
            short.add("cpu")
        memory = request.total_memory
        if memory > self.free_memory() - (hold.memory if memory else 0):
            short.add("memory")
        return short

    def acquire(self, request: Request, owner: str = "", hold: Hold = NO_HOLD) -> Allocation | None:
        """Take the whole request, or nothing and return None if it does not fit now.

        ``hold`` is capacity set aside for others: the request must fit beside it.
        """
        if self._short_without_gpu(request, hold):
            return None
        per_bundle = _place_gpus(self._placeable_gpus(), request, hold.gpus)
        if per_bundle is None:
            return None
        merged: dict[int, int] = {}
        for shares in per_bundle:
            for index, units in shares:
                merged[index] = merged.get(index, 0) + units
        allocation = Allocation(
            id=self._next_id,
            cpu=request.total_cpu,
            memory=request.total_memory,
            custom=request.total_custom,
            gpus=tuple(sorted(merged.items())),
            bundle_gpus=tuple(per_bundle),
            owner=owner,
        )
        self._next_id += 1
        self._cpu_used += allocation.cpu
        self._memory_used += allocation.memory
        for name, units in allocation.custom.items():
            self._custom_used[name] += units
        for index, units in allocation.gpus:
            self._gpu_used[index] += units
        self._live[allocation.id] = allocation
        self._own(allocation, 1)
        return allocation

    def _own(self, allocation: Allocation, sign: int) -> None:
        cpu, memory, gpu, custom = self._owners.get(allocation.owner, (0, 0, 0, {}))
        custom = dict(custom)
        for name, units in allocation.custom.items():
            custom[name] = custom.get(name, 0) + sign * units
        gpu += sign * sum(units for _, units in allocation.gpus)
        usage = (cpu + sign * allocation.cpu, memory + sign * allocation.memory, gpu, custom)
        if any(usage[:3]) or any(custom.values()):
            self._owners[allocation.owner] = usage
        else:
            self._owners.pop(allocation.owner, None)

    def owners(self) -> list[str]:
        """Owners holding anything now (everyone else's share is 0)."""
        return list(self._owners)

    def share(self, owner: str) -> float:
        """The owner's dominant share: its largest fraction of any resource the machine has."""
        usage = self._owners.get(owner)
        if usage is None:
            return 0.0
        cpu, memory, gpu, custom = usage
        cap = self._capacity
        shares = [
            cpu / cap.cpu if cap.cpu else 0.0,
            memory / cap.memory if cap.memory else 0.0,
            gpu / (len(cap.gpu_ids) * SCALE) if cap.gpu_ids else 0.0,
        ]
        shares += [units / cap.custom[n] for n, units in custom.items() if cap.custom.get(n)]
        return max(shares)

    def hold_for(self, request: Request, others: Hold, keep: Iterable[int] = ()) -> Hold:
        """What to set aside so that ``request`` starts once the capacity it waits for drains.

        Its amounts, and room on devices beside what ``others`` hold: for each
        whole GPU a device of its own, entirely free if there is one, else the
        least used (it drains soonest); for a fraction, that much room on the
        device with the most. Devices in ``keep`` (held for it before) are kept
        over equally used ones, and given up only for an entirely free one: what
        drains for a holder keeps draining for it.

        Of a resource it is not short of, it holds only what the trials it waits
        for will not give back with what it is short of: a trial waiting for
        memory keeps no CPU idle that the memory's users return with it.
        """
        used = list(self._placeable_gpus())
        for index, units in others.gpus.items():
            if index < len(used):
                used[index] = min(SCALE, used[index] + units)
        held = set(keep)
        gpus: dict[int, int] = {}
        for bundle in request.bundles:
            if not bundle.gpu:
                continue
            whole = bundle.gpu >= SCALE
            open_ = [i for i in range(len(used)) if not (whole and others.gpus.get(i))]
            ranked = sorted(open_, key=lambda i: (used[i] != 0, i not in held, used[i], i))
            for index in ranked[: bundle.gpu // SCALE if whole else 1]:
                share = SCALE if whole else bundle.gpu
                gpus[index] = min(SCALE, gpus.get(index, 0) + share)
                used[index] = min(SCALE, used[index] + share)
        cpu, memory, custom = request.total_cpu, request.total_memory, dict(request.total_custom)
        short = self.shortfall(request, others)
        givers = [a for a in self._live.values() if _gives(a, short, gpus)]
        if givers:
            if "cpu" not in short:
                cpu = max(0, cpu - min(a.cpu for a in givers))
            if "memory" not in short:
                memory = max(0, memory - min(a.memory for a in givers))
            for name, units in custom.items():
                if name not in short:
                    custom[name] = max(0, units - min(a.custom.get(name, 0) for a in givers))
        return Hold(cpu, memory, custom, gpus)

    def release(self, allocation: Allocation) -> None:
        """Give back exactly what acquire took; an unknown allocation is a bug, so KeyError."""
        if self._live.get(allocation.id) != allocation:
            raise KeyError(f"allocation {allocation.id} is not live in this ledger")
        del self._live[allocation.id]
        self._cpu_used -= allocation.cpu
        self._memory_used -= allocation.memory
        for name, units in allocation.custom.items():
            self._custom_used[name] -= units
        for index, units in allocation.gpus:
            self._gpu_used[index] -= units
        self._own(allocation, -1)
        self._trim_gpus()

    def free_cpu(self) -> int:
        return self._capacity.cpu - self._cpu_used

    def free_memory(self) -> int:
        return self._capacity.memory - self._memory_used

    def free_custom(self, name: str) -> int:
        """Free units of a custom resource; 0 for one the machine does not have."""
        return self._capacity.custom.get(name, 0) - self._custom_used.get(name, 0)

    def gpu_free(self, index: int) -> int:
        return SCALE - self._gpu_used[index]

    @property
    def is_full(self) -> bool:
        """True when nothing is allocated: the whole capacity is free."""
        return not self._live

    def snapshot(self) -> LedgerSnapshot:
        cap = self._capacity
        return LedgerSnapshot(
            cpu_used=self._cpu_used,
            cpu_total=cap.cpu,
            memory_used=self._memory_used,
            memory_total=cap.memory,
            custom_used=dict(self._custom_used),
            custom_total=dict(cap.custom),
            gpu_used=tuple(self._gpu_used),
            live=len(self._live),
        )

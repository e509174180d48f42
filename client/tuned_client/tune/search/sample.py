"""Search-space domains with Ray Tune's names and sampling semantics.

Ported Ray Tune scripts build their ``param_space`` from these functions, so bounds,
inclusivity and quantization follow Ray exactly (``randint`` excludes ``upper``,
``qrandint`` with ``q > 1`` can reach it, quantized values are ``round(x / q) * q`` with
banker's rounding like ``np.round``).  Sampling uses a ``random.Random`` so the client
needs no numpy, and a seed reproduces a whole search.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from copy import copy
from inspect import signature
from typing import Any, Self

_MISSING: Any = object()  # Sentinel: the deprecated ``base`` argument was not given.


def _warn_for_base() -> None:
    """Ray deprecated ``base``; warn the same way so ported scripts see the same hint."""
    warnings.warn(
        "The `base` argument is deprecated. Please remove it as it is not actually "
        "needed in this method.",
        DeprecationWarning,
        stacklevel=4,
    )


class Sampler:
    """How a domain draws one value; searchers inspect the class (``Quantized`` etc.)."""

    name = "Sampler"

    def __str__(self) -> str:
        return self.name

    def sample(self, domain: Domain, rng: random.Random, spec: Any) -> Any:
        raise NotImplementedError


class BaseSampler(Sampler):
    name = "Base"


class Uniform(Sampler):
    name = "Uniform"

    def sample(self, domain: Domain, rng: random.Random, spec: Any) -> Any:
        if isinstance(domain, Categorical):
            # Draw an index, not a value, so mixed-type categories stay untouched.
            return domain.categories[rng.randrange(len(domain.categories))]
        if isinstance(domain, Integer):
            return rng.randrange(int(domain.lower), int(domain.upper))  # upper exclusive
        if isinstance(domain, Float):
            assert domain.lower > -math.inf, "Uniform needs a lower bound"
            assert domain.upper < math.inf, "Uniform needs a upper bound"
            value = rng.uniform(domain.lower, domain.upper)
            return min(max(value, domain.lower), domain.upper)
        raise TypeError(f"Uniform cannot sample {type(domain).__name__}")


class LogUniform(Sampler):
    name = "LogUniform"

    def sample(self, domain: Domain, rng: random.Random, spec: Any) -> Any:
        if not isinstance(domain, Float | Integer):
            raise TypeError(f"LogUniform cannot sample {type(domain).__name__}")
        assert domain.lower > 0, "LogUniform needs a lower bound greater than 0"
        assert 0 < domain.upper < math.inf, "LogUniform needs a upper bound greater than 0"
        value = math.exp(rng.uniform(math.log(domain.lower), math.log(domain.upper)))
        if isinstance(domain, Integer):
            # Ray floors; clamping only undoes float error that would reach ``upper``.
            return max(min(math.floor(value), int(domain.upper) - 1), int(domain.lower))
        return min(max(value, domain.lower), domain.upper)


class Normal(Sampler):
    name = "Normal"

    def __init__(self, mean: float = 0.0, sd: float = 0.0) -> None:
        self.mean = mean
        self.sd = sd
        assert self.sd > 0, "SD has to be strictly greater than 0"

    def sample(self, domain: Domain, rng: random.Random, spec: Any) -> Any:
        return rng.gauss(self.mean, self.sd)


class Grid(Sampler):
    """Marker for grid-search categoricals: the variant generator expands them."""

    name = "Grid"


class Quantized(Sampler):
    """Wraps another sampler and rounds its draws to a multiple of ``q`` (as Ray)."""

    name = "Quantized"

    def __init__(self, sampler: Sampler, q: float) -> None:
        assert sampler, "Quantized() expects a sampler instance"
        self.sampler = sampler
        self.q = q

    def get_sampler(self) -> Sampler:
        return self.sampler

    def sample(self, domain: Domain, rng: random.Random, spec: Any) -> Any:
        if not isinstance(domain, Float | Integer):
            raise TypeError(f"Quantized cannot sample {type(domain).__name__}")
        # Shrink the bounds to the outermost multiples of q, then round the draw: this
        # is what makes Ray's quantized ``upper`` inclusive.  No shortcut for q == 1:
        # Ray dropped it (ray-project/ray#65535) since it left quniform(.., 1) unrounded.
        inner = copy(domain)
        if math.isfinite(domain.lower):
            inner.lower = math.ceil(domain.lower / self.q) * self.q
        if math.isfinite(domain.upper):
            inner.upper = math.floor(domain.upper / self.q) * self.q
        value = self.sampler.sample(inner, rng, spec)
        return domain.cast(round(value / self.q) * self.q)


def _rng_from(random_state: Any) -> random.Random:
    """A ``random.Random`` from what Ray's ``random_state`` takes: a seed, a numpy
    ``Generator`` or ``RandomState`` (a seed drawn from it, so it advances), or None."""
    if isinstance(random_state, random.Random):
        return random_state
    if random_state is None or isinstance(random_state, int):
        return random.Random(random_state)
    if hasattr(random_state, "integers"):  # numpy.random.Generator
        return random.Random(int(random_state.integers(2**62)))
    if hasattr(random_state, "randint"):  # numpy.random.RandomState
        return random.Random(int(random_state.randint(2**31 - 1)))
    raise TypeError(f"random_state must be a seed or a numpy generator, got {random_state!r}")


class Domain:
    """A parameter's type and valid range, plus the sampler that draws from it."""

    sampler: Sampler | None = None
    default_sampler_cls: type[Sampler] = Sampler

    def cast(self, value: Any) -> Any:
        """Convert a raw draw to the domain's type (``int`` for ``Integer``)."""
        return value

    def set_sampler(self, sampler: Sampler, allow_override: bool = False) -> None:
        if self.sampler and not allow_override:
            raise ValueError(
                "You can only choose one sampler for parameter domains. Existing sampler "
                f"for parameter {type(self).__name__}: {self.sampler}. Tried to add {sampler}"
            )
        self.sampler = sampler

    def get_sampler(self) -> Sampler:
        return self.sampler or self.default_sampler_cls()

    def sample(
        self,
        rng: random.Random | None = None,
        spec: Any = None,
        *,
        size: int = 1,
        random_state: int | None = None,
    ) -> Any:
        """Draw one value (or a list when ``size > 1``).

        ``spec`` is what ``sample_from`` functions receive; a ``random_state`` seed is
        accepted for scripts that call Ray's keyword.
        """
        rng = rng or _rng_from(random_state)
        sampler = self.get_sampler()
        items = [self.cast(sampler.sample(self, rng, spec)) for _ in range(size)]
        return items if size > 1 else items[0]

    def is_grid(self) -> bool:
        return isinstance(self.sampler, Grid)

    def is_function(self) -> bool:
        return False

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` lies in this domain (used to check preset points)."""
        raise NotImplementedError

    @property
    def domain_str(self) -> str:
        return "(unknown)"

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.domain_str}[{self.get_sampler()}]"

    def _with(self, sampler: Sampler, allow_override: bool = False) -> Self:
        """Ray's domains are immutable builders: each method returns a configured copy."""
        new = copy(self)
        new.set_sampler(sampler, allow_override=allow_override)
        return new


class _Numeric(Domain):
    """Shared bounds, ``q`` view and ``quantized()`` of ``Float`` and ``Integer``."""

    lower: Any
    upper: Any

    @property
    def q(self) -> float | None:
        """Quantum of a quantized domain, else None (tuned's shortcut for the sampler's q)."""
        return self.sampler.q if isinstance(self.sampler, Quantized) else None

    def quantized(self, q: float) -> Self:
        return self._with(Quantized(self.get_sampler(), q), allow_override=True)

    def loguniform(self, base: object = _MISSING) -> Self:
        if base is not _MISSING:
            _warn_for_base()
        # Reject bounds a log scale cannot take before any trial is generated.
        if not self.lower > 0 or not 0 < self.upper < math.inf:
            raise ValueError(
                f"LogUniform requires bounds greater than 0. Got: {self.lower}, {self.upper}."
            )
        return self._with(LogUniform())

    def is_valid(self, value: Any) -> bool:
        return bool(self.lower <= value <= self.upper)

    @property
    def domain_str(self) -> str:
        return f"({self.lower}, {self.upper})"


class Float(_Numeric):
    default_sampler_cls = Uniform

    def __init__(self, lower: float | None, upper: float | None) -> None:
        self.lower: float = lower if lower is not None else -math.inf
        self.upper: float = upper if upper is not None else math.inf

    def cast(self, value: Any) -> float:
        return float(value)

    def uniform(self) -> Self:
        if not self.lower > -math.inf:
            raise ValueError("Uniform requires a lower bound.")
        if not self.upper < math.inf:
            raise ValueError("Uniform requires a upper bound.")
        return self._with(Uniform())

    def normal(self, mean: float = 0.0, sd: float = 1.0) -> Self:
        return self._with(Normal(mean, sd))

    def quantized(self, q: float) -> Self:
        for name, bound in (("lower", self.lower), ("upper", self.upper)):
            if math.isfinite(bound) and not math.isclose(bound / q, round(bound / q)):
                raise ValueError(
                    f"Your {name} variable bound {bound} is not divisible by "
                    f"quantization factor {q}."
                )
        return super().quantized(q)


class Integer(_Numeric):
    default_sampler_cls = Uniform

    def __init__(self, lower: int, upper: int) -> None:
        self.lower: int = lower
        self.upper: int = upper

    def cast(self, value: Any) -> int:
        return int(value)

    def uniform(self) -> Self:
        return self._with(Uniform())


class Categorical(Domain):
    default_sampler_cls = Uniform

    def __init__(self, categories: Sequence[Any]) -> None:
        self.categories = list(categories)

    def uniform(self) -> Self:
        return self._with(Uniform())

    def grid(self) -> Self:
        return self._with(Grid())

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, item: int) -> Any:
        return self.categories[item]

    def is_valid(self, value: Any) -> bool:
        return value in self.categories

    @property
    def domain_str(self) -> str:
        return f"{self.categories}"


class _CallSampler(BaseSampler):
    """Calls the user's function with the trial ``spec`` (``spec.config.<name>``)."""

    def sample(self, domain: Domain, rng: random.Random, spec: Any) -> Any:
        assert isinstance(domain, Function)
        if not domain.pass_config:
            return domain.func()
        try:
            return domain.func(spec)
        except (AttributeError, KeyError):
            # Newer Ray style: the function takes the config itself.
            if not isinstance(spec, dict) or "config" not in spec:
                raise
            return domain.func(spec["config"])


class Function(Domain):
    """A value computed by a user function, e.g. from other sampled values."""

    default_sampler_cls = _CallSampler

    def __init__(self, func: Callable[..., Any]) -> None:
        sig = signature(func)
        try:
            sig.bind({})
            pass_config = True
        except TypeError:
            pass_config = False
            try:
                sig.bind()
            except TypeError as exc:
                raise ValueError(
                    "The function passed to a `Function` parameter must be callable "
                    "with either 0 or 1 parameters."
                ) from exc
        self.pass_config = pass_config
        self.func = func

    def is_function(self) -> bool:
        return True

    def is_valid(self, value: Any) -> bool:
        return True  # User-defined: nothing to check against.

    @property
    def domain_str(self) -> str:
        return f"{self.func}()"


def grid_search(values: Iterable[Any]) -> dict[str, Any]:
    """Every value is tried; several grids combine as their cartesian product."""
    return {"grid_search": values}


def sample_from(func: Callable[..., Any]) -> Function:
    """Value computed per trial by ``func(spec)``; ``spec.config`` holds the other values."""
    return Function(func)


def uniform(lower: float, upper: float) -> Float:
    """Float drawn uniformly from ``[lower, upper)``."""
    return Float(lower, upper).uniform()


def quniform(lower: float, upper: float, q: float) -> Float:
    """Uniform float rounded to a multiple of ``q``; quantization makes ``upper`` inclusive."""
    return Float(lower, upper).uniform().quantized(q)


def loguniform(lower: float, upper: float, base: object = _MISSING) -> Float:
    """Float drawn uniformly in log space between ``lower`` and ``upper``."""
    return Float(lower, upper).loguniform(base)


def qloguniform(lower: float, upper: float, q: float, base: object = _MISSING) -> Float:
    """Log-uniform float rounded to a multiple of ``q``."""
    return Float(lower, upper).loguniform(base).quantized(q)


def choice(categories: Sequence[Any]) -> Categorical:
    """One of ``categories``, uniformly."""
    return Categorical(categories).uniform()


def randint(lower: int, upper: int) -> Integer:
    """Integer in ``[lower, upper)``: ``upper`` is exclusive, as ``np.random.randint``."""
    return Integer(lower, upper).uniform()


def lograndint(lower: int, upper: int, base: object = _MISSING) -> Integer:
    """Integer drawn log-uniformly from ``[lower, upper)``."""
    return Integer(lower, upper).loguniform(base)


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """Integer multiple of ``q`` in ``[lower, upper]`` (inclusive for ``q > 1``, as Ray)."""
    return Integer(lower, upper).uniform().quantized(q)


def qlograndint(lower: int, upper: int, q: int, base: object = _MISSING) -> Integer:
    """Log-uniform integer rounded to a multiple of ``q``; ``upper`` inclusive."""
    return Integer(lower, upper).loguniform(base).quantized(q)


def randn(mean: float = 0.0, sd: float = 1.0) -> Float:
    """Float drawn from a normal distribution."""
    return Float(None, None).normal(mean, sd)


def qrandn(mean: float, sd: float, q: float) -> Float:
    """Normal float rounded to a multiple of ``q``."""
    return Float(None, None).normal(mean, sd).quantized(q)

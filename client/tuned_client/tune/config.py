"""Configuration objects, named and shaped as Ray Tune's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_DEPRECATED = "DEPRECATED"


@dataclass
class TuneConfig:
    """How trials are generated and compared (``ray.tune.TuneConfig``)."""

    metric: str | None = None
    mode: str | None = None
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    reuse_actors: bool = False
    trial_name_creator: Callable[[Any], str] | None = None
    trial_dirname_creator: Callable[[Any], str] | None = None
    # tuned's own: seed for the default variant generator, and a per-trial time limit
    # enforced by the daemon (SIGTERM to the trial's process group, then SIGKILL).
    seed: int | None = None
    trial_timeout_s: float | None = None
    priority: int = 0
    chdir_to_trial_dir: Any = _DEPRECATED

    def __post_init__(self) -> None:
        if self.chdir_to_trial_dir != _DEPRECATED:  # (a copy from tuner.pkl is equal)
            raise DeprecationWarning(  # as Ray Tune 2.x does
                "`chdir_to_trial_dir` is deprecated. Use the RAY_CHDIR_TO_TRIAL_DIR "
                "environment variable instead. Set it to 0 to disable the default behavior "
                "of changing the working directory."
            )
        if self.mode not in (None, "min", "max"):
            raise ValueError(f"TuneConfig(mode=...) must be 'min' or 'max', got {self.mode!r}")
        if self.num_samples == -1:
            raise ValueError("num_samples=-1 (infinite) needs a searcher; give a number")
        if self.num_samples < 1:
            raise ValueError(
                f"TuneConfig(num_samples=...) must be at least 1, got {self.num_samples}"
            )
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(
                "TuneConfig(max_concurrent_trials=...) must be at least 1, "
                f"got {self.max_concurrent_trials}"
            )


@dataclass
class FailureConfig:
    """Retries of failed trials (``ray.tune.FailureConfig``)."""

    max_failures: int = 0
    fail_fast: bool | str = False


@dataclass
class CheckpointConfig:
    """Which checkpoints to keep (``ray.tune.CheckpointConfig``)."""

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None


@dataclass
class RunConfig:
    """Where and how an experiment runs (``ray.tune.RunConfig``)."""

    name: str | None = None
    storage_path: str | None = None
    storage_filesystem: Any = None
    failure_config: FailureConfig | None = None
    checkpoint_config: CheckpointConfig | None = None
    stop: Mapping[str, float] | Callable[..., bool] | Any | None = None
    callbacks: list[Any] | None = None
    verbose: int | None = None
    progress_reporter: Any = None
    log_to_file: bool | str | tuple[str, str] = False
    sync_config: Any = None
    local_dir: str | None = None  # old name of storage_path
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)

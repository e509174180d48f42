"""The experiment as the daemon receives it (``ExperimentSpec``), from the Tuner's settings."""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Any

import cloudpickle

from .. import protocol as p
from ..paths import default_storage_path
from .config import FailureConfig, RunConfig
from .fit_settings import FitSettings, trainable_name
from .parameters import parameters_folder
from .resources import resources_of, to_bundles, trial_bundles
from .result import TuneError
from .search.variant_generator import generate_variants, grid_plan, make_spec
from .trainable import to_function


def stop_dict(stop: Any) -> dict[str, float]:
    """A dict stop rule, checked inside the trial; {} for a callable (checked by the client)."""
    if stop is None or callable(stop):
        return {}
    if isinstance(stop, dict):
        if any(isinstance(v, dict) for v in stop.values()):
            raise TuneError(  # as Ray's
                "Stopping criteria is now flattened by default. Use forward slashes to nest "
                "values `key1/key2/key3`."
            )
        bad = [k for k, v in stop.items() if not isinstance(v, int | float)]
        if bad:
            raise ValueError(f"RunConfig(stop=...) values must be numbers; {bad} are not")
        return {str(k): float(v) for k, v in stop.items()}
    raise TypeError(
        "RunConfig(stop=...) must be a dict like {'training_iteration': 10}, a function "
        f"(trial_id, result) -> bool or a tune.Stopper, got {type(stop).__name__}"
    )


def needs_decisions(fit: FitSettings) -> bool:
    """Whether trials must wait on the client after each result, as in Ray.

    A scheduler other than FIFO, a searcher that learns from results, or a
    stop rule the client evaluates decides on each result; without them,
    results are pipelined (the fast path).
    """
    tc = fit.tune_config
    if tc.scheduler is None and tc.search_alg is None:  # the plain sweep loads neither
        return callable(fit.run_config.stop)
    from .schedulers.trial_scheduler import FIFOScheduler
    from .search.basic_variant import BasicVariantGenerator

    scheduler = tc.scheduler is not None and type(tc.scheduler) is not FIFOScheduler
    searcher = tc.search_alg is not None and not isinstance(tc.search_alg, BasicVariantGenerator)
    return scheduler or searcher or callable(fit.run_config.stop)


def restore_retries() -> int:
    """Ray's ``TUNE_RESTORE_RETRY_NUM``: read once per experiment, as the Tuner is run."""
    value = os.environ.get("TUNE_RESTORE_RETRY_NUM", "0")
    try:
        return max(0, int(value))
    except ValueError:
        raise ValueError(f"TUNE_RESTORE_RETRY_NUM must be a whole number, got {value!r}") from None


def pack_trainable(fit: FitSettings, experiment_dir: str) -> bytes:
    """The trainable as the daemon runs it, pickled; ``with_parameters``' large objects go
    to ``experiment_dir``'s store, not into the pickle (a first run and a restore alike)."""
    rc = fit.run_config
    fn = to_function(fit.trainable, rc.checkpoint_config, rc.stop, restore_retries())
    try:
        with parameters_folder(experiment_dir):
            return bytes(cloudpickle.dumps(fn))
    except Exception as exc:
        name = trainable_name(fit.trainable)
        raise TuneError(f"the trainable {name!r} cannot be pickled: {exc}") from exc


def experiment_spec(fit: FitSettings, steered: bool = False) -> p.ExperimentSpec:
    """The whole experiment; ``steered``: no trials yet (the steering loop adds them)."""
    tc, rc = fit.tune_config, fit.run_config
    name = trainable_name(fit.trainable)
    resources = resources_of(fit.trainable)
    plan = None
    if not steered and not callable(resources):
        plan = grid_plan(fit.param_space, tc.num_samples)
    trials = [] if steered or plan is not None else trial_specs(fit, resources)
    failure = rc.failure_config or FailureConfig()
    storage = rc.storage_path or rc.local_dir or str(default_storage_path())
    exp_name = rc.name or f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    storage = os.path.abspath(os.path.expanduser(storage))
    spec = p.ExperimentSpec(
        name=exp_name,
        name_generated=not rc.name,
        storage_path=storage,
        trainable_name=name,
        trainable=pack_trainable(fit, os.path.join(storage, exp_name)),
        python=sys.executable,
        cwd=os.getcwd(),
        sys_path=[os.path.abspath(x) if x else os.getcwd() for x in sys.path],
        env=dict(os.environ),
        trials=trials,
        resources=to_bundles(None if callable(resources) else resources),
        max_concurrent_trials=tc.max_concurrent_trials or 0,
        max_failures=failure.max_failures,
        fail_fast=bool(failure.fail_fast),
        trial_timeout_s=float(tc.trial_timeout_s or 0.0),
        time_budget_s=float(tc.time_budget_s or 0.0),
        stop=stop_dict(rc.stop),
        priority=tc.priority,
        open_ended=steered,
        decide_results=needs_decisions(fit),
        metric=tc.metric or "",
        mode=tc.mode or "",
        grid=plan,
    )
    apply_checkpoint_config(spec, rc)
    return spec


def trial_specs(fit: FitSettings, resources: Any) -> list[p.TrialSpec]:
    """Every trial of the space, enumerated (a space with random domains, or resources
    that depend on the config; a plain grid goes as a ``GridPlan``)."""
    tc = fit.tune_config
    try:  # configs are copies of the space: what cannot be copied cannot be sent either
        variants = list(generate_variants(fit.param_space, tc.num_samples, seed=tc.seed))
    except (TypeError, copy.Error) as exc:
        raise TuneError(f"the param_space cannot be serialised: {exc}") from exc
    trials = []
    for index, (suffix, config) in enumerate(variants):
        bundles = trial_bundles(resources, make_spec(config))
        try:
            packed = p.pack_user(config)
        except Exception as exc:
            raise TuneError(f"trial {index}'s config cannot be serialised: {exc}") from exc
        tag = f"{index}_{suffix}" if suffix else str(index)
        trials.append(p.TrialSpec(tag=tag, config=packed, resources=bundles))
    return trials


def apply_checkpoint_config(spec: p.ExperimentSpec, rc: RunConfig) -> None:
    """CheckpointConfig travels in the spec: the daemon prunes as checkpoints come."""
    cc = rc.checkpoint_config
    if cc is None:
        return
    if cc.num_to_keep is not None and cc.num_to_keep < 1:
        raise ValueError(
            f"CheckpointConfig(num_to_keep=...) must be at least 1 or None, got {cc.num_to_keep}"
        )
    if cc.checkpoint_score_order not in ("max", "min"):
        raise ValueError(
            "CheckpointConfig(checkpoint_score_order=...) must be 'max' or 'min', "
            f"got {cc.checkpoint_score_order!r}"
        )
    spec.num_to_keep = cc.num_to_keep or 0
    spec.checkpoint_score_attribute = cc.checkpoint_score_attribute or ""
    spec.checkpoint_score_order = cc.checkpoint_score_order

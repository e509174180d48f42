"""``ray.air.integrations.wandb``: ``WandbLoggerCallback`` and ``setup_wandb``, as Ray's.

``WandbLoggerCallback`` runs in the script: a W&B run per trial (id: the trial
id, name: the trial name, group: the experiment's folder name), the trial's
config as the run's config, each result's numbers logged at step
``training_iteration`` (``trial_id``, ``hostname``, ``pid``, ``date``, ...
go to the config), checkpoints as artifacts with ``upload_checkpoints``.
Ray logs each trial from a process of its own (an actor) so that a slow
upload never holds the driver; here each trial's run is fed from a thread of
its own, through a queue, with W&B's multi-run API (``reinit="create_new"``),
and its files go to ``wandb/`` in the trial's folder as under Ray.
``setup_wandb(config)`` runs inside a trainable and returns the run.
Needs ``wandb``: the ``tuned[wandb]`` extra. ``WANDB_MODE=offline`` works as
with W&B anywhere (``wandb sync`` uploads later).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import threading
import warnings
from collections.abc import Sequence
from numbers import Number
from pathlib import Path
from typing import Any

from ...session import current_session
from ...tune.analysis.metrics import flatten_dict
from ...tune.logger.logger import LoggerCallback

logger = logging.getLogger(__name__)

WANDB_ENV_VAR = "WANDB_API_KEY"
WANDB_PROJECT_ENV_VAR = "WANDB_PROJECT_NAME"
WANDB_GROUP_ENV_VAR = "WANDB_GROUP_NAME"
WANDB_MODE_ENV_VAR = "WANDB_MODE"
DEFAULT_UPLOAD_TIMEOUT_S = 1800  # Ray's default sync timeout


def _wandb() -> Any:
    try:
        import wandb
    except ImportError:
        msg = "Wandb was not found - please install with `pip install wandb`"
        raise RuntimeError(msg) from None
    return wandb


def _is_allowed_type(obj: Any) -> bool:
    """A number, or one of W&B's media values (what ``wandb.log`` takes)."""
    from wandb.sdk.data_types.base_types.wb_value import WBValue

    if type(obj).__module__ == "numpy" and getattr(obj, "size", 0) == 1:
        return isinstance(obj.item(), Number)
    if isinstance(obj, Sequence) and not isinstance(obj, str) and len(obj) > 0:
        return isinstance(obj[0], WBValue)
    return isinstance(obj, Number | WBValue)


def _clean_log(obj: Any, *, video_kwargs: dict[str, Any] | None = None,
               image_kwargs: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """Ray's cleaning: arrays of 3/4 dims become images, 5 dims videos, the rest what
    W&B can serialise, else its ``str`` (as a number when it reads as one)."""
    kw = {"video_kwargs": video_kwargs or {}, "image_kwargs": image_kwargs or {}}
    if isinstance(obj, dict):
        return {k: _clean_log(v, **kw) for k, v in obj.items()}
    if isinstance(obj, list | set):
        return [_clean_log(v, **kw) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clean_log(v, **kw) for v in obj)
    ndim = getattr(obj, "ndim", None) if type(obj).__module__ == "numpy" else None
    if ndim in (3, 4, 5):
        from wandb import Image, Video

        if ndim == 3:
            return Image(obj, **kw["image_kwargs"])
        make = (lambda v: Image(v, **kw["image_kwargs"])) if ndim == 4 else (
            lambda v: Video(v, **kw["video_kwargs"]))  # fmt: skip
        return [make(v) for v in obj] if obj.shape[0] > 1 else make(obj[0])
    if _is_allowed_type(obj):
        return obj
    try:
        from wandb.util import json_dumps_safer

        json_dumps_safer(obj)
        pickle.dumps(obj)
        return obj
    except Exception:
        fallback = str(obj)
        for kind in (int, float):
            try:
                return kind(fallback)
            except ValueError:
                pass
        return fallback


def _get_wandb_project(project: str | None = None) -> str | None:
    return project or os.environ.get(WANDB_PROJECT_ENV_VAR) or None


def _set_api_key(api_key_file: str | None = None, api_key: str | None = None) -> None:
    """``api_key``/``api_key_file``, else ``WANDB_API_KEY``, else ``wandb login``'s (as Ray)."""
    if os.environ.get(WANDB_MODE_ENV_VAR) in {"offline", "disabled"}:
        return
    if api_key_file:
        if api_key:
            raise ValueError("Both WandB `api_key_file` and `api_key` set.")
        with open(api_key_file) as fp:
            api_key = fp.readline().strip()
    if not api_key and not os.environ.get(WANDB_ENV_VAR):
        wandb = _wandb()
        try:
            wandb.ensure_configured()
            if wandb.api.api_key:
                return
        except AttributeError:
            pass
    if api_key:
        os.environ[WANDB_ENV_VAR] = api_key
    elif not os.environ.get(WANDB_ENV_VAR):
        raise ValueError(
            f"No WandB API key found. Either set the {WANDB_ENV_VAR} environment variable, "
            "pass `api_key` or `api_key_file` to the`WandbLoggerCallback` class as arguments, "
            "or run `wandb login` from the command line"
        )


def setup_wandb(
    config: dict[str, Any] | None = None,
    api_key: str | None = None,
    api_key_file: str | None = None,
    rank_zero_only: bool = True,
    **kwargs: Any,
) -> Any:
    """Start a W&B run inside a trainable and return it (Ray's ``setup_wandb``).

    By default the run id is the trial id, its name the trial name and its
    group the experiment name; ``kwargs`` go to ``wandb.init()`` and win.
    A trial here is one process, so ``rank_zero_only`` changes nothing.
    """
    wandb = kwargs.pop("_wandb", None) or _wandb()
    session = current_session()
    trial_id = kwargs.pop("trial_id", None) or (session.assignment.trial_id if session else None)
    trial_name = kwargs.pop("trial_name", None) or (
        session.assignment.trial_name if session else None
    )
    group = kwargs.pop("group", None) or (
        Path(session.assignment.experiment_dir).name if session else None
    )
    if api_key_file:
        api_key_file = os.path.expanduser(api_key_file)
    _set_api_key(api_key_file, api_key)
    init_kwargs: dict[str, Any] = dict(
        id=trial_id,
        name=trial_name,
        resume=True,
        reinit=True,
        allow_val_change=True,
        config=_clean_log(dict(config or {})),
        project=_get_wandb_project(kwargs.pop("project", None)),
        group=group or os.environ.get(WANDB_GROUP_ENV_VAR),
    )
    init_kwargs.update(kwargs)
    return wandb.init(**init_kwargs)


_END = object()


class _TrialRun(threading.Thread):
    """One trial's W&B run, fed through a queue (Ray's ``_WandbLoggingActor``, as a thread)."""

    def __init__(self, logdir: str, exclude: list[str], to_config: list[str],
                 init_kwargs: dict[str, Any]) -> None:  # fmt: skip
        super().__init__(name=f"wandb-{init_kwargs.get('name')}", daemon=True)
        self.queue: queue.Queue[Any] = queue.Queue()
        self._logdir = logdir
        self._exclude = set(exclude)
        self._to_config = set(to_config)
        self._kwargs = init_kwargs
        self._trial_name = init_kwargs.get("name", "unknown")
        self.error: BaseException | None = None

    def run(self) -> None:
        wandb = _wandb()
        try:
            run = wandb.init(**self._kwargs)
            run.config.update({"trial_log_path": self._logdir}, allow_val_change=True)
            while (item := self.queue.get()) is not _END:
                kind, content = item
                if kind == "checkpoint":
                    artifact = wandb.Artifact(name=f"checkpoint_{self._trial_name}", type="model")
                    artifact.add_dir(content)
                    run.log_artifact(artifact)
                    continue
                log, config_update = self._handle_result(content)
                run.config.update(config_update, allow_val_change=True)
                run.log(log, step=log.get("training_iteration"))
            run.finish()
        except Exception as exc:  # said, and the sweep goes on without this trial's run
            self.error = exc
            logger.warning("Failed to log trial %s to W&B: %s", self._trial_name, exc)

    def _handle_result(self, result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        config_update = dict(result.get("config", {}))
        log: dict[str, Any] = {}
        for k, v in flatten_dict(result, delimiter="/").items():
            if any(k.startswith(item + "/") or k == item for item in self._exclude):
                continue
            if any(k.startswith(item + "/") or k == item for item in self._to_config):
                config_update[k] = v
            elif _is_allowed_type(v):
                log[k] = v
        config_update.pop("callbacks", None)
        return log, config_update


class WandbLoggerCallback(LoggerCallback):
    """Weights & Biases logger: a run per trial, as Ray's ``WandbLoggerCallback``.

    ``project`` (or ``WANDB_PROJECT_NAME``) is required; ``group`` defaults to
    the experiment's name; ``excludes`` drops metrics and config keys;
    ``log_config`` logs the result's config each step; ``upload_checkpoints``
    logs checkpoints as artifacts; other ``kwargs`` go to ``wandb.init()``.
    """

    _exclude_results = ["done", "should_checkpoint"]
    AUTO_CONFIG_KEYS = [
        "trial_id", "experiment_tag", "node_ip", "experiment_id", "hostname", "pid", "date",
    ]  # fmt: skip
    """Results that are saved with ``wandb.config`` instead of ``wandb.log``."""

    def __init__(
        self,
        project: str | None = None,
        group: str | None = None,
        api_key_file: str | None = None,
        api_key: str | None = None,
        excludes: list[str] | None = None,
        log_config: bool = False,
        upload_checkpoints: bool = False,
        save_checkpoints: bool = False,
        upload_timeout: int = DEFAULT_UPLOAD_TIMEOUT_S,
        video_kwargs: dict[str, Any] | None = None,
        image_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _wandb()  # RuntimeError without wandb, as Ray's
        if save_checkpoints:
            warnings.warn(
                "`save_checkpoints` is deprecated. Use `upload_checkpoints` instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            upload_checkpoints = save_checkpoints
        self.project = project
        self.group = group
        self.api_key_path = api_key_file
        self.api_key = api_key
        self.excludes = excludes or []
        self.log_config = log_config
        self.upload_checkpoints = upload_checkpoints
        self._upload_timeout = upload_timeout
        self.video_kwargs = video_kwargs or {}
        self.image_kwargs = image_kwargs or {}
        self.kwargs = kwargs
        self._trial_runs: dict[Any, _TrialRun] = {}

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.api_key_file = os.path.expanduser(self.api_key_path) if self.api_key_path else None
        _set_api_key(self.api_key_file, self.api_key)
        self.project = _get_wandb_project(self.project)
        if not self.project:
            raise ValueError(
                "Please pass the project name as argument or through "
                f"the {WANDB_PROJECT_ENV_VAR} environment variable."
            )
        if not self.group and os.environ.get(WANDB_GROUP_ENV_VAR):
            self.group = os.environ.get(WANDB_GROUP_ENV_VAR)

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_runs:  # restarted (a retry): its run goes on
            return
        config = dict(trial.config)
        config.pop("callbacks", None)
        exclude_results = [*self._exclude_results, *self.excludes]
        if not self.log_config:
            exclude_results.append("config")
        config = {k: v for k, v in _clean_log(config).items() if k not in self.excludes}
        init_kwargs: dict[str, Any] = dict(
            id=trial.trial_id,
            name=str(trial),
            resume=False,
            reinit="create_new",  # several trials' runs at once in this process
            allow_val_change=True,
            group=self.group or Path(trial.local_path).parent.name,
            project=self.project,
            config=config,
            dir=trial.local_path,  # wandb/ in the trial folder, as Ray's actor (its cwd)
        )
        init_kwargs.update(self.kwargs)
        os.makedirs(trial.local_path, exist_ok=True)
        run = _TrialRun(trial.local_path, exclude_results, self.AUTO_CONFIG_KEYS, init_kwargs)
        self._trial_runs[trial] = run
        run.start()

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        result = _clean_log(result, video_kwargs=self.video_kwargs, image_kwargs=self.image_kwargs)
        self._trial_runs[trial].queue.put(("result", result))

    def log_trial_save(self, trial: Any) -> None:
        if self.upload_checkpoints and trial.checkpoint and trial in self._trial_runs:
            path = getattr(trial.checkpoint, "path", trial.checkpoint)
            self._trial_runs[trial].queue.put(("checkpoint", str(path)))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run = self._trial_runs.get(trial)
        if run is not None:
            run.queue.put(_END)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Wait (up to ``upload_timeout``) for every run's ``wandb.finish``, as Ray does."""
        for run in self._trial_runs.values():
            run.queue.put(_END)
        for run in self._trial_runs.values():
            run.join(self._upload_timeout)
        self._trial_runs.clear()

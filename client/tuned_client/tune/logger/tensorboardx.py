"""``ray.tune.logger.TBXLoggerCallback``: TensorBoard event files in each trial's folder.

As Ray's: a ``SummaryWriter`` per trial writing ``events.out.tfevents.*`` in
the trial's folder, a scalar for every numeric metric (nested dicts flattened
with ``/``) under ``ray/tune/...`` at step ``timesteps_total`` or else
``training_iteration``, lists and arrays as histograms (images and videos by
their shape), and the config as hparams once the trial has ended, so
``tensorboard --logdir <storage>/<experiment>`` shows every trial.

The writer is tensorboardX's, or else torch's ``torch.utils.tensorboard``
(which needs the ``tensorboard`` package); both write the same files. Neither
is a dependency of the client: with neither installed, constructing this
callback raises ``ImportError``, as Ray's does, and ``Tuner.fit()`` simply
adds no TensorBoard logger.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..analysis.metrics import flatten_dict
from .logger import LoggerCallback

logger = logging.getLogger(__name__)

# Keys a TensorBoard curve gains nothing from (Ray drops the same ones).
_SKIPPED = ("config", "pid", "timestamp", "time_total_s", "training_iteration")
_warned: set[str] = set()

# Import tensorboardX without torch (which it imports, when installed, only to
# accept torch tensors, and which costs ~200 MiB and seconds). Set by the writer
# process, where no other thread imports anything and no tensor is ever logged.
hide_torch = False


@contextlib.contextmanager
def _torch_hidden() -> Iterator[None]:
    if not hide_torch or "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails at once
    try:
        yield
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


def writer_available() -> bool:
    """Whether tensorboardX or torch's TensorBoard writer can be imported, without importing it."""
    return _spec("tensorboardX") or (_spec("torch") and _spec("tensorboard"))


def _spec(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _writer_api() -> tuple[Any, Any]:
    """The ``SummaryWriter`` class and the ``hparams`` summary function, tensorboardX's first."""
    try:
        with _torch_hidden():
            from tensorboardX import SummaryWriter
            from tensorboardX.summary import hparams

        return SummaryWriter, hparams
    except ImportError:
        pass
    try:
        from torch.utils.tensorboard import SummaryWriter as TorchWriter
        from torch.utils.tensorboard.summary import hparams as torch_hparams
    except ImportError:
        if "tbx-install" not in _warned:
            _warned.add("tbx-install")
            logger.info('pip install "tuned[tensorboard]" to see TensorBoard files.')
        raise
    return TorchWriter, torch_hparams


class TBXLoggerCallback(LoggerCallback):
    """TensorBoard logger (Ray's ``TBXLoggerCallback``).

    Note that hparams are written only after a trial has ended. Nested dicts
    are flattened: ``{"a": {"b": 1, "c": 2}} -> {"a/b": 1, "a/c": 2}``.
    """

    _SAVED_FILE_TEMPLATES = ["events.out.tfevents.*"]

    VALID_HPARAMS: tuple[type, ...] = (str, bool, int, float, list, type(None))

    def __init__(self) -> None:
        self._summary_writer_cls, self._hparams = _writer_api()  # ImportError without one
        import numpy as np  # a dependency of both writers

        self._np = np
        self._summary_types: tuple[type, ...] = (
            int, float, np.float32, np.float64, np.int32, np.int64,
        )  # fmt: skip
        self._np_hparams: tuple[type, ...] = (
            np.bool_, np.float32, np.float64, np.int32, np.int64,
        )  # fmt: skip
        self._trial_writer: dict[Any, Any] = {}
        self._trial_result: dict[Any, dict[str, Any]] = {}

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        os.makedirs(trial.local_path, exist_ok=True)
        self._trial_writer[trial] = self._summary_writer_cls(trial.local_path, flush_secs=30)
        self._trial_result[trial] = {}

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        writer = self._trial_writer[trial]
        step = result.get("timesteps_total") or result["training_iteration"]
        tmp = {k: v for k, v in result.items() if k not in _SKIPPED}
        valid_result: dict[str, Any] = {}
        value: Any
        for attr, value in flatten_dict(tmp, delimiter="/").items():
            full_attr = f"ray/tune/{attr}"
            if isinstance(value, self._summary_types) and not math.isnan(float(value)):  # type: ignore[arg-type]
                valid_result[full_attr] = value
                writer.add_scalar(full_attr, value, global_step=step)
            elif (isinstance(value, list) and len(value) > 0) or (
                isinstance(value, self._np.ndarray) and value.size > 0
            ):
                valid_result[full_attr] = value
                self._add_array(writer, full_attr, value, step)
        self._trial_result[trial] = valid_result
        writer.flush()

    def _add_array(self, writer: Any, tag: str, value: Any, step: int) -> None:
        """An image (3 dims), a batch of images (4), a video (5), else a histogram (as Ray)."""
        ndim = value.ndim if isinstance(value, self._np.ndarray) else 0
        if ndim == 3:
            writer.add_image(tag, value, global_step=step)
        elif ndim == 4:
            writer.add_images(tag, value, global_step=step)
        elif ndim == 5:
            writer.add_video(tag, value, global_step=step, fps=20)
        else:
            try:
                writer.add_histogram(tag, value, global_step=step)
            except (ValueError, TypeError):  # e.g. [[]]: warn once and go on, as Ray
                if "invalid_tbx_value" not in _warned:
                    _warned.add("invalid_tbx_value")
                    logger.warning(
                        "You are trying to log an invalid value (%s=%s) via %s!",
                        tag, value, type(self).__name__,
                    )  # fmt: skip

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial not in self._trial_writer:
            return
        last = self._trial_result.pop(trial)
        if trial.evaluated_params and last:
            scalars = {
                k: v for k, v in flatten_dict(last).items() if isinstance(v, self._summary_types)
            }
            self._try_log_hparams(trial, scalars)
        self._trial_writer.pop(trial).close()

    def _try_log_hparams(self, trial: Any, result: dict[str, Any]) -> None:
        flat_params = flatten_dict(trial.evaluated_params)
        params = {k: v for k, v in flat_params.items() if isinstance(v, self.VALID_HPARAMS)}
        numpy_params: dict[str, Any] = {
            k: v for k, v in flat_params.items() if isinstance(v, self._np_hparams)
        }
        params.update((k, v.tolist()) for k, v in numpy_params.items())
        removed = {k: v for k, v in flat_params.items() if k not in params}
        if removed:
            logger.info(
                "Removed the following hyperparameter values when logging to tensorboard: %s",
                removed,
            )
        writer = self._trial_writer[trial]
        try:
            for summary in self._hparams(hparam_dict=params, metric_dict=result):
                writer.file_writer.add_summary(summary)
        except Exception:
            logger.exception(
                "TensorboardX failed to log hparams. This may be due to an unsupported "
                "type in the hyperparameter values."
            )

"""Options Ray Tune accepts that tuned implements differently or cannot honour.

Nothing is silently ignored: each option is either honoured (here or where it
is used) or refused at ``Tuner(...)`` with an error saying why and what to do.
The README's "Ray Tune compatibility" table lists them.
"""

from __future__ import annotations

from typing import Any

from .fit_settings import FitSettings
from .progress_reporter import ProgressReporter
from .result import TuneError
from .serializability import check_serializable
from .trainable import Trainable


def _is_class_trainable(trainable: Any) -> bool:
    return isinstance(trainable, type) and issubclass(trainable, Trainable)


def check_options(fit: FitSettings) -> None:
    """Refuse, before anything runs, what this Tuner cannot do as Ray would."""
    tc, rc = fit.tune_config, fit.run_config
    if tc.trial_dirname_creator is not None:
        raise TuneError(
            "TuneConfig(trial_dirname_creator=...) is not supported: the daemon names each "
            "trial's folder <trainable>_<trial id>_<tag>_<date> in the experiment folder; "
            "remove the option (trial_name_creator, for the names shown, is supported)"
        )
    storage = rc.storage_path or rc.local_dir
    if storage and "://" in str(storage):
        raise TuneError(
            f"storage_path={storage!r}: URIs (s3://, gs://, ...) are not supported; tuned writes "
            "results to a local (or shared, mounted) folder: give its path, and copy the "
            "experiment folder to object storage afterwards if you need it there"
        )
    if rc.storage_filesystem is not None:
        raise TuneError(
            "RunConfig(storage_filesystem=...) is not supported: results go to a local "
            "folder (storage_path)"
        )
    if rc.sync_config is not None and getattr(rc.sync_config, "upload_dir", None):
        raise TuneError(
            "SyncConfig(upload_dir=...) is not supported: every trial of a tuned experiment "
            "writes to the experiment folder directly, there is nothing to sync"
        )
    _check_log_to_file(rc.log_to_file)
    check_serializable(fit.trainable)
    reporter = rc.progress_reporter
    if reporter is not None and not isinstance(reporter, ProgressReporter):
        raise TypeError(  # here, not once the experiment is running
            "RunConfig(progress_reporter=...) must be a tune.ProgressReporter "
            f"(CLIReporter, JupyterNotebookReporter), got {type(reporter).__name__}"
        )



def check_at_fit(fit: FitSettings) -> None:
    """What Ray refuses when the experiment starts (``Tuner.fit()``), not before."""
    cc = fit.run_config.checkpoint_config
    if (
        cc is not None
        and (cc.checkpoint_frequency or cc.checkpoint_at_end)
        and not _is_class_trainable(fit.trainable)
    ):
        raise ValueError(
            "You passed `checkpoint_frequency` and/or `checkpoint_at_end` to "
            "`CheckpointConfig`, but the trainable is a function trainable: these options "
            "only apply to class (tune.Trainable) trainables. A function trainable saves "
            "checkpoints itself with `tune.report(metrics, checkpoint=...)`."
        )


def _check_log_to_file(value: Any) -> None:
    if isinstance(value, bool | str):
        return
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
    ):
        return
    raise TypeError(
        "RunConfig(log_to_file=...) must be a bool, a file name, or a (stdout, stderr) pair "
        f"of file names, got {value!r}"
    )

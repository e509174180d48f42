"""Stopping mechanisms under Ray Tune's names (``ray.tune.stopper``)."""

from .experiment_plateau import ExperimentPlateauStopper
from .function_stopper import FunctionStopper
from .maximum_iteration import MaximumIterationStopper
from .state import load_stopper, save_stopper
from .stopper import CombinedStopper, NoopStopper, Stopper
from .timeout import TimeoutStopper
from .trial_plateau import TrialPlateauStopper

__all__ = [
    "CombinedStopper",
    "ExperimentPlateauStopper",
    "FunctionStopper",
    "MaximumIterationStopper",
    "NoopStopper",
    "Stopper",
    "TimeoutStopper",
    "TrialPlateauStopper",
    "load_stopper",
    "save_stopper",
]

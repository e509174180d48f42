"""The daemon's state as plain data: every experiment it knows and its trials.

Like pueue's ``state.rs``: a struct at the bottom that the parts below the
daemon read and ``core.reducer`` changes, never the service that composes
them. A trial is found through its experiment (its id holds the experiment's
and its index), so there is one place where a trial lives: its experiment's
list (``None`` there once it is archived on disk).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
from tuned_client.protocol import ExperimentSpec

from .model import Experiment, Trial, split_trial_id

_T = TypeVar("_T")


@dataclass(slots=True)
class Exploit:
    """PBT's exploit of a running trial, applied once its attempt ends."""

    config: msgspec.Raw
    staged: str  # the copy of the donor's checkpoint ("" for none)
    iteration: int
    time_total_s: float


class Interner:
    """One copy of the environments and ``sys.path`` that experiments have in common.

    A user's environment is most of what an experiment costs the daemon once
    its trials are archived (5 KB and more), and a script that calls ``fit()``
    a thousand times sends the same one a thousand times. Nothing changes a
    spec's ``env`` or ``sys_path`` after submit (trials copy them).
    """

    def __init__(self) -> None:
        self._envs: dict[int, dict[str, str]] = {}
        self._paths: dict[int, list[str]] = {}

    def share(self, spec: ExperimentSpec) -> None:
        spec.env = self.share_env(spec.env)
        spec.sys_path = self.share_path(spec.sys_path)

    def share_env(self, env: dict[str, str]) -> dict[str, str]:
        return _shared(self._envs, hash(frozenset(env.items())), env)

    def share_path(self, path: list[str]) -> list[str]:
        return _shared(self._paths, hash(tuple(path)), path)


def _shared(cache: dict[int, _T], key: int, value: _T) -> _T:
    held = cache.get(key)
    if held is not None and held == value:
        return held
    cache[key] = value
    return value


@dataclass
class State:
    experiments: dict[str, Experiment] = field(default_factory=dict)
    exploits: dict[str, Exploit] = field(default_factory=dict)  # by trial id
    exp_seq: int = 0  # experiments accepted so far: their order (first come, first served)
    shared: Interner = field(default_factory=Interner)
    # The pickled trainable of each unfinished experiment, as submitted: recovery puts
    # its file in the results folder back if it is gone or was replaced.
    trainables: dict[str, bytes] = field(default_factory=dict)

    def locate(self, trial_id: str) -> tuple[Experiment, int] | None:
        """The experiment and index of a trial this daemon has, in memory or archived."""
        parts = split_trial_id(trial_id)
        if parts is None:
            return None
        exp = self.experiments.get(parts[0])
        if exp is None or parts[1] >= len(exp.trials):
            return None
        return exp, parts[1]

    def trial(self, trial_id: str) -> Trial | None:
        """A trial held in memory (unfinished, or finished and not archived)."""
        found = self.locate(trial_id)
        return None if found is None else found[0].trials[found[1]]

    def is_archived(self, trial_id: str) -> bool:
        """Whether ``trial_id`` is a finished trial kept on disk (reads nothing)."""
        found = self.locate(trial_id)
        return found is not None and found[0].trials[found[1]] is None

    def trials_in_memory(self) -> int:
        return sum(
            len(e.trials) - (e.archive.count if e.archive is not None else 0)
            for e in self.experiments.values()
        )

    def unfinished(self) -> Iterator[Experiment]:
        return (e for e in self.experiments.values() if not e.done)

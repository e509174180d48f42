"""Which of an experiment's queued trials an admission pass considers, and in what order.

The trials of an experiment are grouped by what they ask for (a *kind*). A pass
tries the biggest kind first (a big trial is the hardest to place later; small
ones fill the gaps at the end), among equally big kinds the one that best uses
what is free, and queue order within a kind. It looks at the first
``LOOKAHEAD`` queued trials, so a deep queue costs no more than a short one.

Most experiments ask the same for every trial. The catalog knows every kind an
experiment ever had (it reads only the trials added since it last looked), and
for an experiment of one kind it walks the queue from the front, no window to
build; a mixed experiment's window is kept from pass to pass while its queue is
unchanged, which is what many experiments queued behind a full machine are.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .ledger import Request
from .model import Experiment, Trial

LOOKAHEAD = 256  # queued trials of a mixed experiment a pass looks at

Key = tuple[object, ...]


class Kind:
    """Trials of one experiment that ask for the same, in queue order."""

    __slots__ = ("_next", "_trials", "request", "size")

    def __init__(self, request: Request, size: float, trials: Iterator[Trial]) -> None:
        self.request = request
        self.size = size
        self._trials = trials
        self._next: Trial | None = next(trials, None)

    def first(self) -> Trial | None:
        return self._next

    def skip(self) -> None:
        self._next = next(self._trials, None)

    def drop(self) -> None:
        """Nothing of this kind fits for the rest of the pass."""
        self._next = None


class Candidates:
    """One experiment's kinds for one pass, and the trials the pass took from it."""

    __slots__ = ("exp", "kinds", "taken")

    def __init__(self, exp: Experiment, kinds: list[Kind]) -> None:
        self.exp = exp
        self.kinds = kinds  # biggest first
        self.taken: set[Trial] = set()

    def best(self, fit: Callable[[Request], float]) -> Kind | None:
        """The kind to try next: the biggest, then the best fitting; None when none is left."""
        live = [k for k in self.kinds if k.first() is not None]
        if len(live) < 2:
            return live[0] if live else None
        top = [k for k in live if k.size == live[0].size]
        return top[0] if len(top) == 1 else max(top, key=lambda k: fit(k.request))


@dataclass(slots=True)
class _Entry:
    seen: int = 0  # how many of exp.trials the kinds below cover
    kinds: dict[Key, Request] = field(default_factory=dict)
    # The window of a mixed experiment, and the queue it was taken from.
    window: list[tuple[Request, list[Trial]]] = field(default_factory=list)
    shape: tuple[object, ...] = ()


class Catalog:
    """The kinds of every experiment, kept from pass to pass."""

    def __init__(self, size: Callable[[Request], float]) -> None:
        self._size = size
        self._entries: dict[Experiment, _Entry] = {}
        self._users: dict[Key, tuple[Request, set[Experiment]]] = {}  # kind -> who asks so

    def add(self, exp: Experiment) -> None:
        self._entry(exp)

    def forget(self, exp: Experiment) -> None:
        entry = self._entries.pop(exp, None)
        for key in entry.kinds if entry else ():
            users = self._users[key][1]
            users.discard(exp)
            if not users:
                del self._users[key]

    def refresh(self, exp: Experiment) -> None:
        """Learn the kinds of trials added since last time (an open-ended experiment)."""
        self._entry(exp)

    def all_kinds(self) -> list[Request]:
        """One request per kind any experiment has."""
        return [request for request, _ in self._users.values()]

    def kind_count(self) -> int:
        return len(self._users)

    def keys(self, exp: Experiment) -> list[Key]:
        """The kinds a pass would try for ``exp`` (to skip it when all are blocked)."""
        entry = self._entry(exp)
        if len(entry.kinds) == 1:
            return list(entry.kinds)
        return [request.key for request, _ in self._window(exp, entry)]

    def candidates(self, exp: Experiment) -> Candidates:
        entry = self._entry(exp)
        if len(entry.kinds) == 1:
            (request,) = entry.kinds.values()
            kinds = [Kind(request, self._size(request), iter(exp.queue))]
        else:
            groups = self._window(exp, entry)
            kinds = [Kind(r, self._size(r), iter(ts)) for r, ts in groups]
            kinds.sort(key=lambda k: -k.size)
        return Candidates(exp, kinds)

    def _entry(self, exp: Experiment) -> _Entry:
        entry = self._entries.get(exp)
        if entry is None:
            entry = self._entries[exp] = _Entry()
        if entry.seen < len(exp.trials):  # trials were added: learn their kinds
            for trial in itertools.islice(exp.trials, entry.seen, None):
                if trial is not None and trial.request.key not in entry.kinds:
                    entry.kinds[trial.request.key] = trial.request
                    self._users.setdefault(trial.request.key, (trial.request, set()))[1].add(exp)
            entry.seen = len(exp.trials)
        return entry

    def _window(self, exp: Experiment, entry: _Entry) -> list[tuple[Request, list[Trial]]]:
        queue = exp.queue
        shape = (len(queue), queue[0], queue[-1]) if queue else (0,)
        if shape != entry.shape:  # the queue changed since the window was taken
            groups: dict[Key, tuple[Request, list[Trial]]] = {}
            for trial in itertools.islice(queue, LOOKAHEAD):
                group = groups.get(trial.request.key)
                if group is None:
                    group = groups[trial.request.key] = (trial.request, [])
                group[1].append(trial)
            entry.window, entry.shape = list(groups.values()), shape
        return entry.window


def remove_taken(exp: Experiment, taken: set[Trial]) -> None:
    """Take the started trials out of the queue (they are near its front)."""
    left = set(taken)
    positions = []
    for pos, trial in enumerate(exp.queue):
        if trial in left:
            positions.append(pos)
            left.discard(trial)
            if not left:
                break
    for pos in reversed(positions):
        del exp.queue[pos]

"""New work: what an experiment must pass to be accepted, and the trials it brings.

An experiment's resources, name, folder and grid plan are checked before it is
accepted. Refusals name the resource, what was asked and what exists; the
folder checks say what stands in the way in words a user can act on. Trials
come listed (Submit, AddTrials) or are made from a grid's plan ahead of
admission (``feed``).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from pathlib import Path

import msgspec
import structlog
from tuned_client import protocol as p
from tuned_client import safedir
from tuned_client.gridplan import Grid

from ..core.ledger import ImpossibleRequest, Ledger, Request, ResourceError, parse_request
from ..core.model import Experiment, trainable_file
from ..core.model import trial_id as make_trial_id
from ..core.records import Submitted
from ..errors import Refused
from ..run.launcher import ClusterLauncher, Launcher
from ..store.folderlock import FolderLocks, take
from ..store.private import write_private
from ..store.results import experiment_dir, safe_component
from .base import DaemonBase

log = structlog.get_logger("tuned.daemon")

# A grid's trials made ahead of admission: what a pass of the scheduler looks at
# (``candidates.LOOKAHEAD``), so a deep queue admits as a full one would.
READY = 256


def request_for(
    ledger: Ledger, launcher: Launcher, bundles: list[dict[str, float]], what: str
) -> Request:
    """The parsed request, or a refusal if this machine (or cluster) can never run it."""
    try:
        request = parse_request(bundles)
        ledger.check(request)
        if isinstance(launcher, ClusterLauncher):
            launcher.check(request)
    except ImpossibleRequest as exc:
        raise Refused("impossible_resources", f"{what}: {exc}") from exc
    except ResourceError as exc:
        raise Refused("bad_request", f"{what}: {exc}") from exc
    return request


def check_trials(
    ledger: Ledger, launcher: Launcher, default: list[dict[str, float]], trials: list[p.TrialSpec]
) -> None:
    """Every trial's resources, each distinct bundle list checked once."""
    request_for(ledger, launcher, default, "experiment resources")
    seen: set[bytes] = set()
    for t in trials:
        if not t.resources:
            continue
        key = msgspec.msgpack.encode(t.resources)
        if key not in seen:
            seen.add(key)
            request_for(ledger, launcher, t.resources, f"trial {t.tag}")


def folder_for(
    spec: p.ExperimentSpec, live: Collection[Path], locks: FolderLocks
) -> tuple[Path, int]:
    """Make (or reuse) the experiment's folder and lock it; a made-up name moves on if taken.

    Two live experiments in one folder would share its state file: a chosen name
    whose folder a live experiment holds (``store.folderlock``, whichever daemon
    and whatever path) is refused, saying which one and how to go on; a made-up
    name (two scripts started in the same second) takes the next suffix.
    ``spec.name`` becomes the folder's name. Returns the folder and its lock.
    """
    if not spec.name or safe_component(spec.name) != spec.name or spec.name in (".", ".."):
        raise Refused(
            "bad_request",
            f"experiment name {spec.name!r} must be one folder name "
            "(letters, digits, '_', '-', '.', '=', ','; no '/' or '..')",
        )
    root = Path(spec.storage_path).expanduser()
    names = [spec.name]
    if spec.name_generated:
        names += [f"{spec.name}_{n}" for n in range(2, 100)]
    for name in names:
        if root / name in live:
            continue  # ours, known without a look at the disk
        try:
            path = experiment_dir(root, name)
        except safedir.UnsafeFolder as exc:
            raise Refused("refused", str(exc)) from exc
        except OSError as exc:
            raise Refused(
                "bad_request", f"storage_path {str(root)!r} is not writable: {exc.strerror}"
            ) from exc
        lock = take(path)
        if lock is not None:
            spec.name = name
            return path, lock
    raise Refused("refused", folder_taken(root / spec.name, locks))


def folder_taken(path: Path, locks: FolderLocks) -> str:
    holder = locks.holder(path)
    who = f"experiment {holder}" if holder else "an experiment of another tuned daemon"
    return (
        f"{who} is still running in the folder {path}: give this one another name "
        "(RunConfig(name=...)), or wait for it to end"
        + (f" (`tuned cancel {holder}` ends it now)" if holder else "")
    )


def check_resumes(path: Path, trials: list[p.TrialSpec]) -> None:
    """A trial that goes on where it was (``TrialResume``) stays in the experiment's folder.

    Its folder must be one of the experiment folder's, and its checkpoint one of
    that folder's: the daemon cuts files there back and hands the checkpoint on.
    """
    root = path.resolve()
    for t in trials:
        at = t.resume
        if at is None:
            continue
        folder = Path(at.dir).resolve()
        if folder.parent != root:
            raise Refused(
                "bad_request", f"trial {t.tag}: {at.dir!r} is not a trial folder of {path}"
            )
        if at.checkpoint and folder not in Path(at.checkpoint).resolve().parents:
            raise Refused(
                "bad_request", f"trial {t.tag}: checkpoint {at.checkpoint!r} is not in {at.dir}"
            )


def check_grid(spec: p.ExperimentSpec) -> None:
    """A grid plan that can make its trials; the first it makes follows the listed ones."""
    if spec.grid is None:
        return
    if spec.open_ended:
        raise Refused("bad_request", "an experiment takes trials from a grid or from AddTrials")
    spec.grid.first_trial = len(spec.trials)
    try:
        grid = Grid(spec.grid)
        if grid.total > len(spec.trials):  # its first trial: every one has its shape
            _, config = grid.trial(len(spec.trials))
            if not isinstance(msgspec.msgpack.decode(config), dict):
                raise ValueError("its configs are not dicts")
    except (ValueError, TypeError, IndexError, KeyError, msgspec.DecodeError) as exc:
        raise Refused("bad_request", f"the experiment's grid plan is not usable: {exc}") from None


def new_experiment_id(taken: Collection[str], path: Path) -> str:
    """An id no experiment of this daemon has, nor any trainable file in ``path``."""
    while True:
        candidate = secrets.token_hex(3)[:5]
        if candidate not in taken and not trainable_file(path, candidate).exists():
            return candidate


class Intake(DaemonBase):
    """Submit, AddTrials, CloseExperiment, and the trials grids make."""

    def submit(self, spec: p.ExperimentSpec) -> p.Accepted:
        if self.stopping:
            raise Refused("refused", "the daemon is shutting down")
        if self.journal.failed is not None:
            raise self.journal_refusal()
        check_trials(self.ledger, self.launcher, spec.resources, spec.trials)
        check_grid(spec)
        path, lock = folder_for(spec, {e.path for e in self.state.unfinished()}, self.locks)
        exp_id = new_experiment_id(self.experiments, path)
        self.locks.keep(exp_id, path, lock)
        try:
            check_resumes(path, spec.trials)
        except Refused:
            self.locks.release(exp_id)
            raise
        if spec.trainable:
            try:
                write_private(trainable_file(path, exp_id), spec.trainable)
            except OSError as exc:
                self.locks.release(exp_id)
                raise Refused(
                    "refused", f"cannot write the trainable to {path}: {exc.strerror or exc}"
                ) from exc
        ids = [make_trial_id(exp_id, index) for index in range(len(spec.trials))]
        record = Submitted(exp_id, str(path), ids, spec)
        self.journal.append(record)
        if self.journal.failed is not None:  # the disk filled up just now: take none of it
            self.locks.release(exp_id)
            raise self.journal_refusal()
        exp = self.accept(record, journalled=True)
        self.emit(
            p.ExperimentAccepted,
            experiment_id=exp_id,
            name=spec.name,
            path=str(path),
            num_trials=exp.total,
            metric=spec.metric,
            mode=spec.mode,
        )
        for trial in exp.live():
            self.emit_queued(trial)
        ids += self.feed(exp)
        self.scheduler.add(exp)
        self.wake()
        self.after_submit(exp)
        log.info("experiment accepted", experiment=exp_id, name=spec.name, trials=exp.total)
        return p.Accepted(
            experiment_id=exp_id,
            path=str(path),
            trial_ids=ids,
            capacity=self.capacity_totals(),
            total=exp.total,
        )

    def journal_refusal(self) -> Refused:
        failed = self.journal.failed
        return Refused(
            "refused",
            f"the daemon cannot write its journal in {self.settings.state_dir} "
            f"({failed.strerror or failed if failed else 'unknown error'}); it finishes what "
            "it has but takes no new work until there is room and it is restarted",
        )

    def add_trials(self, exp_id: str, specs: list[p.TrialSpec]) -> p.TrialsAdded:
        exp = self.experiment(exp_id)
        if exp.closed or exp.grid is not None:
            raise Refused("bad_request", f"experiment {exp_id} takes no more trials")
        check_trials(self.ledger, self.launcher, exp.spec.resources, specs)
        ids = [self.add(exp, spec.tag, spec.config, spec.resources) for spec in specs]
        self.wake()
        return p.TrialsAdded(experiment_id=exp_id, trial_ids=ids)

    def add(
        self, exp: Experiment, tag: str, config: msgspec.Raw, resources: list[dict[str, float]]
    ) -> str:
        """A new trial at the end of ``exp``'s queue (its ``TrialQueued`` makes it); its id."""
        trial_id = make_trial_id(exp.id, len(exp.trials))
        self.emit(
            p.TrialQueued,
            experiment_id=exp.id,
            trial_id=trial_id,
            name=f"{exp.spec.trainable_name}_{trial_id}",
            config=config,
            tag=tag,
            resources=resources or exp.spec.resources,
        )
        return trial_id

    def feed(self, exp: Experiment) -> list[str]:
        """Make grid trials until ``READY`` wait in ``exp``'s queue (or its grid is done).

        As Ray's ``BasicVariantGenerator`` makes trials as the experiment needs
        them, so a grid of a million points costs its plan, not a million trials,
        and no turn of the loop makes more than ``READY``. Their ids.
        """
        grid = exp.grid
        if grid is None or exp.cancelled or exp.interrupted or exp.done:
            return []
        want = min(READY - len(exp.queue), exp.to_make)
        ids = []
        for _ in range(want):
            try:
                tag, config = grid.trial(len(exp.trials))
            except (ValueError, TypeError, IndexError, KeyError, msgspec.DecodeError) as exc:
                # Checked at submit but for each piece's contents: a client that sent
                # bytes no decoder takes ends its grid here, not the daemon.
                log.error("grid plan unreadable", experiment=exp.id, error=str(exc))
                self.control("close", exp.id)
                self.maybe_finish(exp)
                break
            ids.append(self.add(exp, tag, config, []))
        return ids

    def feed_grids(self) -> bool:
        """Before each admission pass: every grid whose queue runs short makes more.

        Only the scheduler's open experiments can: a pass costs what is live, not
        every experiment of the daemon's history.
        """
        growing = False
        for exp in self.scheduler.open_experiments():
            if exp.to_make and len(exp.queue) < READY:
                self.feed(exp)
            growing = growing or exp.to_make > 0
        return growing

    def close_experiment(self, exp_id: str) -> None:
        exp = self.experiment(exp_id)
        self.control("close", exp_id)
        self.maybe_finish(exp)

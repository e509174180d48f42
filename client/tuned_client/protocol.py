"""The one wire contract between clients, trial workers and the daemon.

Every message is a msgspec Struct in a tagged union, encoded as msgpack and sent
in a frame with a 4-byte big-endian length prefix (see ``framing``). The daemon
imports this module; the client never imports the daemon.

Evolution rules (tests/test_protocol.py keeps golden frames of each rule):
new fields get defaults and go last, tags never change meaning, and
``PROTOCOL_VERSION`` is bumped only when an old peer could misread a frame.

User values (configs and metrics) may hold any Python object (the seed's
trainable returns ``...``). They travel as msgpack where msgpack can carry them,
and as an extension (code ``EXT_PICKLED``) holding ``[repr, cloudpickle]`` where
it cannot: the daemon never unpickles user objects, it shows their ``repr``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1
# A frame whose announced length is above this is refused before its body is read.
MAX_FRAME_BYTES = 64 * 1024 * 1024

TrialStatus = Literal["PENDING", "RUNNING", "TERMINATED", "ERROR"]
# The error of a trial that ended unfinished: ``Cancel`` (Ctrl-C), or its experiment
# interrupted because the script driving it went away. ``Tuner.restore`` resumes both.
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
ErrorCode = Literal[
    "bad_request",
    "incompatible",
    "impossible_resources",
    "not_found",
    "refused",
    "internal",
]


class _Req(msgspec.Struct, tag_field="op", forbid_unknown_fields=False, omit_defaults=True):
    """Base of requests sent to the daemon."""


class _Msg(msgspec.Struct, tag_field="kind", forbid_unknown_fields=False, omit_defaults=True):
    """Base of messages sent by the daemon (replies and events)."""


# ---------------------------------------------------------------- experiment specs


class TrialResume(msgspec.Struct, omit_defaults=True):
    """Where a trial that ran before goes on (``Tuner.restore`` of a lost experiment).

    Its folder (inside the experiment's), its latest checkpoint (in that folder;
    "" for none: it starts over there), the iteration and time that checkpoint
    was taken at, and the sizes of ``result.json`` and ``progress.csv`` just after
    its row: the files are cut back there, so no row is written twice.
    """

    dir: str
    checkpoint: str = ""
    iteration: int = 0
    time_total_s: float = 0.0
    result_bytes: int = 0
    progress_bytes: int = 0


class TrialSpec(msgspec.Struct, omit_defaults=True):
    """One trial as the client generated it."""

    tag: str  # "0_model_id=model_0": index and resolved variables, as Ray names trials
    config: msgspec.Raw  # msgpack of the resolved config (user values, see module doc)
    resources: list[dict[str, float]] = []  # bundles; empty means the experiment default
    resume: TrialResume | None = None  # it ran before: where it goes on


GRID_CHUNK = 4096  # a grid axis' values travel in msgpack arrays of this many


class GridAxis(msgspec.Struct, omit_defaults=True):
    """One ``grid_search`` of a grid plan: where it is in the config, and its values.

    The values (strings, numbers, booleans, None) come in msgpack arrays of
    ``GridPlan.chunk`` each, the last one shorter: the daemon decodes the piece
    it makes trials from, not a million values at submit.
    """

    path: list[Any]  # the keys from the config's top down to the value
    values: list[msgspec.Raw]


class GridPlan(msgspec.Struct, omit_defaults=True):
    """A grid the daemon expands into trials as its queue needs them (``gridplan``).

    Sent instead of one ``TrialSpec`` per grid point when the space is a plain
    grid (no random domains, every value a string, number, boolean or None):
    a million-point grid then costs its axes, not a million specs, on the wire
    and in the daemon. Its trials are exactly those ``generate_variants`` makes.
    """

    skeleton: msgspec.Raw  # the config, None at each axis' path
    axes: list[GridAxis]  # in Ray's order: the first changes fastest
    repeats: int = 1  # num_samples: the whole grid this many times
    start: int = 0  # the first point trials are made from (a restore goes on from it)
    first_trial: int = 0  # set by the daemon: the first trial index made from the plan
    chunk: int = GRID_CHUNK  # values per piece of each axis
    # In ``experiment_state.msgpack`` only: the axes' values are left out of it (it is
    # rewritten as trials change) and kept, written once, in this file beside it.
    values_file: str = ""


class ExperimentSpec(msgspec.Struct, omit_defaults=True):
    """Everything the daemon needs to run an experiment without its client."""

    name: str
    storage_path: str
    trainable_name: str
    trainable: bytes  # cloudpickle of the function (empty for command trials)
    python: str  # the client's interpreter: trials run with it
    cwd: str
    sys_path: list[str]
    env: dict[str, str]
    trials: list[TrialSpec]
    resources: list[dict[str, float]] = msgspec.field(default_factory=lambda: [{"cpu": 1.0}])
    max_concurrent_trials: int = 0  # 0: no limit but the ledger
    max_failures: int = 0
    fail_fast: bool = False
    trial_timeout_s: float = 0.0  # 0: none
    time_budget_s: float = 0.0  # 0: none
    stop: dict[str, float] = {}
    priority: int = 0
    command: list[str] = []  # a command trial's argv template ({name} filled from config)
    open_ended: bool = False  # more trials may come with AddTrials until CloseExperiment
    # CheckpointConfig: 0 keeps every checkpoint; the latest is always kept (resume).
    num_to_keep: int = 0
    checkpoint_score_attribute: str = ""  # "": the most recent are the best
    checkpoint_score_order: str = "max"
    # TuneConfig.metric/mode: which trial is best so far, for `tuned tail/status` and the page.
    metric: str = ""
    mode: str = ""  # "min", "max" or "" (none given)
    # The name was made up (a trainable's name and the time, as Ray does), not chosen:
    # if a live experiment has that folder, the daemon adds a suffix instead of refusing.
    name_generated: bool = False
    # Ray's rule: a trial does not run past a result until the client (its scheduler,
    # searcher, stopper) has decided on it. Set only when something decides; plain
    # FIFO sweeps stay pipelined.
    decide_results: bool = False
    # A plain grid's trials, described (``trials`` then lists none, or the restored ones).
    grid: GridPlan | None = None


# ---------------------------------------------------------------- requests


class Hello(_Req, tag="hello"):
    protocol: int
    client: str = ""
    pid: int = 0


class Submit(_Req, tag="submit"):
    experiment: ExperimentSpec


class AddTrials(_Req, tag="add_trials"):
    experiment_id: str
    trials: list[TrialSpec]


class CloseExperiment(_Req, tag="close_experiment"):
    experiment_id: str


class Subscribe(_Req, tag="subscribe"):
    experiment_id: str = ""  # "": every experiment
    since: int = -1  # -1: from now; N: every event with seq > N still held
    # This connection drives the experiment (its searcher, scheduler or stopper run
    # here): a trial waits after each report for its ``Decide``. When the last
    # driver's connection closes, the daemon waits a grace period for one to come
    # back, then interrupts the experiment (``ExperimentFinished.interrupted``).
    decide: bool = False


class Cancel(_Req, tag="cancel"):
    target: str  # experiment id or trial id


class GetStatus(_Req, tag="status"):
    pass


class GetExperiment(_Req, tag="get_experiment"):
    """Ask for an experiment and its trials, a page at a time (``Connection.get_experiment``).

    A reply holds the trials from ``start`` that fit in ``page_bytes`` (0: as many
    as a frame holds); its ``next_start`` says where the next page begins.
    """

    experiment_id: str
    start: int = 0
    page_bytes: int = 0


class Shutdown(_Req, tag="shutdown"):
    pass


class WorkerHello(_Req, tag="worker_hello"):
    """First frame of a trial process: it proves it is the trial the daemon started."""

    protocol: int
    trial_id: str
    token: str


class SpareHello(_Req, tag="spare_hello"):
    """First frame of a spare forked ahead of need by a zygote: it waits for an Assignment.

    ``token`` is the one the daemon gave that zygote (``pool`` names it); the
    daemon trusts the kernel's word (SO_PEERCRED) for the spare's pid.
    """

    protocol: int
    pool: str
    token: str


class Report(_Req, tag="report"):
    """A result from inside a trial.

    Acknowledged (``ReportAck``) only when the answer matters: a checkpoint, once
    journalled and synced, or a request to stop. The daemon's answer to
    ``TrialExit`` confirms every report before it.
    """

    seq: int
    metrics: msgspec.Raw  # msgpack dict (user values)
    checkpoint: str = ""  # folder already copied into the trial dir, "" if none
    wait: bool = False  # the trial waits for this report's ack (its experiment decides)


class TrialExit(_Req, tag="trial_exit"):
    """Last word of a trial process before it exits."""

    ok: bool
    error: str = ""  # one line: "ValueError: bad lr"
    traceback: str = ""
    stopped: bool = False  # it ended because a stop criterion was met


class GetTrial(_Req, tag="get_trial"):
    """One trial's folder and state (``tuned logs`` finds its stdout/stderr with it)."""

    trial_id: str


class StopTrial(_Req, tag="stop_trial"):
    """End a trial early as TERMINATED (a stop rule or scheduler decided it is done).

    Its next ``ReportAck`` carries ``stop=True``; the trial ends cleanly.
    """

    trial_id: str


class Decide(_Req, tag="decide"):
    """The client's decision on a result the trial waits on (``TrialResult.decide``).

    ``seq`` is that event's sequence number; the daemon acks the trial's report
    with ``stop``. No reply: a decision for a trial that no longer waits is dropped.
    """

    trial_id: str
    seq: int
    stop: bool = False


class ResumeExperiment(_Req, tag="resume_experiment"):
    """``Tuner.restore``: run the given trials of a finished experiment again.

    ``resume`` ones continue from their latest checkpoint, ``restart`` ones from scratch.
    ``reopen``: an open-ended (steered) experiment takes ``AddTrials`` again, until
    the restored searcher sends ``CloseExperiment``. ``path``: the experiment's
    folder was moved there (the trials' folders and checkpoints with it).
    ``trainable``: the restoring script's trainable, run from now on (as Ray's).
    """

    experiment_id: str
    resume: list[str] = []
    restart: list[str] = []
    reopen: bool = False  # it takes trials again (AddTrials): its searcher goes on
    path: str = ""
    trainable: bytes = b""


class RestartTrial(_Req, tag="restart_trial"):
    """PBT's exploit: run a trial again with ``config``, from a copy of ``checkpoint``.

    The current attempt is stopped at its next report (as ``StopTrial``); the
    checkpoint folder (another trial's, in the same experiment) is copied into
    the trial's own folder at once, and the trial is queued again from it.
    """

    trial_id: str
    config: msgspec.Raw
    checkpoint: str = ""  # "": restart from scratch with the new config
    # ResourceChangingScheduler: the bundles of its next attempt; []: keep the trial's own
    resources: list[dict[str, float]] = []


Request = (
    Hello
    | Submit
    | AddTrials
    | CloseExperiment
    | Subscribe
    | Cancel
    | GetStatus
    | GetExperiment
    | Shutdown
    | WorkerHello
    | SpareHello
    | Report
    | TrialExit
    | GetTrial
    | StopTrial
    | ResumeExperiment
    | RestartTrial
    | Decide
)

# ---------------------------------------------------------------- replies


class Welcome(_Msg, tag="welcome"):
    protocol: int
    daemon_version: str
    pid: int


class Error(_Msg, tag="error"):
    code: ErrorCode
    message: str


class Ok(_Msg, tag="ok"):
    pass


class Accepted(_Msg, tag="accepted"):
    experiment_id: str
    path: str
    trial_ids: list[str]
    capacity: dict[str, float] = {}  # the ledger's totals: "cpu", "gpu", "memory", custom
    # The trials it will have: ``trial_ids`` lists those made so far, a grid makes the
    # rest as its queue needs them (their ``TrialQueued`` events name them). 0: as listed.
    total: int = 0


def trial_count(accepted: Accepted) -> int:
    """How many trials an accepted experiment will have (its grid's, not only those made)."""
    return max(accepted.total, len(accepted.trial_ids))


class TrialsAdded(_Msg, tag="trials_added"):
    experiment_id: str
    trial_ids: list[str]


class Assignment(_Msg, tag="assignment"):
    """What a trial process needs to run: the answer to WorkerHello, or a spare's trial."""

    trial_id: str
    experiment_id: str
    trial_name: str
    trial_dir: str
    experiment_dir: str
    trainable_path: str
    sys_path: list[str]
    config: msgspec.Raw
    checkpoint: str = ""  # latest checkpoint folder to resume from, "" for a fresh start
    iteration: int = 0  # training_iteration already reported before this attempt
    time_total_s: float = 0.0
    attempt: int = 0
    stop: dict[str, float] = {}
    resources: list[dict[str, float]] = []  # per bundle, as granted (gpu ids in "gpu_ids")
    tag: str = ""  # the experiment_tag of the trial ("0_model_id=model_0")
    # For a spare (forked before its trial was known): what to become before running.
    env: dict[str, str] | None = None  # the whole environment, replacing the spare's
    cwd: str = ""
    stdout: str = ""  # files to append the trial's output to
    stderr: str = ""
    checkpoint_index: int = -1  # the next checkpoint folder's number, -1: look in trial_dir
    decide: bool = False  # wait for the daemon's ack after each report (decide_results)


class ReportAck(_Msg, tag="report_ack"):
    seq: int
    stop: bool = False  # the daemon asks the trial to stop (cancel, scheduler)


class GpuShare(msgspec.Struct, omit_defaults=True):
    id: str
    name: str = ""
    used: float = 0.0  # share of the device handed out, 0..1
    memory_used: int = 0
    memory_total: int = 0
    utilization: float = 0.0  # percent of time a kernel ran over the last sample (NVML)


class ResourceUse(msgspec.Struct):
    name: str
    used: float
    total: float


class TrialRow(msgspec.Struct, omit_defaults=True):
    """A trial as the status view shows it."""

    trial_id: str
    experiment_id: str
    name: str
    status: TrialStatus
    pid: int = 0
    started_at: float = 0.0
    iteration: int = 0
    time_total_s: float = 0.0
    resources: dict[str, float] = {}
    gpu_ids: str = ""
    cpu_percent: float = 0.0
    rss: int = 0
    attempt: int = 0
    gpu_memory: int = 0  # device memory held by the trial's processes


class ExperimentRow(msgspec.Struct, omit_defaults=True):
    experiment_id: str
    name: str
    path: str
    counts: dict[str, int]
    finished: bool = False
    started_at: float = 0.0  # when it was accepted (its ETA counts from here)
    metric: str = ""
    mode: str = ""
    # The script that drove it went away: no new trials, running ones stop at their
    # next report; ``Tuner.restore`` resumes it.
    interrupted: bool = False


class StatusReply(_Msg, tag="status"):
    pid: int
    version: str
    socket: str
    state_dir: str
    started_at: float
    resources: list[ResourceUse]
    gpus: list[GpuShare]
    experiments: list[ExperimentRow]
    running: list[TrialRow]
    # Trials the daemon holds in memory: the unfinished ones (finished ones are on disk).
    trials_in_memory: int = 0
    # Bytes of events held: the recent history, subscribers' buffers and their writes.
    event_bytes: int = 0
    # Still reading its journal after a start: the state shown is partial, and requests
    # other than status wait until it is done.
    recovering: bool = False


class TrialInfo(msgspec.Struct, omit_defaults=True):
    """A finished or unfinished trial of an experiment, for building results."""

    trial_id: str
    tag: str
    name: str
    path: str
    status: TrialStatus
    config: msgspec.Raw
    # empty when none yet (msgspec cannot decode ``Raw | None``: a Raw is never optional)
    last_result: msgspec.Raw = msgspec.Raw(b"")
    error: str = ""
    traceback: str = ""
    checkpoint: str = ""


class ExperimentReply(_Msg, tag="experiment"):
    experiment_id: str
    name: str
    path: str
    finished: bool
    trials: list[TrialInfo]
    seq: int = 0  # the daemon's last event seq when this was taken: subscribe since it
    cancelled: bool = False
    started_at: float = 0.0
    metric: str = ""
    mode: str = ""
    next_start: int = 0  # more trials from this index on (GetExperiment.start); 0: no more
    interrupted: bool = False  # its driver went away (``ExperimentRow.interrupted``)
    to_make: int = 0  # trials its grid will still make (``ExperimentSpec.grid``), not listed


class TrialReply(_Msg, tag="trial"):
    """Answer to GetTrial: where the trial's files are and how it stands."""

    trial_id: str
    experiment_id: str
    name: str
    status: TrialStatus
    path: str = ""  # "" until its first attempt starts
    pid: int = 0
    attempt: int = 0
    error: str = ""


# ---------------------------------------------------------------- events


class _Event(_Msg):
    """Every event carries the daemon-wide sequence number and its time."""

    seq: int
    ts: float
    experiment_id: str


class ExperimentAccepted(_Event, tag="experiment_accepted"):
    name: str
    path: str
    num_trials: int
    metric: str = ""
    mode: str = ""


class TrialQueued(_Event, tag="trial_queued"):
    trial_id: str
    name: str
    config: msgspec.Raw
    attempt: int = 0
    tag: str = ""
    resources: list[dict[str, float]] = []  # the trial's own bundles (journal replay)
    # Queued at the front of its experiment (it ran before: a crash, an exploit), not the back.
    front: bool = False


class TrialStarted(_Event, tag="trial_started"):
    trial_id: str
    pid: int
    attempt: int
    resources: dict[str, float]
    gpu_ids: str = ""
    trial_dir: str = ""


class TrialResult(_Event, tag="trial_result"):
    trial_id: str
    metrics: msgspec.Raw
    decide: bool = False  # the trial waits for a ``Decide`` on this result


class TrialCheckpoint(_Event, tag="trial_checkpoint"):
    trial_id: str
    path: str
    iteration: int
    time_total_s: float = 0.0
    # result.json / progress.csv sizes just after this checkpoint's row: a resumed
    # attempt (retry or daemon restart) cuts the files back there.
    result_bytes: int = 0
    progress_bytes: int = 0
    score: float | None = None  # CheckpointConfig.checkpoint_score_attribute's value


class TrialRetrying(_Event, tag="trial_retrying"):
    trial_id: str
    attempt: int
    error: str
    # False when the attempt was lost through no fault of the trial (the process that
    # forked it died): it runs again without using up one of its max_failures.
    counted: bool = True


class TrialFinished(_Event, tag="trial_finished"):
    trial_id: str
    status: TrialStatus
    error: str = ""
    traceback: str = ""
    timed_out: bool = False


class ExperimentFinished(_Event, tag="experiment_finished"):
    counts: dict[str, int]
    cancelled: bool = False
    interrupted: bool = False  # its driver went away: ``Tuner.restore`` resumes it


class ResourceSnapshot(_Event, tag="resource_snapshot"):
    resources: list[ResourceUse]
    gpus: list[GpuShare]
    running: list[TrialRow] = []  # each running trial's CPU, RSS and GPU memory, sampled now


class Lagged(_Msg, tag="lagged"):
    """The subscriber fell behind its buffer; resume with Subscribe(since=last_seq)."""

    last_seq: int


Event = (
    ExperimentAccepted
    | TrialQueued
    | TrialStarted
    | TrialResult
    | TrialCheckpoint
    | TrialRetrying
    | TrialFinished
    | ExperimentFinished
    | ResourceSnapshot
)

Message = (
    Welcome
    | Error
    | Ok
    | Accepted
    | TrialsAdded
    | Assignment
    | ReportAck
    | StatusReply
    | ExperimentReply
    | TrialReply
    | Lagged
    | Event
)

# ---------------------------------------------------------------- experiment folder

EXPERIMENT_STATE_FILE = "experiment_state.msgpack"
GRID_PLAN_FILE = "grid_plan.msgpack"  # a grid experiment's ``GridPlan``, whole


class ExperimentState(msgspec.Struct, omit_defaults=True):
    """What ``Tuner.restore`` needs, kept by the daemon in the experiment's folder.

    ``spec`` holds no trials (they are in ``trials``) and no trainable (it is
    ``trainable.pkl`` beside this file).
    """

    experiment_id: str
    socket: str
    spec: ExperimentSpec
    trials: list[TrialInfo]
    resources: list[list[dict[str, float]]] = []  # per trial, in ``trials`` order
    finished: bool = False
    cancelled: bool = False
    interrupted: bool = False


# ---------------------------------------------------------------- user values

EXT_PICKLED = 1


class PickledValue:
    """A user object msgpack cannot carry, as seen by a process that must not unpickle it."""

    __slots__ = ("data", "text")

    def __init__(self, text: str, data: bytes) -> None:
        self.text = text
        self.data = data

    def __repr__(self) -> str:
        return self.text


def _enc_user(obj: Any) -> Any:
    import cloudpickle

    payload = msgspec.msgpack.encode([repr(obj), cloudpickle.dumps(obj)])
    return msgspec.msgpack.Ext(EXT_PICKLED, payload)


def as_number(obj: Any) -> int | float | bool | None:
    """A number of another type (numpy, torch, Decimal, Fraction) as Python's, else None.

    Ray Tune compares, logs and plots such metrics as numbers (its JSON logger
    calls ``float()``/``.item()`` on them); so do we, on the wire and on disk.
    """
    import numbers

    if isinstance(obj, bool):
        return bool(obj)
    shape = getattr(obj, "shape", None)
    item = getattr(obj, "item", None)
    if shape is not None and callable(item):  # numpy scalars and arrays, torch tensors
        if len(shape) != 0:
            return None  # an array is not a number: stored as Ray stores it
        try:
            value = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        return value if type(value) in (bool, int, float) else None
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real) or type(obj).__name__ == "Decimal":
        try:
            return float(obj)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _enc_metric(obj: Any) -> Any:
    number = as_number(obj)
    return _enc_user(obj) if number is None else number


def _enc_passthrough(obj: Any) -> Any:
    if isinstance(obj, PickledValue):
        payload = msgspec.msgpack.encode([obj.text, obj.data])
        return msgspec.msgpack.Ext(EXT_PICKLED, payload)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _dec_unpickle(code: int, data: memoryview) -> Any:
    if code != EXT_PICKLED:
        raise ValueError(f"unknown extension type {code}")
    import pickle

    _text, blob = msgspec.msgpack.decode(data, type=tuple[str, bytes])
    return pickle.loads(blob)


def _dec_opaque(code: int, data: memoryview) -> Any:
    if code != EXT_PICKLED:
        raise ValueError(f"unknown extension type {code}")
    text, blob = msgspec.msgpack.decode(data, type=tuple[str, bytes])
    return PickledValue(text, blob)


_user_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_user)
_metrics_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_metric, decimal_format="number")
_opaque_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_passthrough)
_user_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ext_hook=_dec_unpickle)
_opaque_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ext_hook=_dec_opaque)


def pack_user(value: Any) -> msgspec.Raw:
    """Encode a user value (config, metrics) for the wire; any picklable object goes."""
    return msgspec.Raw(_user_encoder.encode(value))


def pack_metrics(value: Any) -> msgspec.Raw:
    """Encode a trial's metrics: numbers of any numeric type become Python numbers."""
    return msgspec.Raw(_metrics_encoder.encode(value))


def unpack_user(raw: msgspec.Raw | bytes) -> Any:
    """Decode a user value in the user's own process (it unpickles)."""
    return _user_decoder.decode(raw)


def unpack_opaque(raw: msgspec.Raw | bytes) -> Any:
    """Decode a user value in the daemon: foreign objects stay opaque ``PickledValue``s."""
    return _opaque_decoder.decode(raw)


def pack_opaque(value: Any) -> msgspec.Raw:
    """Re-encode a value decoded with ``unpack_opaque`` (the daemon adds fields to results)."""
    return msgspec.Raw(_opaque_encoder.encode(value))


def json_default(obj: Any) -> Any:
    """``enc_hook`` for writing user values as JSON on disk: the repr where JSON has no type."""
    if isinstance(obj, PickledValue):
        return obj.text
    return repr(obj)

"""Events as people and scripts read them: one JSON object, or one line of text.

The daemon never unpickles user values, and neither does the CLI: configs and
metrics are decoded opaquely, so an object msgpack cannot carry shows as its
``repr`` (the same text ``result.json`` holds).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from tuned_client import protocol as p

_json = msgspec.json.Encoder(enc_hook=p.json_default)

# Keys the session adds to every result: the text line shows the user's own.
AUTO_KEYS = frozenset(
    {
        "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
        "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
        "time_since_restore", "iterations_since_restore", "experiment_tag",
    }
)  # fmt: skip


def kind_of(event: Any) -> str:
    return str(type(event).__struct_config__.tag)


def as_object(event: Any) -> dict[str, Any]:
    """A plain dict of the event, with its ``kind`` and user values decoded."""
    out: dict[str, Any] = {"kind": kind_of(event)}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, msgspec.Raw):
            value = p.unpack_opaque(value)
        out[name] = value
    return out


def to_json(event: Any) -> str:
    """One NDJSON line (without the newline)."""
    return _json.encode(as_object(event)).decode()


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value) if isinstance(value, str) else str(value)


def _pairs(values: Any, skip: frozenset[str] = frozenset()) -> str:
    if not isinstance(values, dict):
        return str(values)
    return " ".join(f"{k}={_short(v)}" for k, v in values.items() if k not in skip)


def _res(resources: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in resources.items())


def to_text(event: Any) -> str:
    """One line: sequence number, time, who, what."""
    head = f"{event.seq:>6} {time.strftime('%H:%M:%S', time.localtime(event.ts))}"
    if isinstance(event, p.ExperimentAccepted):
        return (
            f"{head} {event.experiment_id} accepted {event.name!r}: "
            f"{event.num_trials} trials in {event.path}"
        )
    if isinstance(event, p.ExperimentFinished):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(event.counts.items()))
        how = "cancelled" if event.cancelled else "finished"
        how = "interrupted" if event.interrupted else how
        return f"{head} {event.experiment_id} {how} ({counts})"
    if isinstance(event, p.ResourceSnapshot):
        used = " ".join(f"{r.name}={r.used:g}/{r.total:g}" for r in event.resources)
        return f"{head} resources {used}"
    trial = getattr(event, "trial_id", "")
    if isinstance(event, p.TrialQueued):
        what = f"queued {_pairs(p.unpack_opaque(event.config))}"
    elif isinstance(event, p.TrialStarted):
        what = f"started pid {event.pid} attempt {event.attempt} [{_res(event.resources)}]"
        if event.gpu_ids:
            what += f" CUDA_VISIBLE_DEVICES={event.gpu_ids}"
    elif isinstance(event, p.TrialResult):
        row = p.unpack_opaque(event.metrics)
        it = row.get("training_iteration", "?") if isinstance(row, dict) else "?"
        what = f"result iter {it} {_pairs(row, AUTO_KEYS)}"
    elif isinstance(event, p.TrialCheckpoint):
        what = f"checkpoint iter {event.iteration} {event.path}"
    elif isinstance(event, p.TrialRetrying):
        what = f"retrying (attempt {event.attempt} failed: {event.error})"
    elif isinstance(event, p.TrialFinished):
        what = event.status
        if event.timed_out:
            what += " (timed out)"
        if event.error:
            what += f": {event.error}"
    else:
        what = kind_of(event)
    return f"{head} {trial} {what}".rstrip()

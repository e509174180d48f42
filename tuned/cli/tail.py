"""``tuned tail``: follow the daemon's event stream.

Three ways to show it: NDJSON (``--json``) for scripts, a line per event when
stdout is a pipe or file, and a live view redrawn in place when it is a
terminal. The daemon may tell a slow reader that it fell behind (``Lagged``);
we then resubscribe from the last sequence number we saw, so nothing is lost
while the daemon still holds those events, and say so on stderr when it doesn't.
The history is bounded by bytes: an experiment whose results were large may be
gone from it when it is tailed, and if it has finished its end is told from the
daemon's state (the line ``ExperimentFinished`` would have printed).
"""

from __future__ import annotations

import argparse
import select
import sys
import time
from collections.abc import Callable
from typing import Any, get_args

from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonError

from . import eventfmt

Handler = Callable[[Any], None]
EVENTS = get_args(p.Event)


class Follower:
    """One subscription, resumed from the last sequence number after ``Lagged``."""

    def __init__(
        self, conn: Connection, experiment_id: str, since: int, running_after: int = -1
    ) -> None:
        self.conn = conn
        self.experiment_id = experiment_id
        self.last = since
        # The experiment ran at this seq (it may have been restored after it had
        # finished): an ExperimentFinished from its history does not end the tail.
        self.running_after = running_after
        self.finished = False
        self.waiting_for_history = False

    def subscribe(self, since: int) -> None:
        # Until an event arrives, a Lagged answer means the daemon no longer holds `since`.
        self.waiting_for_history = since >= 0
        self.conn.send(p.Subscribe(experiment_id=self.experiment_id, since=since))

    def run(self, on_event: Handler, on_tick: Callable[[], None], tick: float) -> None:
        """Deliver events until the experiment ends (or forever without one)."""
        self.subscribe(self.last)
        while not self.finished:
            readable, _, _ = select.select([self.conn.sock], [], [], tick)
            if not readable:
                on_tick()
                continue
            msg = self.conn.recv()
            if isinstance(msg, p.Error):
                raise DaemonError(msg.code, msg.message)
            if isinstance(msg, p.Lagged):
                self._resume(msg.last_seq, on_event)
                continue
            if not isinstance(msg, EVENTS):
                continue
            self.waiting_for_history = False
            if msg.seq <= self.last:
                continue  # a resubscription may repeat what we already have
            self.last = msg.seq
            on_event(msg)
            if self.experiment_id and isinstance(msg, p.ExperimentFinished):
                self.finished = msg.seq > self.running_after

    def _resume(self, last_seq: int, on_event: Handler) -> None:
        if not self.waiting_for_history:
            self.last = max(self.last, last_seq)
            self.subscribe(self.last)
            return
        # The daemon no longer holds what we missed: say so and carry on from now.
        print(
            f"tuned: events after #{self.last} are no longer held by the daemon; "
            "continuing from now",
            file=sys.stderr,
        )
        self.subscribe(-1)
        if self.experiment_id:
            self._check_finished(on_event)

    def _check_finished(self, on_event: Handler) -> None:
        """If the experiment has ended, say how (its end event is gone with the rest)."""
        with Connection.open(self.conn.socket_path, autostart=False, client="tuned-cli") as c:
            reply = c.request(p.GetExperiment(experiment_id=self.experiment_id, page_bytes=1))
            status = c.request(p.GetStatus())
        if not isinstance(reply, p.ExperimentReply) or not reply.finished:
            return
        self.finished = True
        rows = status.experiments if isinstance(status, p.StatusReply) else []
        counts = next((r.counts for r in rows if r.experiment_id == self.experiment_id), {})
        on_event(
            p.ExperimentFinished(
                seq=reply.seq,
                ts=time.time(),
                experiment_id=self.experiment_id,
                counts=counts,
                cancelled=reply.cancelled,
            )
        )


def _writer(out: Any) -> Callable[[str], None]:
    def write(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    return write


def default_since(args: argparse.Namespace, live: bool) -> int:
    """An experiment's whole history by default; with none, from now (or all for the view)."""
    if args.since is not None:
        return int(args.since)
    return 0 if args.experiment or live else -1


def cmd_tail(args: argparse.Namespace, connect: Callable[[], Connection]) -> int:
    out = sys.stdout
    live = not args.json and out.isatty()
    since = default_since(args, live)
    try:
        with connect() as conn:
            running_after = -1
            if args.experiment:
                try:
                    reply = conn.request(
                        p.GetExperiment(experiment_id=args.experiment, page_bytes=1)
                    )
                except DaemonError as exc:
                    raise SystemExit(f"tuned: {exc.message}") from exc
                if isinstance(reply, p.ExperimentReply) and not reply.finished:
                    running_after = reply.seq
            follower = Follower(conn, args.experiment or "", since, running_after)
            if live:
                from .live import LiveView

                view = LiveView(out, args.experiment or "", conn.socket_path)
                try:
                    follower.run(view.on_event, view.on_tick, view.tick)
                finally:
                    view.close()
            else:
                fmt = eventfmt.to_json if args.json else eventfmt.to_text
                write = _writer(out)
                follower.run(lambda ev: write(fmt(ev)), lambda: None, 3600.0)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    except DaemonError as exc:
        raise SystemExit(f"tuned: {exc.message}") from exc
    return 0


def wait_for(conn: Connection, experiment_id: str, quiet: bool = False) -> dict[str, int]:
    """Follow one experiment to its end, a line per event on stderr; its final counts."""
    counts: dict[str, int] = {}

    def on_event(ev: Any) -> None:
        if not quiet:
            print(eventfmt.to_text(ev), file=sys.stderr, flush=True)
        if isinstance(ev, p.ExperimentFinished):
            counts.update(ev.counts)

    started = time.monotonic()
    Follower(conn, experiment_id, 0).run(on_event, lambda: None, 3600.0)
    if not quiet:
        print(f"finished in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return counts

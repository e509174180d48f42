"""The Ray executor: each trial attempt is a Ray task somewhere in a Ray cluster.

``tuned start --executor ray --ray-address ADDRESS`` makes the daemon a Ray
driver. Everything above the launcher is unchanged: the ledger mirrors the
cluster's resources (refreshed as nodes join and leave), so admission,
``max_concurrent_trials``, impossible-request errors and the status view work as
for local trials; trials report to the daemon's socket through a relay actor on
the daemon's node (``tuned.run.ray_remote``), so the journal and the event stream
see them like any other. Ray places each task with the trial's CPUs, GPUs,
memory and custom resources (a placement group when the trial asks for several
bundles) and sets ``CUDA_VISIBLE_DEVICES`` on the node that runs it. A node or
worker that dies ends the attempt as a failure, retried from the trial's last
checkpoint under the experiment's ``max_failures``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from ..config import Settings
from ..core.ledger import SCALE, Bundle, Capacity, ImpossibleRequest, Request, to_units
from .launcher import LaunchSpec, TrialProcess
from .ray_remote import Relay, run_trial

log = structlog.get_logger("tuned.ray")

REFRESH_S = 2.0  # how often the cluster's nodes are read again
# Ray's own bookkeeping resources, never asked for by a trial.
RAY_INTERNAL = ("node:", "accelerator_type:", "object_store_memory")
BUILTIN = {"CPU": "cpu", "GPU": "gpu", "memory": "memory"}


MAX_PACKING_CHECK = 12  # placement groups up to this many bundles are checked exactly


class RayUnavailable(RuntimeError):
    """Ray is not installed or the cluster cannot be reached."""


def ray_resources(bundle: Bundle) -> dict[str, float]:
    """One ledger bundle in Ray's names and units (memory in bytes)."""
    out: dict[str, float] = {}
    if bundle.cpu:
        out["CPU"] = bundle.cpu / SCALE
    if bundle.gpu:
        out["GPU"] = bundle.gpu / SCALE
    if bundle.memory:
        out["memory"] = float(bundle.memory)
    for name, units in bundle.custom.items():
        out[name] = units / SCALE
    return out


def _fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(name, 0.0) >= amount for name, amount in bundle.items())


def _describe(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def _packs(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> bool:
    """Whether the bundles can all be placed on the nodes at once (backtracking, largest first)."""
    order = sorted(bundles, key=lambda b: -sum(b.values()))
    free = [dict(n) for n in nodes]

    def place(i: int) -> bool:
        if i == len(order):
            return True
        for node in free:
            if _fits(order[i], node):
                for k, v in order[i].items():
                    node[k] -= v
                if place(i + 1):
                    return True
                for k, v in order[i].items():
                    node[k] += v
        return False

    return place(0)


def node_capacity(resources: dict[str, float]) -> dict[str, float]:
    """A node's schedulable resources, without Ray's internal ones."""
    return {k: v for k, v in resources.items() if not k.startswith(RAY_INTERNAL)}


def capacity_of(nodes: list[dict[str, float]]) -> Capacity:
    totals: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.items():
            totals[name] = totals.get(name, 0.0) + amount
    custom = {
        name: to_units(amount, resource=name)
        for name, amount in totals.items()
        if name not in BUILTIN and name.lower() not in ("cpu", "gpu", "memory")
    }
    return Capacity(
        cpu=to_units(totals.get("CPU", 0.0), resource="cpu"),
        memory=int(totals.get("memory", 0.0)),
        gpu_ids=tuple(str(i) for i in range(int(totals.get("GPU", 0.0)))),
        custom=custom,
    )


class RayTrial:
    """One trial attempt as a Ray task (pid 0: it is not a local process).

    A trial asking for several bundles first waits for its placement group; a
    signal in the meantime gives the group back and ends the attempt, so
    timeouts and ``tuned cancel`` work while Ray cannot place it yet.
    """

    pid = 0

    def __init__(self, ray: Any, submit: Callable[[Any], Any], pg: Any) -> None:
        self._ray = ray
        self._submit = submit
        self._ref: Any = None
        self._pg = pg
        self._placing: anyio.CancelScope | None = None
        self._code: int | None = None
        self._reason = ""
        self._signalled: signal.Signals | None = None

    async def wait(self) -> int:
        if self._code is None:
            try:
                self._code = await self._run()
            finally:
                if self._code is not None and self._pg is not None:
                    self._ray.util.remove_placement_group(self._pg)
                    self._pg = None
        return self._code

    async def _run(self) -> int:
        if self._ref is None:
            if self._pg is not None and self._signalled is None:
                with anyio.CancelScope() as self._placing:
                    await asyncio.wrap_future(self._pg.ready().future())
                self._placing = None
            if self._signalled is not None:  # stopped before Ray could place it
                return -int(self._signalled)
            self._ref = self._submit(self._pg)
        exc_mod = self._ray.exceptions
        try:
            return int(await asyncio.wrap_future(self._ref.future()))
        except exc_mod.TaskCancelledError:
            return -int(signal.SIGTERM)
        except exc_mod.RayTaskError as exc:  # the task itself raised (not the trial)
            self._reason = f"the trial could not run on the Ray cluster: {exc.cause!r}"
            return 1
        except exc_mod.RayError as exc:  # worker or node died, object lost...
            if self._signalled is None:
                name = type(exc).__name__
                self._reason = f"the Ray worker running the trial died ({name}): {exc}"
            return -int(signal.SIGKILL)

    def signal(self, sig: signal.Signals) -> None:
        """SIGTERM: ``ray.cancel``, the task stops the trial's group with grace; SIGKILL: force."""
        if self._code is not None or sig not in (signal.SIGTERM, signal.SIGKILL):
            return
        self._signalled = sig
        if self._ref is None:
            if self._placing is not None:
                self._placing.cancel()
            return
        self._ray.cancel(self._ref, force=sig == signal.SIGKILL)

    def exit_reason(self, code: int) -> str:
        return self._reason

    @property
    def lost(self) -> str:
        return ""  # a node that died fails the attempt, as in Ray Tune


class RayLauncher:
    """Runs trials as Ray tasks; the daemon must run on a node of the cluster."""

    def __init__(self, settings: Settings) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RayUnavailable("the Ray executor needs Ray: pip install 'tuned[ray]'") from exc
        self.ray = ray
        self.settings = settings
        try:
            ray.init(
                address=settings.ray_address or "auto",
                namespace="tuned",
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailable(
                f"cannot connect to the Ray cluster at {settings.ray_address or 'auto'!r}: {exc}"
            ) from exc
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.node_id = ray.get_runtime_context().get_node_id()
        self.nodes: list[dict[str, float]] = []
        self._refresh()
        # The relay must reach the daemon's Unix socket: it lives on this node.
        self.relay = (
            ray.remote(Relay)
            .options(
                num_cpus=0,
                max_concurrency=4096,
                max_restarts=-1,  # a crashed relay comes back; trials using it are retried
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            )
            .remote(str(settings.socket_path))
        )
        # Retries are the daemon's (max_failures, from the last checkpoint), never Ray's.
        self.task = ray.remote(max_retries=0, retry_exceptions=False)(run_trial)
        log.info(
            "running trials on a Ray cluster",
            address=settings.ray_address or "auto",
            nodes=len(self.nodes),
        )

    def _refresh(self) -> list[dict[str, float]]:
        self.nodes = [
            node_capacity(n.get("Resources", {})) for n in self.ray.nodes() if n.get("Alive")
        ]
        return self.nodes

    def capacity(self) -> Capacity:
        return capacity_of(self.nodes)

    def check(self, request: Request) -> None:
        """Each bundle must fit on one node (Ray never splits a bundle), and all of the
        bundles of a placement group must fit on the nodes together."""
        wanted = [ray_resources(b) for b in request.bundles]
        for bundle in wanted:
            if not any(_fits(bundle, node) for node in self.nodes):
                name, amount = max(bundle.items(), key=lambda kv: kv[1] - self._largest(kv[0]))
                ours = BUILTIN.get(name, name)
                raise ImpossibleRequest(
                    f"a bundle asks for {_describe(bundle)} but no node of the Ray cluster "
                    f"has that much (the largest node has {self._largest(name):g} {ours})",
                    ours,
                    amount,
                    self._largest(name),
                )
        if 1 < len(wanted) <= MAX_PACKING_CHECK and not _packs(wanted, self.nodes):
            raise ImpossibleRequest(
                f"the bundles {', '.join(_describe(b) for b in wanted)} do not fit on the "
                f"Ray cluster's nodes together ({', '.join(_describe(n) for n in self.nodes)})",
                "bundles",
                len(wanted),
                len(self.nodes),
            )

    def _largest(self, name: str) -> float:
        return max((n.get(name, 0.0) for n in self.nodes), default=0.0)

    async def watch(self, resize: Callable[[Capacity], None]) -> None:
        while True:
            await anyio.sleep(REFRESH_S)  # Ray has no node-change event for drivers: poll
            try:
                await anyio.to_thread.run_sync(self._refresh)
            except Exception as exc:  # the GCS restarting: keep the last known picture
                log.warning("cannot read the Ray cluster's nodes", error=str(exc))
                continue
            resize(self.capacity())

    def experiment_done(self, experiment_id: str) -> None:
        pass  # Ray keeps its own worker pool

    async def start(self, spec: LaunchSpec) -> TrialProcess:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        assert spec.request is not None
        bundles = [ray_resources(b) for b in spec.request.bundles]
        first = bundles[0]
        options: dict[str, Any] = {
            "num_cpus": first.get("CPU", 0.0),
            "num_gpus": first.get("GPU", 0.0),
            "memory": first.get("memory", 0.0),
            "resources": {k: v for k, v in first.items() if k not in BUILTIN},
        }
        launch = {
            "argv": spec.argv,
            "env": spec.env,
            "cwd": spec.cwd,
            "stdout": str(spec.stdout),
            "stderr": str(spec.stderr),
            "trial_dir": str(spec.stdout.parent),
        }
        grace = max(0.5, self.settings.kill_grace_s - 1.0)

        def submit(pg: Any) -> Any:
            if pg is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
                )
            return self.task.options(**options).remote(launch, self.relay, grace)

        pg = None
        if len(bundles) > 1:
            # Ray refuses an empty bundle; a token CPU share stands in for one.
            pg = placement_group([b or {"CPU": 0.01} for b in bundles], strategy="PACK")
        return RayTrial(self.ray, submit, pg)

    def close(self) -> None:
        self.ray.shutdown()

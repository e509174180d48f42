"""The daemon's settings: one frozen object, built once at start-up from the command line.

Nothing below the CLI reads environment variables; everything the daemon needs
to know about its surroundings is here, so tests can build any machine they like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuned_client.protocol import MAX_FRAME_BYTES


@dataclass(frozen=True, slots=True)
class Settings:
    socket_path: Path
    state_dir: Path
    num_cpus: float | None = None  # None: detect
    num_gpus: int | None = None  # None: detect with NVML
    memory: int | None = None  # bytes; None: detect
    custom_resources: dict[str, float] = field(default_factory=dict)
    # CUDA_VISIBLE_DEVICES the daemon itself was started with: trials only get these.
    visible_gpus: tuple[str, ...] | None = None
    idle_timeout_s: float = 0.0  # 0: never exit when idle
    foreground: bool = False
    log_level: str = "info"
    max_frame_bytes: int = MAX_FRAME_BYTES
    handshake_timeout_s: float = 10.0
    spare_idle_s: float = 30.0  # a zygote's spare nobody took by then is retired (it may idle out)
    kill_grace_s: float = 5.0
    # How long an experiment whose searcher/scheduler runs in a script waits for that
    # script to reconnect before it is interrupted (``daemon.drivers``).
    driver_grace_s: float = 30.0
    gpu_release_timeout_s: float = 10.0  # longest a device waits for a dead trial's memory
    fake_gpu_state: Path | None = None  # tests: a JSON file the fake GPU probe reads
    # The memory watchdog acts when less than this share of memory is available.
    low_memory_fraction: float = 0.05
    # Recent events kept for clients that resubscribe or start from an earlier one,
    # and what each subscriber may have buffered before it reads the history
    # instead: bytes, not events, so large results cannot make either huge.
    event_history_bytes: int = 16 * 1024 * 1024
    subscriber_buffer_bytes: int = 4 * 1024 * 1024
    ready_fd: int | None = None  # written to once the socket accepts
    # Shared workstations: other uids, or members of these groups, may use the daemon
    # (the socket's directory must let them in too). Everyone else is refused.
    allow_uids: tuple[int, ...] = ()
    allow_groups: tuple[str, ...] = ()
    # Connections: per client process (uid + pid), in total, and how long one that
    # has handshaken but neither subscribed nor sent anything is held open.
    max_connections_per_peer: int = 64
    max_connections: int = 4096
    idle_connection_timeout_s: float = 600.0
    # Where trials run: "local" (processes here) or "ray" (tasks on the Ray cluster
    # at ray_address, "auto" for the one this machine belongs to).
    executor: str = "local"
    ray_address: str = ""
    # The journal is compacted into a snapshot past this many bytes (daemon.compaction):
    # what a restart replays after the snapshot then takes a second or so.
    compact_bytes: int = 4 << 20
    # Tests: recovery waits until something is written to this FIFO (status answers meanwhile).
    recovery_gate: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "tuned.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "tuned.pid"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.bin"

    @property
    def snapshot_path(self) -> Path:
        return self.state_dir / "snapshot.bin"

    @property
    def lock_path(self) -> Path:
        return self.socket_path.with_name(self.socket_path.name + ".lock")

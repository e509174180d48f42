"""The daemon's resident memory, idle (after start-up and one connection)."""

from __future__ import annotations

import psutil
from tuned_client.connection import Connection

from .daemon import bench_daemon
from .figures import Figure


def measure() -> list[Figure]:
    with bench_daemon("--num-cpus", "2") as d:
        Connection.open(d.socket, autostart=False).close()
        rss = psutil.Process(d.pid).memory_info().rss / 2**20
    return [Figure("daemon RSS, idle", 100, rss, "MiB")]


def main() -> None:
    for fig in measure():
        print(fig.line())


if __name__ == "__main__":
    main()

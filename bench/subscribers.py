"""What 100 subscribers cost trivial-trial throughput (target: at most 10% lost).

The same sweep of trivial trials runs alternately with no subscriber and with
100 subscriber connections (four processes of 25, each subscribed to every
experiment and draining what it gets, like ``tuned tail``), twice each, on one
daemon; the loss compares the means. Alternating keeps the box's other load
from landing on one side only.
"""

from __future__ import annotations

import sys

from .clients import SubscriberCrowd
from .daemon import bench_daemon
from .figures import Figure
from .throughput import TRIAL_CPU, _clients


def measure(n: int = 2_000, subscribers: int = 100, rounds: int = 2) -> list[Figure]:
    alone: list[float] = []
    crowded: list[float] = []
    received = 0
    with bench_daemon("--num-cpus", "2") as d:
        _clients(d, 200, 1)  # warm up
        for _ in range(rounds):
            alone.append(n / _clients(d, n, 1))
            crowd = SubscriberCrowd(d, subscribers)
            try:
                crowded.append(n / _clients(d, n, 1))
            finally:
                received += crowd.stop()
    base = sum(alone) / len(alone)
    with_subs = sum(crowded) / len(crowded)
    loss = max(0.0, (1 - with_subs / base) * 100)
    return [
        Figure(
            f"throughput loss with {subscribers} subscribers",
            10,
            loss,
            "%",
            note=f"{base:.0f} /s alone vs {with_subs:.0f} /s with them; {rounds} x {n:,} "
            f"trials each, {TRIAL_CPU:g} CPU; subscribers received {received / 2**20:.0f} MiB",
        )
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

"""What 100 subscribers cost trivial-trial throughput (target: at most 10% lost).

The same sweep of trivial trials runs alternately with no subscriber and with
100 subscriber connections (four processes of 25, each subscribed to every
experiment and draining what it gets, like ``tuned tail``) on one daemon:
alone, crowded, alone, crowded, ..., alone. Each crowded run is compared with
the mean of the two alone runs around it, and the figure is the median of those
losses: the box's other load, which comes and goes, lands on both sides of each
comparison, and a run that it hit hard does not decide the figure.
"""

from __future__ import annotations

import statistics
import sys

from .clients import SubscriberCrowd
from .daemon import bench_daemon
from .figures import Figure
from .throughput import TRIAL_CPU, _clients


def measure(n: int = 2_000, subscribers: int = 100, rounds: int = 4) -> list[Figure]:
    """``n`` trials with the subscribers in all, in ``rounds`` runs (and as many alone)."""
    per_run = max(n // rounds, 100)
    crowded: list[float] = []
    received = 0
    with bench_daemon("--num-cpus", "2") as d:
        _clients(d, 200, 1)  # warm up
        alone = [per_run / _clients(d, per_run, 1)]
        for _ in range(rounds):
            crowd = SubscriberCrowd(d, subscribers)
            try:
                crowded.append(per_run / _clients(d, per_run, 1))
            finally:
                received += crowd.stop()
            alone.append(per_run / _clients(d, per_run, 1))
    losses = [
        (1 - with_subs / ((before + after) / 2)) * 100
        for with_subs, before, after in zip(crowded, alone, alone[1:], strict=False)
    ]
    loss = max(0.0, statistics.median(losses))
    return [
        Figure(
            f"throughput loss with {subscribers} subscribers",
            10,
            loss,
            "%",
            note=f"median of {rounds} paired runs of {per_run:,} trials "
            f"({', '.join(f'{x:.0f}' for x in losses)} %); {statistics.mean(alone):.0f} /s alone "
            f"vs {statistics.mean(crowded):.0f} /s with them; {TRIAL_CPU:g} CPU; "
            f"subscribers received {received / 2**20:.0f} MiB",
        )
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    for fig in measure(n):
        print(fig.line())


if __name__ == "__main__":
    main()

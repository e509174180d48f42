"""ASHA against FIFO on synthetic learning curves: same best config, far fewer iterations.

Deterministic and cheap: each config's loss curve is a closed form
(``floor + amplitude / sqrt(t)``, curves may cross), trials run as simulated
workers in-process and the real ``ASHAScheduler`` decides on each result, as
the steering loop does against the daemon. Run: ``python -m bench.asha_vs_fifo``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

from tuned_client import tune
from tuned_client.tune.progress import TrialView
from tuned_client.tune.schedulers import ASHAScheduler, TrialScheduler
from tuned_client.tune.search import BasicVariantGenerator, Searcher

SPACE = {
    "lr": tune.loguniform(1e-4, 1e-1),
    "width": tune.choice([32, 64, 128, 256]),
    "dropout": tune.uniform(0.0, 0.5),
}


def loss(config: dict[str, Any], t: int) -> float:
    """A learning curve: the floor depends on all three parameters, the speed on lr."""
    floor = (math.log10(config["lr"]) + 2.5) ** 2 + 0.3 * abs(config["dropout"] - 0.2)
    floor += 0.1 * abs(math.log2(config["width"]) - 7)
    amplitude = 1.0 + 0.5 / (config["lr"] * 1e3)
    return floor + amplitude / math.sqrt(t)


@dataclass
class Sim:
    """Simulated workers: each tick, every running trial does one iteration and reports."""

    scheduler: TrialScheduler
    workers: int
    max_t: int
    trials: dict[str, TrialView] = field(default_factory=dict)
    iterations: int = 0

    def get_trials(self) -> list[TrialView]:
        return list(self.trials.values())

    def stop_trial(self, trial: TrialView) -> None:
        trial.status = "TERMINATED"

    def restart_trial(self, trial: TrialView, config: dict[str, Any], checkpoint: str) -> None:
        raise NotImplementedError("not used by ASHA")

    def run(self, configs: list[dict[str, Any]]) -> None:
        queue = list(enumerate(configs))
        steps: dict[str, int] = {}
        while queue or any(t.status == "RUNNING" for t in self.trials.values()):
            while queue and sum(t.status == "RUNNING" for t in self.trials.values()) < self.workers:
                i, config = queue.pop(0)
                view = TrialView(trial_id=str(i), name=str(i), tag=str(i), config=config)
                view.status = "RUNNING"
                self.trials[view.trial_id] = view
                steps[view.trial_id] = 0
                self.scheduler.on_trial_add(self, view)
            for view in [t for t in self.trials.values() if t.status == "RUNNING"]:
                steps[view.trial_id] += 1
                self.iterations += 1
                t = steps[view.trial_id]
                result = {"training_iteration": t, "loss": loss(view.config, t)}
                view.last_result = result
                if t >= self.max_t:
                    view.status = "TERMINATED"
                    self.scheduler.on_trial_complete(self, view, result)
                elif self.scheduler.on_trial_result(self, view, result) == TrialScheduler.STOP:
                    self.stop_trial(view)
                    self.scheduler.on_trial_complete(self, view, result)


def configs_for(seed: int, n: int) -> list[dict[str, Any]]:
    gen = BasicVariantGenerator(random_state=seed)
    gen.setup(SPACE, n, seed)
    out = []
    while (config := gen.suggest(str(len(out)))) != Searcher.FINISHED:
        assert isinstance(config, dict)
        out.append(config)
    return out


def best(trials: list[TrialView], max_t: int) -> tuple[dict[str, Any], float]:
    done = [t for t in trials if t.last_result and t.last_result["training_iteration"] >= max_t]
    top = min(done, key=lambda t: t.last_result["loss"] if t.last_result else math.inf)
    assert top.last_result is not None
    return top.config, top.last_result["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=81)
    parser.add_argument("--max-t", type=int, default=81)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.trials} configs, max_t={args.max_t}, {args.workers} workers, ASHA rf=3 grace=1")
    print(f"{'seed':>4} {'FIFO iters':>10} {'ASHA iters':>10} {'factor':>7}  same best")
    factors, same = [], 0
    for seed in range(args.seeds):
        configs = configs_for(seed, args.trials)
        fifo = Sim(tune.schedulers.FIFOScheduler(), args.workers, args.max_t)
        fifo.run(configs)
        asha = Sim(
            ASHAScheduler(metric="loss", mode="min", max_t=args.max_t, reduction_factor=3),
            args.workers,
            args.max_t,
        )
        asha.run(configs)
        fifo_best, asha_best = (
            best(fifo.get_trials(), args.max_t),
            best(asha.get_trials(), args.max_t),
        )
        factor = fifo.iterations / asha.iterations
        factors.append(factor)
        same += fifo_best[0] == asha_best[0]
        print(
            f"{seed:>4} {fifo.iterations:>10} {asha.iterations:>10} {factor:>6.1f}x  "
            f"{fifo_best[0] == asha_best[0]} (loss {fifo_best[1]:.4f} vs {asha_best[1]:.4f})"
        )
    print(
        f"ASHA used {sum(factors) / len(factors):.1f}x fewer trial-iterations than FIFO on "
        f"average and found FIFO's best configuration in {same}/{args.seeds} seeds"
    )


if __name__ == "__main__":
    main()

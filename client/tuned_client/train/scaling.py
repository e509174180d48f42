"""``ScalingConfig`` (``ray.train.ScalingConfig``) as a Tune trial's resource request.

tuned runs each trial as one process and starts no training workers of its
own, so a ScalingConfig means here what it means to Ray Tune's scheduler: the
bundles the trial reserves, all together (``tune.with_resources(train_fn,
ScalingConfig(...))``). A trainable that starts its own workers (torchrun,
``torch.multiprocessing``) reads them from ``train.get_context()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tune.resources import PlacementGroupFactory


@dataclass
class ScalingConfig:
    trainer_resources: dict[str, float] | None = None
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    placement_strategy: str = "PACK"
    accelerator_type: str | None = None
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {self.num_workers}")
        if (
            self.resources_per_worker
            and ("GPU" in self.resources_per_worker or "gpu" in self.resources_per_worker)
            and not self.use_gpu
        ):
            raise ValueError(
                "`use_gpu` is False but `GPU` was found in `resources_per_worker`. Either set "
                "`use_gpu` to True or remove `GPU` from `resources_per_worker."
            )

    @property
    def _trainer_bundle(self) -> dict[str, float]:
        # Ray's default: the coordinating trainer holds no CPU once there are workers.
        if self.trainer_resources is not None:
            return dict(self.trainer_resources)
        return {"CPU": 0.0} if self.num_workers else {"CPU": 1.0}

    @property
    def _worker_bundle(self) -> dict[str, float]:
        if self.resources_per_worker is not None:
            bundle = dict(self.resources_per_worker)
            if self.use_gpu:
                bundle.setdefault("GPU", 1.0)
            return bundle
        return {"CPU": 1.0, "GPU": 1.0} if self.use_gpu else {"CPU": 1.0}

    @property
    def total_resources(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for bundle in self.as_placement_group_factory().bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + float(value)
        return total

    def as_placement_group_factory(self) -> PlacementGroupFactory:
        """The trainer's bundle and one per worker, reserved together (as Ray's)."""
        bundles = [self._trainer_bundle] + [self._worker_bundle] * self.num_workers
        nonempty = [b for b in bundles if any(v for v in b.values())] or [{"CPU": 0.0}]
        return PlacementGroupFactory(nonempty, strategy=self.placement_strategy)

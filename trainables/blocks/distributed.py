"""Where this process runs: inside Ray Train or not, its rank among the trial's workers, and gathering a value
from every worker. Imported by the training loop, evaluation, checkpoints and progress alike."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def in_ray_train() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_size()
        return True
    except Exception:
        return False


def world() -> tuple[int, int]:
    """(rank, world size) of this worker."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_objects(obj: Any) -> list[Any]:
    _, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def reduce_max(value: float) -> float:
    return max(all_gather_objects(value))

"""Torch's process group for a Ray Train run, set up without importing torch in Ray Train's controller.

Ray Train's `TorchConfig` lives in a module that imports torch, and every Train run's controller unpickles it: 1.1 s
of each trial's start on 2 cores, in a process that never touches a tensor (docs/benchmarks.md). `ProcessGroupConfig`
does the same job with torch imported only where it runs, on the workers: the controller asks worker 0 for an
address, the workers export the env:// variables, join the group with Ray's own set-up function, and leave it at the
run's end with Ray's own shutdown. Only `init_method="env"` is offered; it is what `TorchConfig` defaults to.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.backend import Backend, BackendConfig

logger = logging.getLogger(__name__)


@dataclass
class ProcessGroupConfig(BackendConfig):
    """`backend`: torch.distributed's backend, "gloo" on CPU or "nccl" on GPU; `timeout_s`: for collectives."""

    backend: str = "gloo"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type[Backend]:
        return ProcessGroupBackend

    @property
    def train_func_context(self) -> type:
        return CudaDevice

    @property
    def framework(self) -> Any:
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


class ProcessGroupBackend(Backend):
    """Runs in the controller: everything that needs torch is a function the workers execute."""

    # Workers on one node see each other's GPUs (what TorchConfig's backend does), so NCCL can use peer access.
    share_cuda_visible_devices: bool = True

    def on_start(self, worker_group: Any, backend_config: ProcessGroupConfig) -> None:
        from ray.train._internal.utils import get_address_and_port

        address, port = worker_group.execute_single(0, get_address_and_port)
        worker_group.execute(_export_group_env, address=address, port=port)
        size = len(worker_group)
        ray.get([worker_group.execute_single_async(rank, _join_group, backend=backend_config.backend, world_rank=rank,
                                                   world_size=size, timeout_s=backend_config.timeout_s)
                 for rank in range(size)])

    def on_shutdown(self, worker_group: Any, backend_config: ProcessGroupConfig) -> None:
        from ray._private.ray_constants import env_integer
        from ray.exceptions import GetTimeoutError
        from ray.train.constants import (
            DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
            TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
        )

        futures = worker_group.execute_async(_leave_group, destroy=len(worker_group) > 1)
        timeout_s = env_integer(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
        try:
            ray.get(futures, timeout=timeout_s)
        except GetTimeoutError:
            # A worker stuck in a collective: Ray Train kills the group next, which releases the group with it.
            logger.warning("torch process group shutdown timed out after %s s", timeout_s)


class CudaDevice:
    """Wraps the train loop on each worker: makes the worker's GPU torch's current device, as TorchConfig does."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        TorchConfigContextManager().__enter__()

    def __exit__(self, *exc: object) -> bool:
        return False


def _export_group_env(address: str, port: int) -> None:
    """On a worker: where rank 0 listens, and this worker's ranks, as torch.distributed's env:// reads them."""
    from ray.train.torch.config import _set_torch_distributed_env_vars

    os.environ["MASTER_ADDR"] = address
    os.environ["MASTER_PORT"] = str(port)
    _set_torch_distributed_env_vars()


def _join_group(backend: str, world_rank: int, world_size: int, timeout_s: int) -> None:
    from ray.train.torch.config import _setup_torch_process_group

    _setup_torch_process_group(backend=backend, world_rank=world_rank, world_size=world_size, init_method="env://",
                               timeout_s=timeout_s)


def _leave_group(destroy: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy)

"""Finding or starting the Ray cluster a sweep runs on (the driver side)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: Ray ships it to every worker as the working directory."""


def running_cluster() -> bool:
    """Whether a Ray cluster is there to join (RAY_ADDRESS, or `ray start` run on this machine)."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    return Path("/tmp/ray/ray_current_cluster").exists()


def connect_ray() -> bool:
    """Join a running cluster if there is one; returns whether it joined (else the caller starts one)."""
    import ray

    if ray.is_initialized():
        return True
    if not running_cluster():
        return False
    from trainables.launch import runtime_env

    try:
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), runtime_env=runtime_env(str(ROOT)), log_to_driver=True)
        return True
    except (ConnectionError, RuntimeError):
        return False


def start_local_ray() -> None:
    import ray

    from trainables.launch import runtime_env

    if not ray.is_initialized():
        ray.init(runtime_env=runtime_env(str(ROOT)))


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))

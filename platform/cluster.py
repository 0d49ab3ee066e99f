"""Finding or starting the Ray cluster a sweep runs on (the driver side)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: Ray ships it to every worker as the working directory."""


def unwritable(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (made if missing), or None when they can."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc}: {exc.filename or folder}"
    return None


def check_storage(storage: str | None) -> str | None:
    """Why the sweep cannot keep its results at `storage` (--storage; default ./ray_results), or None.

    A remote URI (s3://, gs://) is Ray's to check; the sweep still keeps its own state under ./ray_results."""
    folders = [ROOT / "ray_results"]
    if storage and "://" not in storage:
        folders.insert(0, Path(storage).expanduser())
    for folder in folders:
        problem = unwritable(folder)
        if problem:
            return f"cannot write results to {str(folder)!r} ({problem})"
    return None


def running_cluster() -> bool:
    """Whether a Ray cluster is there to join: RAY_ADDRESS, or else a cluster started on this machine
    (`ray start`, python -m platform.local_cluster). RAY_ADDRESS set but empty means: start a private one."""
    if "RAY_ADDRESS" in os.environ:
        return bool(os.environ["RAY_ADDRESS"])
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

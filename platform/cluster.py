"""Finding or starting the Ray cluster a sweep runs on (the driver side)."""

from __future__ import annotations

import os
import socket
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


class ClusterError(Exception):
    """RAY_ADDRESS names a cluster the sweep cannot join; the message is one line naming the address."""


def requested_address() -> str:
    """The cluster RAY_ADDRESS asks for by address ('' when unset, empty, 'auto' or 'local')."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    return "" if address in ("", "auto", "local") else address


def check_ray_address() -> str | None:
    """Why the cluster RAY_ADDRESS names cannot be reached, or None. `ray.init` keeps retrying for minutes
    where nothing listens; a TCP connect to the same port answers within seconds."""
    address = requested_address()
    if not address:
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return f"RAY_ADDRESS={address}: expected HOST:PORT (or ray://HOST:PORT, auto, or empty for a private Ray)"
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except OSError as exc:
        return (f"RAY_ADDRESS={address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                "(python -m platform.local_cluster, ray start --head, ray up cluster.yaml) or set RAY_ADDRESS= "
                "for a private one")
    return None


def running_cluster() -> bool:
    """Whether a Ray cluster is there to join: RAY_ADDRESS, or else a cluster started on this machine
    (`ray start`, python -m platform.local_cluster). RAY_ADDRESS set but empty means: start a private one."""
    if "RAY_ADDRESS" in os.environ:
        return bool(os.environ["RAY_ADDRESS"])
    return Path("/tmp/ray/ray_current_cluster").exists()


def plan_line() -> str:
    """Which Ray the sweep will run on, for its plan: joining a cluster another job started on this machine is
    what `ray.init` does unasked, and two jobs sharing one cluster disturb each other."""
    if "RAY_ADDRESS" in os.environ:
        address = os.environ["RAY_ADDRESS"].strip()
        return f"the cluster at {address} (RAY_ADDRESS)" if address else "a private Ray on this machine (RAY_ADDRESS is empty)"
    marker = Path("/tmp/ray/ray_current_cluster")
    if marker.exists():
        address = (marker.read_text().strip().splitlines() or ["?"])[0]
        return (f"joins the cluster started on this machine at {address} (ray start); "
                "RAY_ADDRESS= runs on a private one instead")
    return "a private Ray on this machine"


def connect_ray(log_to_driver: bool = True) -> bool:
    """Join a running cluster if there is one; returns whether it joined (else the caller starts one).

    Raises ClusterError when RAY_ADDRESS names a cluster that refuses the sweep (a token-authenticated
    cluster without its token, say): running privately instead would not be what was asked for. A cluster
    found only through `ray start`'s address file may be long gone, so that failure starts a private one."""
    import ray

    if ray.is_initialized():
        return True
    if not running_cluster():
        return False
    from trainables.blocks.launch import runtime_env

    try:
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), runtime_env=runtime_env(str(ROOT)),
                 log_to_driver=log_to_driver)
        return True
    except (ConnectionError, RuntimeError) as exc:
        if requested_address():
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            # Ray sends its auth token to an address given explicitly only when RAY_AUTH_MODE=token says so
            hint = ("" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else
                    "; if it requires Ray's auth token, set RAY_AUTH_MODE=token (the token: ~/.ray/auth_token or "
                    "RAY_AUTH_TOKEN)")
            raise ClusterError(f"RAY_ADDRESS={requested_address()}: cannot join the Ray cluster there "
                               f"({type(exc).__name__}: {first}){hint}") from None
        return False


def start_local_ray(log_to_driver: bool = True) -> None:
    """A private Ray on this machine; `log_to_driver=False` keeps its workers' output in its log files."""
    import ray

    from trainables.blocks.launch import runtime_env

    if not ray.is_initialized():
        # "local": a new instance even where /tmp/ray still names a cluster that has since gone (a bare
        # ray.init() would try to join that one and fail)
        ray.init(address="local", runtime_env=runtime_env(str(ROOT), private=True), log_to_driver=log_to_driver)


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))

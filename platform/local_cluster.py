"""A real multi-node Ray cluster on this one machine: a head node and worker nodes, each its own raylet
with its own CPUs, object store and processes, joined through one GCS. Sweeps run against it through
`RAY_ADDRESS` exactly as against a cloud cluster, so losing a worker process or a whole node can be tried
(and is tested, tests/test_fault_tolerance.py) without a cloud account.

    python -m platform.local_cluster --nodes 2 --cpus-per-node 2
    # in another shell, with the address it prints:
    RAY_AUTH_MODE=token RAY_ADDRESS=127.0.0.1:PORT python -m platform.sweep qlora_rank

The head node gets no CPUs by default: like a cloud head node it runs the sweep's bookkeeping (each trial's
Tune function and Ray Train controller), while training runs on the worker nodes, any of which may go away.
Every node requires Ray's auth token (~/.ray/auth_token, made if missing); a driver joining by address sends
it when RAY_AUTH_MODE=token. Ctrl-C stops every node.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any


def require_token_auth() -> None:
    """Turn Ray's token authentication on for the nodes this process starts, with a token at Ray's default
    path (made if there is none). Ray 2.60 does this itself only for the cluster a bare `ray.init()` starts;
    `ray.cluster_utils.Cluster` would start its nodes open to anyone who can reach their ports. A
    RAY_AUTH_MODE set by the user is left as it is."""
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default,
        ensure_token_if_auth_enabled,
    )

    enable_token_auth_by_default()
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)


def start(nodes: int = 2, cpus_per_node: float = 2, head_cpus: float = 0, *,
          object_store_mb: int = 200, connect: bool = False) -> Any:
    """Start a head node and `nodes` worker nodes on this machine; returns the `ray.cluster_utils.Cluster`.

    Each worker node also carries a logical resource `node-<i>` (1 unit), so a test or a user can pin work
    to one node."""
    from ray.cluster_utils import Cluster

    require_token_auth()
    store = object_store_mb * 1024 * 1024
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": head_cpus, "object_store_memory": store, "include_dashboard": False})
    for i in range(nodes):
        cluster.add_node(num_cpus=cpus_per_node, object_store_memory=store, resources={f"node-{i}": 1})
    cluster.wait_for_nodes()
    if connect:
        cluster.connect()
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform.local_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--cpus-per-node", type=float, default=2, help="CPUs each worker node offers (default 2)")
    parser.add_argument("--head-cpus", type=float, default=0, help="CPUs the head node offers (default 0)")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.cpus_per_node <= 0 or args.head_cpus < 0:
        print("error: --nodes must be at least 1, --cpus-per-node positive, --head-cpus >= 0", file=sys.stderr)
        return 2
    cluster = start(args.nodes, args.cpus_per_node, args.head_cpus)
    print(f"a Ray cluster of 1 head + {args.nodes} worker node(s), {args.cpus_per_node:g} CPUs each, is up.")
    # Ray sends its token to an address given explicitly only when RAY_AUTH_MODE says so
    print(f"run sweeps on it with:\n  export RAY_AUTH_MODE=token RAY_ADDRESS={cluster.address}")
    print("Ctrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""cluster.yaml, checked offline the way `ray up` checks it, plus the project's own requirements on it.

`ray up` first runs the autoscaler's `prepare_config` (merges the AWS provider's defaults.yaml, folds
setup_commands into the head and worker lists, fills each node type's min/max workers) and then
`validate_config` (Ray's JSON schema, in which node types and the top level allow no unknown keys, plus
cross-field checks). Both are pure functions of the dict. The AWS bootstrap that comes after them in
`ray up` (IAM, key pairs, subnets, AMI lookups) needs boto3 and credentials, so it is not run here.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAY_PIN = re.compile(r"\bray\[[^\]]*\]==([0-9][0-9A-Za-z.+-]*)")


def raw_config() -> dict[str, Any]:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(config, dict)
    return config


def checked(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own preparation and validation of a cluster config, as in `ray up` before any cloud call."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return checked(raw_config())


def all_commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [cmd for key in keys for cmd in config.get(key) or []]


def gpu_types(config: dict[str, Any]) -> dict[int, tuple[str, dict[str, Any]]]:
    """Worker node types keyed by their GPU count."""
    out: dict[int, tuple[str, dict[str, Any]]] = {}
    for name, node_type in config["available_node_types"].items():
        gpus = node_type["resources"].get("GPU", 0)
        if gpus:
            assert gpus not in out, f"two node types with {gpus} GPUs"
            out[gpus] = (name, node_type)
    return out


def test_ray_accepts_cluster_yaml(config: dict[str, Any]) -> None:
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"]
    assert config["auth"]["ssh_user"] == "ubuntu"
    assert config["head_node_type"] in config["available_node_types"]
    assert config["idle_timeout_minutes"] > 0
    # prepare_config folded the common setup into both lists and left no legacy fields behind.
    assert config["head_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    assert config["worker_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    assert "head_node" not in config and "worker_nodes" not in config
    workers = {n: t for n, t in config["available_node_types"].items() if n != config["head_node_type"]}
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


def test_ray_version_pins_agree(config: dict[str, Any]) -> None:
    pins = [pin for cmd in all_commands(config) for pin in RAY_PIN.findall(cmd)]
    assert pins, "cluster.yaml installs Ray without pinning its version"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    project_pins = [m.group(1) for dep in project if (m := RAY_PIN.search(dep))]
    assert len(project_pins) == 1
    assert set(pins) == {ray.__version__} == set(project_pins)


def test_gpu_worker_types(config: dict[str, Any]) -> None:
    by_gpus = gpu_types(config)
    assert sorted(by_gpus) == [1, 4]
    for gpus, (name, node_type) in by_gpus.items():
        assert name != config["head_node_type"]
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
        assert node_type["resources"]["CPU"] >= gpus, name
        assert "IamInstanceProfile" in node_type["node_config"], f"{name} cannot write results to S3"
    single, quad = by_gpus[1][1]["node_config"], by_gpus[4][1]["node_config"]
    assert single.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    assert quad.get("InstanceMarketOptions", {}).get("MarketType", "on-demand") != "spot"


def test_head_takes_no_training_and_every_node_shares_one_ami(config: dict[str, Any]) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    # No GPU: no Train worker of the gpu preset fits there. Some CPU: the trials' 1-CPU driver functions do.
    assert head["resources"].get("GPU") == 0
    assert head["resources"].get("CPU", 0) >= 1
    assert head["max_workers"] == 0
    amis = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert len(amis) == 1, "nodes on different AMIs can end up with different Python versions"


def mlflow_argv(commands: list[str]) -> list[list[str]]:
    """The argument lists of every `mlflow server` invocation in `commands`."""
    found = []
    for cmd in commands:
        words = shlex.split(cmd.replace("(", " ").replace(")", " "))
        for i in range(len(words) - 1):
            if words[i].endswith("mlflow") and words[i + 1] == "server":
                found.append(words[i + 2:])
    return found


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"mlflow server without {name}"
    return argv[argv.index(name) + 1]


def test_head_runs_mlflow_on_loopback(config: dict[str, Any]) -> None:
    head_cmds = config["head_setup_commands"] + config["head_start_ray_commands"]
    servers = mlflow_argv(head_cmds)
    assert len(servers) == 1
    argv = servers[0]
    assert option(argv, "--host") == "127.0.0.1"
    assert option(argv, "--port") == "5000"
    assert option(argv, "--backend-store-uri").startswith("postgresql://")
    assert option(argv, "--artifacts-destination").startswith("s3://")
    start = next(cmd for cmd in head_cmds if "mlflow server" in cmd)
    assert "nohup" in start and "/health" in start, "the MLflow start must be detached and idempotent"
    assert not mlflow_argv(config["worker_setup_commands"] + config["worker_start_ray_commands"])
    assert any("MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in cmd for cmd in config["head_setup_commands"])


def env_settings(command: str) -> dict[str, str]:
    """The VAR=VALUE assignments in a shell command."""
    words = shlex.split(command.replace("(", " ").replace(")", " "))
    return dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w))


def max_connections(config: dict[str, Any]) -> int:
    """The PostgreSQL max_connections the head sets up (ALTER SYSTEM SET max_connections = N)."""
    found = {int(n) for cmd in config["head_setup_commands"]
             for n in re.findall(r"ALTER SYSTEM SET max_connections = (\d+)", cmd)}
    assert len(found) == 1, "the head must set PostgreSQL's max_connections (once)"
    checked = {int(n) for cmd in config["head_setup_commands"]
               for n in re.findall(r"SHOW max_connections'\)\" = (\d+)", cmd)}
    assert checked == found, "the setting and its check disagree: PostgreSQL would restart on every ray up"
    return found.pop()


def test_head_runs_postgresql_with_mlflow_and_the_studies_on_it(config: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    head = config["head_setup_commands"]
    assert any("apt-get" in cmd and re.search(r"install .*\bpostgresql\b", cmd) for cmd in head)
    assert not any("postgresql" in cmd for cmd in config["worker_setup_commands"]), "only the head runs PostgreSQL"
    [argv] = mlflow_argv(head + config["head_start_ray_commands"])
    tracking = make_url(option(argv, "--backend-store-uri"))
    assert "--serve-artifacts" in argv  # artifacts go through the server to the bucket
    exported = [m.group(1) for cmd in head for m in re.finditer(r"export SWEEP_OPTUNA_STORAGE=(\S+?)'", cmd)]
    assert len(exported) == 1
    studies = make_url(exported[0])
    for url in (tracking, studies):  # on the head's own PostgreSQL, over loopback, no password in any URL
        assert url.get_backend_name() == "postgresql" and url.host == "127.0.0.1" and url.password is None, url
    assert tracking.username == studies.username
    assert tracking.database != studies.database, "MLflow and Optuna both keep an alembic_version table"
    # Both databases are made, owned by the role the URLs log in as, whose password lives in ~/.pgpass only.
    setup = " ".join(head)
    for db in (tracking.database, studies.database):
        assert re.search(rf"for db in [^;]*\b{db}\b", setup), db
    assert f"createdb -O {tracking.username}" in setup and f"CREATE ROLE {tracking.username} LOGIN" in setup
    assert "umask 077" in setup and "~/.pgpass" in setup


def test_connection_pools_fit_the_cluster_and_postgresql(config: dict[str, Any]) -> None:
    from platform import studies

    start = next(cmd for cmd in config["head_start_ray_commands"] if "mlflow server" in cmd)
    env = env_settings(start)
    pool = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
    [argv] = mlflow_argv([start])
    workers = int(option(argv, "--workers"))
    # Every trial running at once on the cluster may have a write in flight, and a log_batch holds two of its
    # worker's connections at once: fewer and the writes wait for each other until SQLAlchemy's timeout.
    trials_at_once = sum(t["max_workers"] * t["resources"].get("GPU", 0)
                         for n, t in config["available_node_types"].items() if n != config["head_node_type"])
    assert workers * pool // 2 >= trials_at_once, (workers, pool, trials_at_once)
    # Each server worker, and the server's parent and job runner, hold two engines (tracking, model registry); each
    # sweep's study holds at most its pool, and in the worst case each running trial is a sweep of its own.
    # PostgreSQL keeps 3 for superusers.
    optuna = studies.engine_kwargs("postgresql://x@127.0.0.1/optuna")
    per_study = optuna["pool_size"] + optuna["max_overflow"]
    needed = (workers + 2) * 2 * pool + trials_at_once * per_study + 3
    assert needed <= max_connections(config), (needed, max_connections(config))


def test_project_synced_without_local_state(config: dict[str, Any]) -> None:
    # the repository, and Ray's auth token (tests/test_security.py), nothing else of the local machine
    assert config["file_mounts"] == {"~/speech-sweeps": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    excluded = set(config["rsync_exclude"])
    assert {".venv", ".git", "mlflow.db", "ray_results", "mlruns"} <= excluded
    install = [cmd for cmd in config["setup_commands"] if RAY_PIN.search(cmd)]
    assert install and "speech-sweeps" in install[0] and " -e " in install[0]
    # The node's environment stays outside the mounted folder, which Ray hashes file by file.
    assert not any("speech-sweeps/.venv" in cmd for cmd in all_commands(config))
    assert any("espeak-ng" in cmd for cmd in config["setup_commands"])


def test_results_go_to_shared_storage(config: dict[str, Any]) -> None:
    assert any(re.search(r"export SWEEP_STORAGE=s3://\S+", cmd) for cmd in config["setup_commands"])


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        (lambda c: c["available_node_types"]["gpu_4x"].update(min_worker=0), jsonschema.ValidationError),
        (lambda c: c.update(idle_timeout_minute=5), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["gpu_1x_spot"]["resources"].update(GPU=0.5), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["gpu_1x_spot"].pop("node_config"), jsonschema.ValidationError),
        (lambda c: c.update(head_node_type="no_such_type"), ValueError),
    ],
    ids=["misspelled-node-type-key", "misspelled-top-level-key", "fractional-gpu", "no-node-config", "unknown-head"],
)
def test_broken_configs_are_rejected(breakage: Any, error: type[Exception]) -> None:
    broken = raw_config()
    breakage(broken)
    with pytest.raises(error):
        checked(broken)

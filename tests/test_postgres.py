"""A tracking server a team shares: two sweeps at once, four trials at a time each, on one Ray cluster, against one
`mlflow server` on PostgreSQL (artifacts proxied by the server), their Optuna studies on the same PostgreSQL
(`--optuna-storage`). Afterwards every trial holds each param, each metric step and each artifact exactly once,
and both studies are complete. Nothing is mocked: a real PostgreSQL (tests/postgres.py), a real server, real
sweeps of tiny trials."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.postgres import free_port, new_database, postgres_server  # noqa: F401 - the fixture
from tests.test_fault_tolerance import (
    assert_complete_record,
    on_cluster,
    start_mlflow_server,
    stop,
    sweep_cmd,
    write_sweep,
)

pytestmark = pytest.mark.integration

STEPS, EVAL_EVERY, RANKS = 4, 2, [1, 2, 3, 4]


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    """One Ray cluster both sweeps join: a head (the trials' bookkeeping) and one node with 8 logical CPUs, so
    eight one-CPU trials run at once."""
    from platform import local_cluster

    cluster = local_cluster.start(nodes=1, cpus_per_node=8)
    yield cluster
    cluster.shutdown()


def artifact_files(c: Any, run_id: str, path: str | None = None) -> list[tuple[str, int]]:
    """Every artifact file of the run, with its size, as the server lists them."""
    out: list[tuple[str, int]] = []
    for item in c.list_artifacts(run_id, path):
        out += artifact_files(c, run_id, item.path) if item.is_dir else [(item.path, item.file_size)]
    return out


def most_at_once(runs: list[Any]) -> int:
    """The most of `runs` whose MLflow runs were open at the same moment."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    running = best = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best


def test_two_sweeps_at_once_on_one_postgres_server_keep_every_record_once(
        ray_cluster: Any, postgres_server: str, tiny_whisper_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    import optuna
    from mlflow.tracking import MlflowClient
    from sqlalchemy.engine import make_url

    from platform import tracking
    from trainables.blocks.config import flatten

    tracking_db = new_database(postgres_server, "two_sweeps_mlflow")
    studies_db = new_database(postgres_server, "two_sweeps_optuna")
    port, artifacts = free_port(), tmp_path / "artifacts"
    server_env = {**os.environ, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "4", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "4"}
    server = start_mlflow_server(tracking_db, artifacts, port, "--workers", "2", "--serve-artifacts", env=server_env)
    uri = f"http://127.0.0.1:{port}"
    names = ["pg_sweep_a", "pg_sweep_b"]
    procs, fixed = [], {}
    try:
        t0 = time.time()
        for name in names:
            spec = write_sweep(tmp_path / f"{name}.yaml", tiny_whisper_dir, {"lora.r": {"type": "grid", "values": RANKS}},
                               STEPS, 0, eval_every=EVAL_EVERY, num_samples=4, max_concurrent_trials=4)
            fixed[name] = yaml.safe_load(spec.read_text())["config"]
            # Each console goes to a file, not a pipe: a pipe read only after the other sweep ended fills up (the
            # live table prints every few seconds), blocks that driver mid-print with its trials holding the shared
            # cluster's CPUs, and the other sweep then waits for CPUs that never come back.
            with open(tmp_path / f"{name}.out", "w") as console:
                procs.append(subprocess.Popen(sweep_cmd(spec, tmp_path, "--optuna-storage", studies_db, uri=uri),
                                              cwd=ROOT, env=on_cluster(ray_cluster), stdout=console,
                                              stderr=subprocess.STDOUT, text=True))
        deadline = time.time() + 800
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
        outs = [(tmp_path / f"{name}.out").read_text() for name in names]
        print(f"\n[postgres] two sweeps of 4 trials at once: {time.time() - t0:.0f} s")
        for name, p, out in zip(names, procs, outs, strict=True):
            assert p.returncode == 0, f"{name}: {out[-4000:]}"
            assert f"optuna    study {name}-" in out and "postgresql://sweeps:***@" in out, out[-3000:]
            assert make_url(studies_db).password not in out  # the console never shows the database's password

        c = MlflowClient(uri)
        all_trials = []
        for name in names:
            runs = c.search_runs([c.get_experiment_by_name(name).experiment_id], max_results=1000)
            parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
            trials = [r for r in runs if "trial_id" in r.data.tags]
            assert len(parents) == 1 and len(runs) == 5, [r.info.run_name for r in runs]
            assert sorted(json.loads(r.data.tags["searched"])["lora.r"] for r in trials) == RANKS  # each trial once
            all_trials += trials
            for run in trials:
                rid = run.info.run_id
                assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
                assert_complete_record(tmp_path, run, STEPS, EVAL_EVERY, uri=uri)
                # Params: the trial's whole resolved config, every key, the searched value among them.
                sampled = json.loads(run.data.tags["searched"])
                config = tracking.resolved_config("qlora", fixed[name], {}, sampled)
                assert set(run.data.params) == set(flatten(config)), set(run.data.params) ^ set(flatten(config))
                assert run.data.params["lora.r"] == str(sampled["lora.r"])
                # Metrics: each step of each metric once (a write retried or replayed would add a second point).
                for key in run.data.metrics:
                    steps = [m.step for m in c.get_metric_history(rid, key)]
                    assert len(steps) == len(set(steps)), (name, run.info.run_name, key, sorted(steps))
                # Artifacts: proxied by the server into its destination, each file once, as large as listed.
                assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
                files = artifact_files(c, rid)
                paths = [p for p, _ in files]
                assert len(paths) == len(set(paths))
                assert {"config.json", "metrics.json", "history.json", "hypotheses.jsonl"} <= set(paths), paths
                stored = artifacts / run.info.experiment_id / rid / "artifacts"
                on_disk = sorted(str(f.relative_to(stored)) for f in stored.rglob("*") if f.is_file())
                assert on_disk == sorted(paths)
                assert all((stored / p).stat().st_size == size for p, size in files)

            # The study: on the shared PostgreSQL, 4 complete trials, the objective's values MLflow holds.
            stamp = parents[0].data.tags["stamp"]
            study = optuna.load_study(study_name=f"{name}-{stamp}", storage=studies_db)
            assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
            [objective] = json.loads(parents[0].data.tags["objectives"])[0]
            assert study.metric_names == [objective]
            by_rank = {json.loads(r.data.tags["searched"])["lora.r"]: r.data.metrics[objective] for r in trials}
            assert {t.params["lora.r"]: t.value for t in study.trials} == pytest.approx(by_rank)

        assert sorted(s.study_name.rsplit("-", 2)[0] for s in optuna.get_all_study_summaries(studies_db)) == names
        # The two sweeps really overlapped: more trials were open at once than one sweep runs.
        at_once = most_at_once(all_trials)
        print(f"[postgres] trial runs open at once: {at_once} of 8")
        assert at_once > 4, at_once
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        stop(server)

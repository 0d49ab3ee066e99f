"""Real sweeps: Ray Tune + Optuna over Ray Train trials, read back through MLflow's client."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONTRACT_METRICS, ROOT

pytestmark = pytest.mark.integration  # starts Ray


def write_sweep(path: Path, model: Path, space: dict, **extra) -> Path:
    spec = {
        "method": "qlora",
        "description": "test sweep",
        "config": {
            "model": str(model), "precision": {"bits": 32}, "eval": {"max_new_tokens": 4},
            "data": {"source": "espeak-smoke", "max_eval_items": 4, "max_val_items": 2},
            "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 2},
        },
        "space": space,
        "searcher": {"type": "tpe", "seed": 3, "n_startup_trials": 2},
        "num_samples": 2,
        "max_concurrent_trials": 1,
        "baseline": False,
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_cmd(spec: Path, tmp: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "platform.sweep", str(spec), "--preset", "local",
            "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--storage", str(tmp / "results"), *more]


def run_sweep(spec: Path, tmp: Path, *more: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run(sweep_cmd(spec, tmp, *more), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def child_runs(tmp: Path, name: str) -> tuple[list, list]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_sweep_records_every_trial_in_mlflow(tmp_path: Path, tiny_whisper_dir: Path) -> None:
    spec = write_sweep(tmp_path / "tiny_rank.yaml", tiny_whisper_dir,
                       {"lora.r": {"type": "choice", "values": [2, 8]}, "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}})
    out = run_sweep(spec, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    parents, children = child_runs(tmp_path, "tiny_rank")
    assert len(parents) == 1 and len(children) == 2
    parent_id = parents[0].info.run_id
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.data.tags["method"] == "qlora" and run.data.tags["preset"] == "local"
        for name in CONTRACT_METRICS:
            assert name in run.data.metrics, name
        assert run.data.params["lora.r"] in ("2", "8")  # the searched parameter, in the resolved config
        assert "optim.lr" in run.data.params and "precision.quant_type" in run.data.params  # defaults too
        assert json.loads(run.data.tags["searched"]).keys() == {"lora.r", "optim.lr"}
    # The Optuna study is persistent, beside the results, and holds both trials.
    db = next((tmp_path / "results" / "tiny_rank").glob("*/optuna.db"))
    with sqlite3.connect(db) as con:
        states = [s for (s,) in con.execute("select state from trials")]
    assert states == ["COMPLETE", "COMPLETE"]
    # The summary table and plot are on the parent run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    # Its best trial by validation is registered under the sweep's name, linked back to that trial.
    [version] = client.search_model_versions("name = 'tiny_rank'")
    best = min(children, key=lambda r: r.data.metrics["val_wer"])
    assert version.tags["trial_run_id"] == best.info.run_id and f"models:/tiny_rank/{version.version}" in out.stdout
    # A plot for each searched key the two trials vary: the sampled lr always, the rank only where TPE drew both.
    ranks = {run.data.params["lora.r"] for run in children}
    assert {"summary.md", "summary.csv", "wer_vs_optim_lr.png"} <= artifacts
    assert ("wer_vs_lora_r.png" in artifacts) == (len(ranks) == 2)
    assert "| trial" in out.stdout and "lora.r" in out.stdout
    # A quiet console: no line of Ray's workers or controllers reaches it; the files named at the end hold them.
    console = out.stdout + out.stderr
    for noise in ("(RayTrainWorker", "(TrainController", "core_worker.cc", "pid=", "INFO tune.py", "TrainingReport(",
                  "Configuration for experiment", "View detailed results here", "tensorboard --logdir",
                  "INFO mlflow", "Downloading artifacts", "Successfully registered model"):
        assert noise not in console, noise
    run_dir = next((tmp_path / "results" / "tiny_rank").glob("*/sweep.json")).parent
    assert f"{run_dir / 'libraries.log'} and {run_dir / 'ray-logs'}/" in out.stdout
    ray_logs = "".join(f.read_text(errors="replace") for f in (run_dir / "ray-logs").iterdir())
    assert "worker group" in ray_logs  # Ray Train's controller: "Started training worker group of size 1"
    # The state names the commit and machine the sweep ran at, which a published results page cites.
    state = json.loads((run_dir / "sweep.json").read_text())
    assert state["commit"].startswith("`") and "CPU cores" in state["machine"]


def test_failing_trial_is_recorded_failed_and_the_sweep_goes_on(tmp_path: Path, tiny_whisper_dir: Path) -> None:
    # Paged optimisers need CUDA: on this CPU machine that trial fails at run time, the other must not.
    spec = write_sweep(tmp_path / "tiny_fail.yaml", tiny_whisper_dir,
                       {"optim.name": {"type": "grid", "values": ["adamw", "paged_adamw_8bit"]}},
                       searcher={"type": "grid"})
    out = run_sweep(spec, tmp_path)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]  # 0 only when every trial finished
    assert "1 of 2 trials failed" in out.stderr and "CUDA" in out.stderr.split("trials failed", 1)[1], out.stderr[-3000:]
    _, children = child_runs(tmp_path, "tiny_fail")
    by_optim = {json.loads(r.data.tags["searched"])["optim.name"]: r for r in children}
    assert by_optim["adamw"].info.status == "FINISHED"
    failed = by_optim["paged_adamw_8bit"]
    assert failed.info.status == "FAILED"
    assert "CUDA" in failed.data.tags["error"]


def test_sigint_then_resume_runs_every_trial_exactly_once(tmp_path: Path, tiny_whisper_dir: Path) -> None:
    spec = write_sweep(tmp_path / "tiny_resume.yaml", tiny_whisper_dir,
                       {"lora.r": {"type": "grid", "values": [1, 2, 4]}}, searcher={"type": "grid"}, num_samples=3)
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(sweep_cmd(spec, tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    db = tmp_path / "mlflow.db"
    deadline = time.time() + 300
    # Interrupt once the first trial has finished and the second is running.
    while time.time() < deadline:
        time.sleep(1)
        if db.exists():
            with sqlite3.connect(db) as con:  # the trials' runs: those with a trial_id tag
                rows = con.execute("select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                                   "where t.key = 'trial_id'").fetchall()
            statuses = sorted(s for (s,) in rows)
            if statuses == ["FINISHED", "RUNNING"]:
                break
    else:
        proc.kill()
        pytest.fail("the sweep never reached its second trial")
    proc.send_signal(signal.SIGINT)
    first_out, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0, first_out[-3000:]
    out = run_sweep(spec, tmp_path, "--resume")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    parents, children = child_runs(tmp_path, "tiny_resume")
    assert len(parents) == 1
    ranks = sorted(json.loads(r.data.tags["searched"])["lora.r"] for r in children)
    assert ranks == [1, 2, 4], ranks  # every trial exactly once
    assert all(r.info.status == "FINISHED" for r in children)
    study = next((tmp_path / "results" / "tiny_resume").glob("*/optuna.db"))
    with sqlite3.connect(study) as con:
        states = sorted(s for (s,) in con.execute("select state from trials"))
    assert states == ["COMPLETE"] * 3, states

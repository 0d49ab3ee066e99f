"""Trials that survive faults, on a real multi-node Ray cluster started on this machine (platform.local_cluster):
a killed training worker, a removed node, a SIGKILLed sweep driver, and several trials at once across nodes.

Every fault is real: worker processes are SIGKILLed (found by their process title), nodes are removed with
all their processes, the driver is SIGKILLed. What MLflow holds afterwards is then checked against what the
trials reported.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import CONTRACT_METRICS, ROOT

pytestmark = pytest.mark.integration


def tiny_config(model: Path, steps: int, every: int, **optim: Any) -> dict[str, Any]:
    return {
        "model": str(model), "data": {"source": "espeak-smoke", "max_eval_items": 4, "max_val_items": 4},
        "precision": {"bits": 32}, "lora": {"r": 4}, "eval": {"max_new_tokens": 4},
        "optim": {"max_steps": steps, "warmup_steps": 2, "batch_size": 2, "checkpoint_every": every, **optim},
    }


def train_workers(cluster: Any) -> list[psutil.Process]:
    """The Ray Train worker processes (Ray names them after the actor class) on `cluster`'s worker nodes: never
    another Ray job's on the same machine."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::RayTrainWorker") and node_of(proc, cluster) is not None:
            found.append(proc)
    return found


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def rows_while_starting(db: Path, sql: str) -> list[tuple]:
    """Rows of a query on a store the sweep may still be creating: none while its file or tables are missing or
    while a writer holds the lock, so a polling predicate just tries again."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def checkpoints_under(root: Path) -> list[Path]:
    return sorted(root.rglob("checkpoint_step*/training_state.pt"))


def latest_checkpoint_steps(root: Path) -> dict[Path, int]:
    """The step of each Train run's latest mid-training checkpoint, by the run's folder under `root`."""
    latest: dict[Path, int] = {}
    for path in checkpoints_under(root):
        run, step = path.parents[1], int(path.parent.name.removeprefix("checkpoint_step"))
        latest[run] = max(step, latest.get(run, 0))
    return latest


def last_attempt(run: Path) -> dict[str, Any]:
    """Where the latest start of a Train run runs: the marker trainables.blocks.checkpoints.restarts wrote."""
    from trainables.blocks.checkpoints import ATTEMPTS

    markers = [json.loads(m.read_text()) for m in (run / ATTEMPTS).iterdir()]
    return max(markers, key=lambda m: m["started"])


@pytest.fixture(scope="module")
def cluster():
    """A head node (no CPUs: bookkeeping only) and three worker nodes of two CPUs each; this test process is a driver."""
    import ray

    from platform import local_cluster
    from trainables.blocks.launch import runtime_env

    c = local_cluster.start(nodes=3, cpus_per_node=2)
    ray.init(address=c.address, runtime_env=runtime_env(str(ROOT)), log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def fit_in_thread(trainer: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        out["result"] = trainer.fit()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_killed_worker_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
        cluster: Any, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    from trainables.blocks.launch import torch_trainer

    config = tiny_config(tiny_whisper_dir, steps=16, every=4)
    t0 = time.time()
    clean = torch_trainer("qlora", config, storage_path=str(tmp_path), name="clean", max_failures=1).fit()
    clean_s = time.time() - t0
    assert clean.error is None and clean.metrics["restarts"] == 0

    trainer = torch_trainer("qlora", config, storage_path=str(tmp_path), name="killed", max_failures=1)
    thread, out = fit_in_thread(trainer)
    first = wait_for(lambda: checkpoints_under(tmp_path / "killed"), 300, "the first mid-training checkpoint")
    victims = wait_for(lambda: train_workers(cluster), 30, "the training worker process")
    for proc in victims:
        proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    thread.join(600)
    print(f"\n[fault] worker SIGKILLed after {len(first)} checkpoint(s); the run finished {time.time() - killed_at:.0f} s "
          f"later (an uninterrupted run takes {clean_s:.0f} s)")
    result = out["result"]
    assert result.error is None, result.error
    assert result.metrics["restarts"] == 1
    assert result.metrics["step"] == 16
    for name in CONTRACT_METRICS:
        assert name in result.metrics and math.isfinite(result.metrics[name]), name
    killed_history = json.loads((Path(result.checkpoint.path) / "history.json").read_text())
    clean_history = json.loads((Path(clean.checkpoint.path) / "history.json").read_text())
    assert [p["step"] for p in killed_history] == list(range(1, 17))  # every step once, none lost or repeated
    # The resumed run continued exactly where the checkpoint left it: same batches, same dropout, same optimiser.
    for a, b in zip(killed_history, clean_history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6), (a, b)
    assert result.metrics["wer"] == pytest.approx(clean.metrics["wer"], abs=1e-9)
    assert first  # the kill came after a checkpoint, which is what made the resume possible
    # Only the latest checkpoints stay in storage (keep_checkpoints = 2, the final artifacts among them).
    assert len([p for p in (tmp_path / "killed").glob("checkpoint_*") if p.is_dir()]) <= 2


# --------------------------------------------------------------------------- whole sweeps on the cluster


def write_sweep(path: Path, model: Path, space: dict[str, Any], steps: int, every: int, **extra: Any) -> Path:
    config = tiny_config(model, steps, every)
    config["eval"]["every"] = extra.pop("eval_every", 10)
    spec = {"method": "qlora", "description": "fault test", "config": config, "space": space,
            "searcher": {"type": "grid", "seed": 0}, "baseline": False,
            "resources": {"num_workers": 1, "cpus_per_worker": 1}, "failure": {"max_failures": 2}, **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_cmd(spec: Path, tmp: Path, *more: str, uri: str | None = None) -> list[str]:
    return [sys.executable, "-m", "platform.sweep", str(spec), "--preset", "local",
            "--tracking-uri", uri or f"sqlite:///{tmp / 'mlflow.db'}", "--storage", str(tmp / "results"),
            "--no-register", *more]


def on_cluster(cluster: Any) -> dict[str, str]:
    return {**os.environ, "RAY_ADDRESS": cluster.address, "SPEECH_SWEEPS_PROGRESS_S": "5"}


def trial_runs(tmp: Path, name: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name(name).experiment_id], max_results=1000)
    return [r for r in runs if "trial_id" in r.data.tags]


def study_states(tmp: Path, name: str) -> list[str]:
    db = next((tmp / "results" / name).glob("*/optuna.db"))
    with sqlite3.connect(db) as con:
        return sorted(s for (s,) in con.execute("select state from trials"))


def assert_complete_record(tmp: Path, run: Any, steps: int, eval_every: int, uri: str | None = None) -> None:
    """A finished trial's MLflow run holds every contract metric, each training step once (as the trial's own
    history has it), and each validation once."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri or f"sqlite:///{tmp / 'mlflow.db'}")
    rid = run.info.run_id
    assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags.get("error"))
    for name in [*CONTRACT_METRICS, "restarts"]:
        assert name in run.data.metrics and math.isfinite(run.data.metrics[name]), (run.info.run_name, name)
    # The trial's cost, from the driver's clock: positive wall time, no GPU reserved on this CPU cluster.
    assert run.data.metrics["trial_wall_s"] > 0 and run.data.metrics["gpu_hours"] == 0
    history = json.loads(Path(c.download_artifacts(rid, "history.json", str(tmp / f"dl-{rid}"))).read_text())
    assert [p["step"] for p in history] == list(range(1, steps + 1))
    curve = sorted((m.step, m.value) for m in c.get_metric_history(rid, "train_loss"))
    assert curve == [(p["step"], pytest.approx(p["loss"])) for p in history]
    val_steps = sorted(m.step for m in c.get_metric_history(rid, "val_wer"))
    assert val_steps == [*range(eval_every, steps, eval_every), steps], val_steps


def node_of(proc: psutil.Process, cluster: Any) -> Any:
    """The cluster node whose raylet started `proc`."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
    for parent in proc.parents():
        if parent.pid in raylets:
            return raylets[parent.pid]
    return None


def test_the_cluster_requires_rays_token_and_a_sweep_without_it_stops_in_one_line(
        cluster: Any, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    """platform.local_cluster's nodes run with Ray's token authentication. A sweep that joins by address without
    RAY_AUTH_MODE=token is refused: one line naming the address and the fix, exit 2, and no private Ray run
    instead of the cluster that was asked for."""
    spec = write_sweep(tmp_path / "ft_auth.yaml", tiny_whisper_dir, {"lora.r": {"type": "grid", "values": [1]}},
                       10, 5, eval_every=5, num_samples=1)
    env = {k: v for k, v in on_cluster(cluster).items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    out = subprocess.run(sweep_cmd(spec, tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: RAY_ADDRESS={cluster.address}: cannot join") and "RAY_AUTH_MODE=token" in last, last
    assert out.stdout == ""  # refused before the plan
    assert not (tmp_path / "results" / "ft_auth").exists()


def test_four_trials_across_nodes_survive_a_removed_node_with_nothing_lost(
        cluster: Any, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    steps, every, eval_every = 30, 5, 10
    spec = write_sweep(tmp_path / "ft_nodes.yaml", tiny_whisper_dir, {"lora.r": {"type": "grid", "values": [1, 2, 4, 8]}},
                       steps, every, eval_every=eval_every, num_samples=4, max_concurrent_trials=4)
    proc = subprocess.Popen(sweep_cmd(spec, tmp_path), cwd=ROOT, env=on_cluster(cluster), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    train_root = tmp_path / "results" / "ft_nodes"
    # Once every trial has a checkpoint, take away the node of the trial furthest from done (its latest checkpoint
    # the earliest), with all its processes. Its rank-0 worker is the one its latest start recorded.
    wait_for(lambda: len(latest_checkpoint_steps(train_root)) >= 4, 600, "a checkpoint of each of the 4 trials",
             interval=0.5)
    steps_done = latest_checkpoint_steps(train_root)
    behind = min(steps_done, key=steps_done.get)
    victim = node_of(psutil.Process(last_attempt(behind)["pid"]), cluster)
    assert victim is not None, f"{behind.name}'s worker is not on a worker node"
    hosted = sum(1 for w in train_workers(cluster) if node_of(w, cluster) is victim)
    cluster.remove_node(victim, allow_graceful=False)
    removed_at = time.time()
    cluster.add_node(num_cpus=2, object_store_memory=200 * 1024 * 1024)  # the autoscaler's replacement
    out, _ = proc.communicate(timeout=900)
    print(f"\n[fault] node removed with {hosted} trial worker(s) on it, {behind.name} at step "
          f"{steps_done[behind]}/{steps}; the sweep finished {time.time() - removed_at:.0f} s later")
    assert proc.returncode == 0, out[-4000:]
    runs = trial_runs(tmp_path, "ft_nodes")
    assert sorted(json.loads(r.data.tags["searched"])["lora.r"] for r in runs) == [1, 2, 4, 8]  # each once
    for run in runs:
        assert_complete_record(tmp_path, run, steps, eval_every)
    # The trial behind restarted once, on another node; another trial on the node may have been finishing (its
    # result reported, nothing to restart), so at most `hosted` restarts in all.
    restarts = {f"train-{r.data.tags['trial_id']}": r.data.metrics["restarts"] for r in runs}
    assert restarts[behind.name] == 1, restarts
    assert last_attempt(behind)["node_id"] != victim.node_id
    assert sum(restarts.values()) <= hosted, (restarts, hosted)
    assert study_states(tmp_path, "ft_nodes") == ["COMPLETE"] * 4


def test_sigkilled_driver_then_resume_keeps_finished_trials_and_completes_the_interrupted_one(
        cluster: Any, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    steps, every = 16, 4
    spec = write_sweep(tmp_path / "ft_driver.yaml", tiny_whisper_dir, {"lora.r": {"type": "grid", "values": [1, 2, 4]}},
                       steps, every, eval_every=8, num_samples=3, max_concurrent_trials=1)
    proc = subprocess.Popen(sweep_cmd(spec, tmp_path), cwd=ROOT, env=on_cluster(cluster), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    train_root = tmp_path / "results" / "ft_driver"
    db = tmp_path / "mlflow.db"

    def second_trial_checkpointed() -> bool:
        statuses = sorted(s for (s,) in rows_while_starting(
            db, "select r.status from runs r join tags t on t.run_uuid = r.run_uuid where t.key = 'trial_id'"))
        trials_with_state = {p.parents[1] for p in checkpoints_under(train_root)}
        return statuses == ["FINISHED", "RUNNING"] and len(trials_with_state) >= 2

    wait_for(second_trial_checkpointed, 600, "the first trial finished and the second checkpointed", interval=0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    t0 = time.time()
    out = subprocess.run(sweep_cmd(spec, tmp_path, "--resume"), cwd=ROOT, env=on_cluster(cluster),
                         capture_output=True, text=True, timeout=900)
    print(f"\n[fault] driver SIGKILLed mid-trial; --resume finished the sweep in {time.time() - t0:.0f} s")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    runs = trial_runs(tmp_path, "ft_driver")
    assert sorted(json.loads(r.data.tags["searched"])["lora.r"] for r in runs) == [1, 2, 4]  # nothing doubled
    for run in runs:
        assert_complete_record(tmp_path, run, steps, 8)
    assert sorted(r.data.metrics["restarts"] for r in runs) == [0, 0, 1]  # the interrupted one resumed once
    assert study_states(tmp_path, "ft_driver") == ["COMPLETE"] * 3


def test_asha_stops_worse_trials_early_and_the_report_keeps_them_apart(
        cluster: Any, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    # Training loss, not validation WER, is the rung metric here: a random 2-layer model's WER is 1.0 whatever
    # its learning rate, while its loss separates lr 3e-3 from 1e-7 within 5 steps.
    steps = 20
    spec = write_sweep(tmp_path / "ft_asha.yaml", tiny_whisper_dir,
                       {"optim.lr": {"type": "grid", "values": [3e-3, 1e-7, 2e-7, 4e-7]}}, steps, 0, eval_every=5,
                       num_samples=4, max_concurrent_trials=1,
                       scheduler={"type": "asha", "metric": "loss", "mode": "min", "grace_period": 5,
                                  "reduction_factor": 2})
    out = subprocess.run(sweep_cmd(spec, tmp_path), cwd=ROOT, env=on_cluster(cluster), capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    runs = trial_runs(tmp_path, "ft_asha")
    stopped = [r for r in runs if r.data.tags.get("stopped_early") == "true"]
    full = [r for r in runs if r.info.status == "FINISHED"]
    assert stopped and full and len(stopped) + len(full) == 4
    for run in stopped:
        assert run.info.status == "KILLED"
        assert 5 <= int(run.data.tags["stopped_at_step"]) < steps
        assert "wer" not in run.data.metrics
    for run in full:
        assert run.data.metrics["step"] == steps and "wer" in run.data.metrics
    assert "STOPPED EARLY (step" in out.stdout
    assert "Cost: 4 trials," in out.stdout and "0.00 GPU-hours" in out.stdout
    assert study_states(tmp_path, "ft_asha").count("PRUNED") == len(stopped)


def start_mlflow_server(db: Path | str, artifacts: Path, port: int, *more: str,
                        env: dict[str, str] | None = None) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port`, its runs in `db` (an sqlite file, or a database URL) and its artifacts
    proxied into `artifacts`, with `more` options; returns once it answers."""
    store = db if isinstance(db, str) else f"sqlite:///{db}"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), *more],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)

    def healthy() -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return True
        except OSError:
            return False

    wait_for(healthy, 120, "the MLflow server to answer", interval=0.5)
    return proc


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def test_tracking_server_away_for_30_s_mid_sweep_loses_nothing(cluster: Any, tiny_whisper_dir: Path,
                                                                tmp_path: Path) -> None:
    import socket

    from mlflow.tracking import MlflowClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db, artifacts, uri = tmp_path / "server.db", tmp_path / "artifacts", f"http://127.0.0.1:{port}"
    server = start_mlflow_server(db, artifacts, port)
    steps, eval_every = 16, 8
    spec = write_sweep(tmp_path / "ft_server.yaml", tiny_whisper_dir, {"lora.r": {"type": "grid", "values": [1, 2]}},
                       steps, 0, eval_every=eval_every, num_samples=2, max_concurrent_trials=1)
    cmd = sweep_cmd(spec, tmp_path, uri=uri)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=on_cluster(cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        # The server stops once the first trial has logged a training step, not when its run exists: a trial
        # still starting (Ray Train's workers, the model) on busy cores can outlast the outage without writing.
        def first_trial_training() -> bool:
            if proc.poll() is not None:  # the sweep ended before any trial ran: say why, at once
                pytest.fail(f"the sweep exited ({proc.returncode}) before its first trial: {proc.stdout.read()[-3000:]}")
            return bool(rows_while_starting(db, "select 1 from metrics m join tags t on t.run_uuid = m.run_uuid "
                                                "where t.key = 'trial_id' and m.key = 'loss'"))

        wait_for(first_trial_training, 600, "the first trial's first logged step", interval=0.5)
        stop(server)
        time.sleep(30)  # trials go on reporting while nothing answers
        server = start_mlflow_server(db, artifacts, port)
        back_at = time.time()
        out, _ = proc.communicate(timeout=900)
        print(f"\n[fault] MLflow server down 30 s; the sweep finished {time.time() - back_at:.0f} s after it was back")
        assert proc.returncode == 0, out[-4000:]
        assert "does not answer" in out and "is back after" in out, out[-4000:]
        c = MlflowClient(uri)
        runs = [r for r in c.search_runs([c.get_experiment_by_name("ft_server").experiment_id]) if "trial_id" in r.data.tags]
        assert sorted(json.loads(r.data.tags["searched"])["lora.r"] for r in runs) == [1, 2]
        for run in runs:
            assert_complete_record(tmp_path, run, steps, eval_every, uri=uri)
    finally:
        if proc.poll() is None:
            proc.kill()
        stop(server)

"""MLflow records of a sweep, all written from the driver process.

One experiment per sweep name, one parent run per sweep, one child run per Tune trial. Trials
report to Ray Tune; `MlflowTrials`, a Tune callback running in the driver, turns those reports
into MLflow params, metrics, tags and artifacts. A single writer is what keeps concurrent trials
from ever hitting "database is locked" on the default sqlite store.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables.config import flatten

# Tune's bookkeeping keys that are not metrics of the trial.
_NOT_METRICS = {
    "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid", "time_since_restore",
    "iterations_since_restore", "done", "trial_id", "date", "hostname", "node_ip", "checkpoint_dir_name",
    "should_checkpoint", "experiment_tag", "timesteps_total", "episodes_total", "timesteps_since_restore",
}
PARAM_LIMIT = 6000


def default_tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else c.create_experiment(name)


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, numbers.Number):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def log_params(c: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)[:PARAM_LIMIT])
             for k, v in flatten(params).items()]
    for i in range(0, len(items), 90):
        c.log_batch(run_id, params=items[i : i + 90])


def log_metrics(c: Any, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, v, now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 900):
        c.log_batch(run_id, metrics=items[i : i + 900])


def resolved_config(method: str, fixed: dict[str, Any], space: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """A trial's whole config, defaults included, as the method parses it."""
    from platform.spaces import trial_config
    from trainables import load_method
    from trainables.config import to_dict

    return to_dict(load_method(method).parse_config(trial_config(fixed, space, sampled)))


def start_parent(uri: str, sweep_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
    c = client(uri)
    run = c.create_run(experiment_id(uri, sweep_name), run_name=f"{sweep_name}-{tags.get('stamp', '')}", tags=tags)
    log_params(c, run.info.run_id, params)
    return run.info.run_id


class MlflowTrials(Callback):
    """Tune callback: a child run per trial with params, per-step and final metrics, artifacts, status."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str, tags: dict[str, str], method: str,
                 fixed_config: dict[str, Any], space: dict[str, Any]) -> None:
        self.uri, self.experiment, self.parent = uri, experiment, parent_run_id
        self.tags, self.method, self.fixed, self.space = tags, method, fixed_config, space
        self.runs: dict[str, str] = {}
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def c(self) -> Any:
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    def run_id(self, trial: Any) -> str:
        """The trial's child run, created once; a resumed trial continues its own run."""
        tid = trial.trial_id
        if tid in self.runs:
            return self.runs[tid]
        exp = experiment_id(self.uri, self.experiment)
        found = self.c.search_runs(
            [exp], filter_string=f"tags.trial_id = '{tid}' and tags.`mlflow.parentRunId` = '{self.parent}'"
        )
        if found:
            run_id = found[0].info.run_id
            self.c.update_run(run_id, status="RUNNING")
        else:
            tags = {**self.tags, "trial_id": tid, "mlflow.parentRunId": self.parent}
            run_id = self.c.create_run(exp, run_name=str(trial), tags=tags).info.run_id
            sampled = dict(trial.config)
            log_params(self.c, run_id, resolved_config(self.method, self.fixed, self.space, sampled))
            self.c.set_tag(run_id, "searched", json.dumps(sampled))
        self.runs[tid] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        metrics = numeric_metrics(result)
        step = int(result.get("step", result.get("training_iteration", 0)))
        log_metrics(self.c, self.run_id(trial), metrics, step)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        last = trial.last_result or {}
        if "wer" not in last:  # stopped by the scheduler before its final evaluation
            self.c.set_tag(run_id, "early_stopped", "true")
        path = last.get("checkpoint_path")
        if path and Path(path).is_dir():
            history = Path(path) / "history.json"
            if history.exists():  # per-step training curves
                for point in json.loads(history.read_text()):
                    log_metrics(self.c, run_id, {f"train_{k}": float(v) for k, v in point.items() if k != "step"},
                                int(point["step"]))
            self.c.log_artifacts(run_id, path)
        elif path:
            self.c.set_tag(run_id, "artifacts_at", str(path))
        self.c.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        error = _trial_error(trial)
        self.c.set_tag(run_id, "error", error.strip().splitlines()[-1][:5000] if error.strip() else "unknown error")
        self.c.log_text(run_id, error, "error.txt")
        self.c.set_terminated(run_id, "FAILED")


def _trial_error(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        if path and Path(path).exists():
            return Path(path).read_text()
    except OSError:
        pass
    for attr in ("error_msg", "get_error"):
        value = getattr(trial, attr, None)
        value = value() if callable(value) else value
        if value:
            return str(value)
    return "the trial failed without an error message"

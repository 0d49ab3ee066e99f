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
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray.tune import Callback

from platform.cluster import unwritable
from platform.train_reports import CHECKPOINT_PATH
from trainables.blocks.config import flatten, redact, redact_text

# Tune's bookkeeping keys that are not metrics of the trial.
_NOT_METRICS = {
    "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid", "time_since_restore",
    "iterations_since_restore", "done", "trial_id", "date", "hostname", "node_ip", "checkpoint_dir_name",
    "should_checkpoint", "experiment_tag", "timesteps_total", "episodes_total", "timesteps_since_restore",
}
PARAM_LIMIT = 6000
STOPPED_EARLY = "stopped_early"
"""Tag of a trial the scheduler (ASHA) stopped before its end ("true"); its run's status is KILLED."""
STOPPED_AT_STEP = "stopped_at_step"
"""Tag: the training step a stopped trial had reached."""


def default_tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


class TrackingUnreachable(RuntimeError):
    """The tracking store cannot be reached or written; the message is one line naming the URI."""


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast (within `timeout_s`) when the MLflow store at `uri` cannot be used.

    MLflow's own client retries an unreachable server with back-off for minutes before it raises; a sweep
    would print its plan and then sit silent. An http(s) server must answer (any HTTP status but 401/403: a
    proxy's own pages still answer); sqlite and file stores need a folder that can be written.
    """
    import urllib.error
    import urllib.request
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()  # noqa: S310 - http(s) only
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise TrackingUnreachable(f"{uri}: the tracking server refuses access (HTTP {exc.code}); "
                                          "set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingUnreachable(f"{uri}: no MLflow tracking server answers there ({reason}); start one "
                                      "(mlflow server ...) or leave out --tracking-uri for sqlite:///mlflow.db") from None
        return
    if parsed.scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        folder = path.parent if path is not None and str(path) not in ("", ":memory:") else None
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path or uri)
    else:
        return  # databricks, ...: MLflow's own errors
    if folder is not None:
        problem = unwritable(folder)
        if problem:
            raise TrackingUnreachable(f"{uri}: cannot write the tracking store there ({problem})")


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""The experiment kind that makes MLflow's UI open an experiment on its runs table (model training),
not on the GenAI overview of traces and sessions."""
DESCRIPTION = "mlflow.note.content"
"""The tag MLflow's UI shows (and edits) as a run's description, in markdown."""


def experiment_id(uri: str, name: str) -> str:
    """The sweep's experiment, created as (or marked) a model-training experiment."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c.create_experiment(name, tags={EXPERIMENT_KIND: MODEL_TRAINING})
    if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return exp.experiment_id


# Short names of searched keys in run names: the last part of the dotted key, or these.
SHORT_NAMES = {"lambda_": "λ", "alpha": "α", "beta": "β", "snr_db": "snr", "temperature": "T"}


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def trial_label(sampled: dict[str, Any], space: dict[str, Any]) -> str:
    """A run name saying what a trial tried, in the space's order: `r=16`, `nf4·seed=1`, `λ=0.3·snr=10`
    (a named level by its name alone; a key by its last part, or the whole key where two would clash)."""
    keys = [k for k in space if k in sampled] + [k for k in sampled if k not in space]
    short = {k: SHORT_NAMES.get(k.rsplit(".", 1)[-1], k.rsplit(".", 1)[-1].rstrip("_")) for k in keys}
    clashes = {v for v in short.values() if list(short.values()).count(v) > 1}
    parts = []
    for key in keys:
        if getattr(space.get(key), "named", None) is not None:
            parts.append(str(sampled[key]))
        else:
            parts.append(f"{key if short[key] in clashes else short[key]}={_short_value(sampled[key])}")
    return "·".join(parts) or "trial"


def dataset_inputs(config: dict[str, Any]) -> list[Any]:
    """MLflow dataset inputs for the data a config trains and is evaluated on: one per split, named after the
    source, with its split, source, digest and size (trainables.blocks.data.describe_split; no audio is read)."""
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    from trainables.blocks.data import describe_split

    class SpeechSplit(MetaDataset):
        """A split of speech recorded by reference (no audio in MLflow), its size as the profile."""

        def __init__(self, source: Any, name: str, digest: str, profile: dict[str, Any]) -> None:
            self._profile = profile
            super().__init__(source=source, name=name, digest=digest)

        @property
        def profile(self) -> dict[str, Any]:
            return self._profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self._profile)}

    data = config.get("data")
    if not isinstance(data, dict) or not data.get("source"):
        return []
    source, hub_config = str(data["source"]), data.get("hub_config")
    out = []
    splits = [(source, "training", "train_split", "max_train_items"),
              (source, "validation", "val_split", "max_val_items"),
              (source, "evaluation", "eval_split", "max_eval_items")]
    if data.get("replay_source"):  # replayed into training: its train split, of which the trial takes the first ones
        splits.append((str(data["replay_source"]), "training", "", ""))
    for src, context, split_key, items_key in splits:
        split = str(data.get(split_key, {"training": "train", "validation": "validation"}.get(context, "test")))
        d = describe_split(src, split, data.get(items_key), hub_config, data.get("audio_column"),
                           data.get("text_column"))
        origin = (HuggingFaceDatasetSource(path=src, config_name=hub_config, split=split) if d["kind"] == "hub"
                  else LocalArtifactDatasetSource(d["uri"]))
        profile = {"split": d["split"], "utterances": d["size"] if d["size"] is not None else "unknown"}
        if src != source:
            profile["replay_fraction"] = data.get("replay_fraction", 0.25)
        dataset = SpeechSplit(origin, src, d["digest"], profile)
        out.append(DatasetInput(dataset=dataset._to_mlflow_entity(),
                                tags=[InputTag("mlflow.data.context", context), InputTag("split", d["split"])]))
    return out


def log_datasets(c: Any, run_id: str, config: dict[str, Any]) -> None:
    """Record the config's data as the run's dataset inputs; a source that cannot be described is skipped."""
    try:
        inputs = dataset_inputs(config)
    except (ValueError, KeyError, OSError):
        return
    if inputs:
        c.log_inputs(run_id, datasets=inputs)


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, numbers.Number):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def log_params(c: Any, run_id: str, params: dict[str, Any]) -> None:
    """Params, flattened with dots; token-like values (a secret given with --set, say) are redacted."""
    from mlflow.entities import Param

    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)[:PARAM_LIMIT])
             for k, v in flatten(redact(params)).items()]
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
    from trainables.blocks.config import to_dict

    return to_dict(load_method(method).parse_config(trial_config(fixed, space, sampled)))


def start_parent(uri: str, sweep_name: str, tags: dict[str, str], params: dict[str, Any],
                 config: dict[str, Any] | None = None,
                 describe: Callable[[dict[str, str], str, str], str] | None = None) -> str:
    """The sweep's parent run: its tags and params, its description (`describe(tags as logged, experiment id,
    run id)`, markdown) and, from `config` (a resolved trial config), the data it uses."""
    c = client(uri)
    exp = experiment_id(uri, sweep_name)
    tags = redact(tags)
    run = c.create_run(exp, run_name=f"{sweep_name}-{tags.get('stamp', '')}", tags=tags)
    run_id = run.info.run_id
    log_params(c, run_id, params)
    if describe is not None:
        c.set_tag(run_id, DESCRIPTION, describe(tags, exp, run_id))
    if config is not None:
        log_datasets(c, run_id, config)
    return run_id


class MlflowTrials(Callback):
    """Tune callback: a child run per trial with params, per-step and final metrics, artifacts, status.

    Every write to MLflow goes through one queue, written in order by one background thread, so Tune's loop
    never waits on MLflow. When the tracking server cannot be reached, the writer retries the waiting write
    every RETRY_EVERY_S seconds and the sweep goes on (Ray keeps the trials' results); once the server is
    back the queue is written out. The end of the sweep waits up to `flush_wait_s` for the queue to empty.
    """

    def __init__(self, uri: str, experiment: str, parent_run_id: str, tags: dict[str, str], method: str,
                 fixed_config: dict[str, Any], space: dict[str, Any], flush_wait_s: float = 900.0,
                 scheduled: bool = False, gpus_per_trial: float = 0.0) -> None:
        self.uri, self.experiment, self.parent = uri, experiment, parent_run_id
        self.tags, self.method, self.fixed, self.space = tags, method, fixed_config, space
        self.flush_wait_s, self.scheduled, self.gpus_per_trial = flush_wait_s, scheduled, gpus_per_trial
        self.started: dict[str, float] = {}
        """When this driver saw each trial start (its cost clock: `trial_wall_s`, `gpu_hours`)."""
        self.runs: dict[str, str] = {}
        self.logged_step: dict[str, int] = {}
        """The last training step logged per trial (replayed steps after a restart are not logged twice)."""
        self.finished: set[str] = set()
        """Trials whose MLflow run had finished before a resumed sweep restarted them: nothing more is logged."""
        self.final: dict[str, dict[str, float]] = {}
        """The final result (the one with `wer`) logged per trial. A trial restarted after it had reported it (its
        node was lost before Tune saw it end) reports it again; only what changed (`restarts`) is logged then."""
        self._unlogged_params: dict[str, dict[str, Any]] = {}
        self._creating: set[str] = set()
        """Trials whose run creation was sent but not answered (a busy server may still make it)."""
        self._outage_since: float | None = None
        self._ops: queue.Queue | None = None
        self._writer: threading.Thread | None = None
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        state = dict(self.__dict__)
        state.update(_client=None, _ops=None, _writer=None)  # a resumed sweep re-reads what it needs from MLflow
        return state

    @property
    def c(self) -> Any:
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    # ------------------------------------------------------------------ the write queue

    def write(self, op: Callable[[], None]) -> None:
        """Queue one MLflow write behind those still waiting (the writer thread writes them in order)."""
        if self._ops is None:
            self._ops = queue.Queue()
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_loop, name="mlflow-writer", daemon=True)
            self._writer.start()
        self._ops.put(op)

    def _write_loop(self) -> None:
        assert self._ops is not None
        while True:
            op = self._ops.get()
            try:
                self._write_one(op)
            finally:
                self._ops.task_done()

    def _write_one(self, op: Callable[[], None]) -> None:
        while True:
            try:
                op()
            except Exception as exc:  # noqa: BLE001 - sorted below: unreachable waits, anything else is dropped
                if not unreachable(exc):
                    print(f"mlflow: a write failed and is skipped: {redact_text(str(exc)).splitlines()[0][:300]}",
                          file=sys.stderr, flush=True)
                    return
                if self._outage_since is None:
                    self._outage_since = time.time()
                    print(f"mlflow: {self.uri} does not answer; the sweep goes on and its records wait to be "
                          "logged when it is back", file=sys.stderr, flush=True)
                time.sleep(RETRY_EVERY_S)
                continue
            if self._outage_since is not None:
                print(f"mlflow: {self.uri} is back after {time.time() - self._outage_since:.0f} s; the waiting "
                      "records are being logged", file=sys.stderr, flush=True)
                self._outage_since = None
            return

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued write is done (True), or `timeout_s` passed (False)."""
        deadline = time.time() + timeout_s
        while self._ops is not None and self._ops.unfinished_tasks:
            if time.time() > deadline:
                return False
            time.sleep(0.1)
        return True

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if not self.flush(self.flush_wait_s):
            left = self._ops.unfinished_tasks if self._ops is not None else 0
            print(f"mlflow: {left} records could not be logged: {self.uri} stayed unreachable for "
                  f"{self.flush_wait_s:.0f} s after the last trial (Ray keeps the results under the sweep's "
                  "storage)", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ runs

    def run_id(self, trial: Any) -> str:
        """The trial's child run, created once (with its params and data); a resumed trial continues its own run.
        Runs in the writer thread: a write that fails half-way is retried from here."""
        tid = trial.trial_id
        if tid not in self.runs:
            exp = experiment_id(self.uri, self.experiment)
            found = self._find_trial_run(exp, tid)
            if found:
                run_id = found[0].info.run_id
                if found[0].info.status == "FINISHED":  # finished before the driver was lost; the rerun only re-reports
                    self.finished.add(tid)
                else:
                    self.c.update_run(run_id, status="RUNNING")
                    # This driver may be a new one (--resume after the old one was lost): MLflow, not the
                    # callback's saved state, knows which steps the trial has logged.
                    logged = [m.step for m in self.c.get_metric_history(run_id, "loss")]
                    self.logged_step[tid] = max([self.logged_step.get(tid, -1), *logged])
                    if "wer" in found[0].data.metrics:
                        self.final.setdefault(tid, dict(found[0].data.metrics))
                self.runs[tid] = run_id
            else:
                sampled = dict(trial.config)
                tags = {**self.tags, "trial_id": tid, "mlflow.parentRunId": self.parent,
                        "searched": json.dumps(redact(sampled))}
                try:
                    self.runs[tid] = self.c.create_run(exp, run_name=redact_text(trial_label(sampled, self.space)),
                                                       tags=tags).info.run_id
                except Exception as exc:
                    if timed_out(exc):  # sent, unanswered: the server may still make it
                        self._creating.add(tid)
                    raise
                self._unlogged_params[tid] = resolved_config(self.method, self.fixed, self.space, sampled)
        if tid in self._unlogged_params:  # params of the same value may be logged again: a retry is harmless
            config = self._unlogged_params[tid]
            log_params(self.c, self.runs[tid], config)
            log_datasets(self.c, self.runs[tid], config)
            del self._unlogged_params[tid]
        return self.runs[tid]

    def _find_trial_run(self, exp: str, tid: str) -> list[Any]:
        """The trial's run(s) under this sweep's parent, oldest first. After a creation that got no answer, the
        server may still be making the run (a client timeout does not cancel it): look for it for up to
        CREATE_WAIT_S before the caller creates another, which would leave the trial two runs."""
        query = f"tags.trial_id = '{tid}' and tags.`mlflow.parentRunId` = '{self.parent}'"
        deadline = time.time() + (CREATE_WAIT_S if tid in self._creating else 0.0)
        while True:
            found = sorted(self.c.search_runs([exp], filter_string=query), key=lambda r: r.info.start_time)
            if found or time.time() >= deadline:
                self._creating.discard(tid)
                return found
            time.sleep(2.0)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())
        self.write(lambda: self.run_id(trial))

    def _log_cost(self, trial: Any) -> None:
        """trial_wall_s (start to end as the driver saw it, restarts included) and gpu_hours (× GPUs reserved)."""
        wall = time.time() - self.started.get(trial.trial_id, time.time())
        cost = {"trial_wall_s": wall, "gpu_hours": wall * self.gpus_per_trial / 3600}
        step = int((trial.last_result or {}).get("step", 0))
        self.write(lambda: self._unless_finished(trial, lambda rid: log_metrics(self.c, rid, cost, step)))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        metrics = numeric_metrics(result)
        step = int(result.get("step", result.get("training_iteration", 0)))
        tid = trial.trial_id

        def op() -> None:
            run_id = self.run_id(trial)
            # A trial that Ray Train restarted from a checkpoint reports again the steps after that checkpoint;
            # MLflow already has them, so its curves keep one point per step.
            if tid in self.finished or ("wer" not in result and step <= self.logged_step.get(tid, -1)):
                return
            before = self.final.get(tid, {})  # empty until the final result is logged
            log_metrics(self.c, run_id, {k: v for k, v in metrics.items() if before.get(k) != v}, step)
            if "wer" in result:
                self.final[tid] = {**before, **metrics}
            self.logged_step[tid] = max(step, self.logged_step.get(tid, -1))

        self.write(op)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = dict(trial.last_result or {})
        self._log_cost(trial)
        if "wer" not in last and not self.scheduled:  # no scheduler stops trials: it ended without its result
            line = "the trial ended without reporting its final metrics"
            self.write(lambda: self._unless_finished(trial, self.c.set_tag, "error", line))
            self.write(lambda: self._unless_finished(trial, self.c.set_terminated, "FAILED"))
            return
        if "wer" not in last:  # stopped by the scheduler (ASHA) before its final evaluation
            for key, value in ((STOPPED_EARLY, "true"), (STOPPED_AT_STEP, str(int(last.get("step", 0))))):
                self.write(lambda key=key, value=value: self._unless_finished(trial, self.c.set_tag, key, value))
            self.write(lambda: self._unless_finished(trial, self.c.set_terminated, "KILLED"))
            return
        path = last.get(CHECKPOINT_PATH)
        if path and Path(path).is_dir():
            history = Path(path) / "history.json"
            if history.exists():  # per-step training curves
                for point in json.loads(history.read_text()):
                    metrics = {f"train_{k}": float(v) for k, v in point.items() if k != "step"}
                    self.write(lambda m=metrics, s=int(point["step"]): self._unless_finished(
                        trial, lambda rid: log_metrics(self.c, rid, m, s)))
            self.write(lambda: self._unless_finished(trial, self.c.log_artifacts, path))
        elif path:
            self.write(lambda: self._unless_finished(trial, self.c.set_tag, "artifacts_at", str(path)))
        self.write(lambda: self._unless_finished(trial, self.c.set_terminated, "FINISHED"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = redact_text(_trial_error(trial))
        line = error.strip().splitlines()[-1][:5000] if error.strip() else "unknown error"
        self._log_cost(trial)
        self.write(lambda: self.c.set_tag(self.run_id(trial), "error", line))
        self.write(lambda: self.c.log_text(self.run_id(trial), error, "error.txt"))
        self.write(lambda: self.c.set_terminated(self.run_id(trial), "FAILED"))

    def _unless_finished(self, trial: Any, fn: Callable[..., Any], *args: Any) -> None:
        """fn(run_id, *args), unless the trial's run had finished before this driver started (nothing to add)."""
        run_id = self.run_id(trial)
        if trial.trial_id not in self.finished:
            fn(run_id, *args)


CREATE_WAIT_S = 60.0
"""How long a trial's run is looked for after its creation got no answer, before it is created again."""
RETRY_EVERY_S = 5.0
"""Seconds between two tries to reach a tracking server that stopped answering."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or during (the MLflow client wraps requests' errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def unreachable(exc: BaseException) -> bool:
    """Whether an MLflow client error means the server could not be reached (worth retrying), not a refused write."""
    import requests

    kinds = (ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    signs = ("Max retries exceeded", "Connection refused", "Connection aborted", "Read timed out", "503", "502", "504")
    return any(isinstance(e, kinds) or any(s in str(e) for s in signs) for e in _chain(exc))


def timed_out(exc: BaseException) -> bool:
    """Whether an MLflow client error was a request the server got but did not answer in time (it may still act
    on it), rather than one that never reached it."""
    import requests

    kinds = (TimeoutError, requests.exceptions.ReadTimeout)
    return any(isinstance(e, kinds) or "Read timed out" in str(e) for e in _chain(exc))


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

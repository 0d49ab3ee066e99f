"""Finding a finished trial's result for `platform.transcribe` and `platform.export`: RUN is an MLflow run
id (a trial's child run, or a sweep's parent run, meaning its best trial) or a trial's artifact folder."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platform import tracking
from platform.cluster import ROOT


class RunError(ValueError):
    """RUN names no usable trial; the message is one line."""


@dataclass
class TrialResult:
    """A trial's artifact folder on this machine and the method that wrote it."""

    path: Path
    method: str
    label: str
    """How to name it in messages: the run's name and id, or the folder."""
    run_id: str | None = None
    """The trial's MLflow run (None when RUN was a folder)."""


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve(run: str, tracking_uri: str | None = None) -> TrialResult:
    """The trial RUN names, its artifacts downloaded (once, into the cache) when RUN is an MLflow run."""
    path = Path(run).expanduser()
    if path.exists():
        return _from_folder(path)
    if not _RUN_ID.match(run):
        raise RunError(f"RUN {run!r}: no such folder, and not an MLflow run id (32 hex characters)")
    uri = tracking_uri or tracking.default_tracking_uri(ROOT)
    return _from_mlflow(run, uri)


def _from_folder(path: Path) -> TrialResult:
    from trainables import METHODS
    from trainables.blocks.inference import ArtifactError, method_of, read_trial

    try:
        trial = read_trial(path)
    except ArtifactError as exc:
        raise RunError(f"RUN {exc}") from None
    method = method_of(path) or _method_by_config(trial.config)
    if method is None or method not in METHODS:
        raise RunError(f"RUN {path}: cannot tell which method wrote it (no method.json; known: {', '.join(METHODS)})")
    return TrialResult(path, method, str(path))


def _method_by_config(config: dict[str, Any]) -> str | None:
    """For folders written before method.json existed: the one method whose config parses this one."""
    from trainables import METHODS, load_method

    fits = []
    for name in METHODS:
        try:
            load_method(name).parse_config({k: v for k, v in config.items() if k != "data"})
            fits.append(name)
        except Exception:  # noqa: BLE001 - any failure means "not this method's config"
            continue
    return fits[0] if len(fits) == 1 else None


def _from_mlflow(run_id: str, uri: str) -> TrialResult:
    import logging

    from mlflow.exceptions import MlflowException

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise RunError(f"RUN {run_id}: no MLflow store at {uri} (pass --tracking-uri or set MLFLOW_TRACKING_URI)")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its store-migration chatter
    c = tracking.client(uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise RunError(f"RUN {run_id}: no MLflow run with that id in {uri}") from None
    if "mlflow.parentRunId" not in run.data.tags:
        run = _best_trial(c, run)
    tags = run.data.tags
    label = f"{run.info.run_name} (run {run.info.run_id})"
    if run.info.status == "FAILED":
        raise RunError(f"RUN {label}: the trial failed ({tags.get('error', 'no error recorded')})")
    if run.info.status != "FINISHED":
        raise RunError(f"RUN {label}: the trial is {run.info.status}, not finished")
    method = tags.get("method")
    if not method:
        raise RunError(f"RUN {label}: has no method tag (not a trial of platform.sweep)")
    return TrialResult(_download(c, run, label), method, label, run.info.run_id)


def _best_trial(c: Any, parent: Any) -> Any:
    """A sweep's parent run stands for its best finished trial by the sweep's first objective."""
    tags = parent.data.tags
    if "sweep" not in tags:
        raise RunError(f"RUN {parent.info.run_id}: neither a trial's run nor a sweep's parent run")
    metrics, modes = json.loads(tags.get("objectives", "null")) or [["val_wer"], ["min"]]
    metric, mode = metrics[0], modes[0]
    children = c.search_runs([parent.info.experiment_id],
                             filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'FINISHED'",
                             max_results=10000)
    scored = [r for r in children if metric in r.data.metrics]
    if not scored:
        raise RunError(f"RUN {parent.info.run_id}: sweep {tags['sweep']} has no finished trial with {metric}")
    best = (min if mode == "min" else max)(scored, key=lambda r: r.data.metrics[metric])
    print(f"RUN {parent.info.run_id} is sweep {tags['sweep']}'s parent run: using its best trial by {metric}, "
          f"{best.info.run_name} (run {best.info.run_id}, {metric} {best.data.metrics[metric]:.4f})", file=sys.stderr)
    return best


def _download(c: Any, run: Any, label: str) -> Path:
    """The run's artifacts in the local cache (downloaded once; a finished run's artifacts do not change)."""
    from trainables.assets.cache import build_once, cache_root

    names = {a.path for a in c.list_artifacts(run.info.run_id)}
    if "config.json" not in names:
        where = run.data.tags.get("artifacts_at")
        raise RunError(f"RUN {label}: its artifacts hold no config.json"
                       + (f" (they were left at {where})" if where else " (no trial artifacts were logged)"))
    target = cache_root() / "runs" / run.info.run_id

    def fetch(tmp: Path) -> None:
        c.download_artifacts(run.info.run_id, "", str(tmp))

    return build_once(target, fetch, {"run_id": run.info.run_id, "tracking_uri": c.tracking_uri})

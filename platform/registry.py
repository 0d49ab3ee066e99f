"""From a trial to a served model: its result logged as an MLflow model in the trial's own run, and registered
under a name in the Model Registry (`python -m platform.export RUN --register NAME`; a sweep registers its best
trial under the sweep's name with `register_best`). Serve a version with
`mlflow models serve -m models:/NAME/VERSION --env-manager local` (docs/serving.md).

Every method is logged the same way: a pyfunc around its recogniser (trainables/blocks/serving.py), holding the
trial's artifact folder and a copy of trainables/ as its code. So every registered model takes the same request
(sound files, base64 in JSON) and decodes exactly as the trial was evaluated and as `platform.transcribe` does.
MLflow's transformers flavour would fit QLoRA's exported folder, but its audio input is decoded with ffmpeg
(bytes) or read from a path on the server, and its pipeline decodes differently from what the trial's WER measured.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import tomllib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from platform import tracking
from platform.cluster import ROOT
from platform.trials import RunError, TrialResult, resolve

LOGGED_MODEL = "model"
"""The name of the MLflow model logged in the trial's run."""
TAGGED_METRICS = ("val_wer", "natural_val_wer", "wer", "natural_wer")
"""Metrics copied onto the registered version as tags (when the trial has them)."""
REQUEST = ('{"dataframe_split": {"columns": ["audio"], "data": [["<base64 of a WAV or FLAC file>"]]}}')
"""What `POST /invocations` takes (one row per sound file); it answers {"predictions": [{"text": "..."}]}."""


class RegistryError(ValueError):
    """A model cannot be registered as asked; the message is one line naming the argument."""


@dataclass
class Registered:
    """A registered model version and the trial behind it."""

    name: str
    version: str
    run_id: str
    """The trial's MLflow run, where the model is logged."""
    model_id: str
    """The MLflow LoggedModel (`models:/<model_id>`)."""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def check_name(name: str, what: str = "--register") -> str:
    """`name`, when the Model Registry takes it and it fits in `models:/NAME/VERSION`; else a RegistryError."""
    if not name.strip() or name != name.strip():
        raise RegistryError(f"{what} {name!r}: a model name must be non-empty, with no leading or trailing spaces")
    if any(c in name for c in "/:%\\") or not name.isprintable():
        raise RegistryError(f"{what} {name!r}: a model name cannot hold '/', ':', '%', '\\' or control characters "
                            "(it is served as models:/NAME/VERSION)")
    return name


def trial_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The trial's page in MLflow's UI: a full URL where the tracking store is a server (its UI), else the UI's
    route (after `http://127.0.0.1:5000/` of `mlflow ui`)."""
    route = f"#/experiments/{experiment_id}/runs/{run_id}"
    return f"{tracking_uri.rstrip('/')}/{route}" if tracking_uri.startswith(("http://", "https://")) else route


def requirements() -> list[str]:
    """The project's dependencies at the versions installed here: what the model needs where it is served.
    Given explicitly, so that MLflow does not load the model in a subprocess to guess them."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = []
    for dep in deps:
        name = re.split(r"[\s<>=!~\[;]", dep, maxsplit=1)[0]
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return [*pinned, f"pandas=={version('pandas')}"]  # the model's input and output frames


def register(result: TrialResult, name: str, tracking_uri: str, selected_by: str | None = None) -> Registered:
    """Log `result` as an MLflow model in the trial's own run and register it under `name` (a new version when the
    name exists). Its version carries the sweep, the trial's run (id, name, link) and its metrics as tags, and a
    description with the link and how to call it; the trial's run is not restarted or otherwise changed."""
    check_name(name)
    if result.run_id is None:
        raise RegistryError(f"RUN {result.label}: a folder has no MLflow run to link the model to; pass the trial's "
                            "MLflow run id instead")
    import mlflow.pyfunc
    from mlflow.models import Model

    from trainables.blocks import serving

    c = tracking.client(tracking_uri)
    run = c.get_run(result.run_id)
    run_tags = run.data.tags
    metrics = {k: run.data.metrics[k] for k in TAGGED_METRICS
               if k in run.data.metrics and math.isfinite(run.data.metrics[k])}
    link = trial_link(tracking_uri, run.info.experiment_id, run.info.run_id)
    tags = {"method": result.method, "trial": run.info.run_name or "", "trial_run_id": run.info.run_id,
            "trial_link": link, **{k: f"{v:.6g}" for k, v in metrics.items()}}
    if "sweep" in run_tags:
        tags["sweep"] = run_tags["sweep"]
    if selected_by:
        tags["selected_by"] = selected_by
    # MLflow prints its own chatter while it logs and registers (download bars, "already exists. Creating a new
    # version"): it goes to MLflow's logger (a sweep's libraries.log), and this function's one line to the console.
    chatter = io.StringIO()
    with _tracking_uri(tracking_uri), tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stderr(chatter):
        # The signature says what to send; an input example would load the model here to validate it.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        method_file = Path(tmp) / "method.json"
        method_file.write_text(json.dumps({"method": result.method}))
        # The LoggedModel is created here, in the trial's experiment (MLflow would put it in the active experiment,
        # without an active run the default one), and Model.log (not mlflow.pyfunc.log_model) is told the run to
        # log into, so the trial's finished run is not restarted: no start_run, its status and end time untouched.
        # The served model is built from code (served_model.py), not unpickled.
        model = c.create_logged_model(run.info.experiment_id, name=LOGGED_MODEL, source_run_id=run.info.run_id,
                                      tags=tags, params=dict(run.data.params))
        info = Model.log(
            artifact_path=None, name=LOGGED_MODEL, flavor=mlflow.pyfunc, run_id=run.info.run_id, model_id=model.model_id,
            step=_final_step(c, run.info.run_id), python_model=str(ROOT / "trainables" / "blocks" / "served_model.py"),
            artifacts={serving.TRIAL: str(result.path), serving.METHOD: str(method_file)},
            code_paths=[str(ROOT / "trainables")], signature=serving.signature(), pip_requirements=requirements(),
            registered_model_name=name, tags=tags,
        )
    if chatter.getvalue().strip():
        logging.getLogger("mlflow").info("while registering %s: %s", name, chatter.getvalue().strip())
    registered = Registered(name, str(info.registered_model_version), run.info.run_id, info.model_id)
    c.update_model_version(name, registered.version, description=_description(registered, run, result.method, metrics,
                                                                              selected_by))
    if not c.get_registered_model(name).description:
        c.update_registered_model(name, description=(
            "Speech recognisers from speech-sweeps: each version is one trial's result (its tags and source run say "
            "which). Serve one from the repository root: `mlflow models serve -m models:/NAME/VERSION --env-manager "
            f"local`; POST /invocations with `{REQUEST}`; the answer is `{{\"predictions\": [{{\"text\": \"...\"}}]}}`."))
    return registered


def register_best(parent_run_id: str, sweep_name: str, tracking_uri: str) -> Registered | None:
    """At a sweep's end: register its best finished trial (by the sweep's first objective, a validation metric)
    under the sweep's name. Prints one line either way; what stops it (no finished trial, an unreachable store)
    is printed, not raised, since the sweep itself is done and recorded."""
    from mlflow.exceptions import MlflowException

    from trainables.blocks.config import ConfigError
    from trainables.blocks.inference import ArtifactError

    try:
        check_name(sweep_name, "sweep name")
        tags = tracking.client(tracking_uri).get_run(parent_run_id).data.tags
        metrics, modes = json.loads(tags.get("objectives", "null")) or [["val_wer"], ["min"]]
        result = resolve(parent_run_id, tracking_uri)
        registered = register(result, sweep_name, tracking_uri,
                              selected_by=f"best {metrics[0]} ({modes[0]}) of sweep run {parent_run_id}")
    except (RegistryError, RunError, ArtifactError, ConfigError, MlflowException, OSError) as exc:
        line = " ".join(str(exc).split())[:500]
        print(f"model registry: the sweep's best trial was not registered: {line}", file=sys.stderr, flush=True)
        return None
    print(f"registered its best trial as {registered.uri}; serve it: mlflow models serve -m {registered.uri} "
          "--env-manager local", flush=True)
    return registered


def _final_step(c: Any, run_id: str) -> int:
    """The step of the trial's final metrics, which MLflow then shows on the logged model too."""
    for key in ("val_wer", "wer"):
        history = c.get_metric_history(run_id, key)
        if history:
            return max(m.step for m in history)
    return 0


def _description(r: Registered, run: Any, method: str, metrics: dict[str, float], selected_by: str | None) -> str:
    """The version's page in MLflow's UI (markdown): the trial it came from, linked, its metrics, how to call it."""
    sweep = run.data.tags.get("sweep")
    scores = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "no WER recorded"
    lines = [f"Trial [{run.info.run_name or run.info.run_id}](#/experiments/{run.info.experiment_id}/runs/"
             f"{run.info.run_id}?workflowType=machine_learning) (run `{run.info.run_id}`)"
             + (f" of sweep **{sweep}**" if sweep else "") + f", method `{method}`: {scores}."]
    if selected_by:
        lines += ["", f"Selected as the {selected_by}."]
    lines += ["", f"Serve it from the repository root: `mlflow models serve -m {r.uri} --env-manager local -p 5001`; "
                  f"then POST /invocations with `{REQUEST}` (one row per file, any sample rate); the answer is "
                  "`{\"predictions\": [{\"text\": \"...\"}]}`, decoded as the trial was evaluated."]
    return "\n".join(lines)


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to `uri` for a while: its model logging, and its SQL registry's lookup of
    a logged model, read the global one, not a client's. Restored exactly afterwards, with the environment variable
    that `mlflow.set_tracking_uri` also sets (the registry follows the tracking URI unless MLFLOW_REGISTRY_URI names
    another)."""
    import mlflow
    from mlflow.environment_variables import MLFLOW_TRACKING_URI
    from mlflow.tracking._tracking_service import utils

    saved, saved_env = utils._tracking_uri, os.environ.get(MLFLOW_TRACKING_URI.name)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)
        if saved_env is None:
            os.environ.pop(MLFLOW_TRACKING_URI.name, None)
        else:
            os.environ[MLFLOW_TRACKING_URI.name] = saved_env

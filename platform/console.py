"""What a sweep's console shows: the plan, progress bars of asset builds, the live table, failures with their
errors, the results and the links. The libraries' own logs (Ray's workers and controllers, Ray Tune, Optuna,
MLflow, transformers, bitsandbytes, Python warnings) go to `libraries.log` and `ray-logs/` in the sweep's
results folder, named at the end; `--verbose` shows them live instead."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

LOG_FILE = "libraries.log"
"""The driver-side libraries' log, in the sweep's results folder."""
RAY_LOGS = "ray-logs"
"""Copies of this machine's Ray worker and controller logs of the sweep, in the results folder."""
LIBRARIES = ("ray", "optuna", "mlflow", "transformers", "bitsandbytes", "datasets", "urllib3", "filelock", "py.warnings",
             "alembic", "sqlalchemy", "huggingface_hub", "torch")


def libraries_to_file(results: Path) -> Path:
    """Send the libraries' Python logging (and Python warnings) to `results/libraries.log` instead of the
    console; returns the file."""
    path = results / LOG_FILE
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    import mlflow  # noqa: F401 - MLflow adds its console handler when first imported: before the loop below
    import optuna

    # Optuna adds its own console handler the first time it logs, after the loop below has run: configure it now.
    optuna.logging.get_logger("optuna")
    # Tune's newer console output prints its "Configuration for experiment" box and a TensorBoard hint even at
    # verbose=0; its older reporter at verbose=0 prints nothing (the live table, platform/progress.py, replaces it).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # MLflow draws a progress bar for every download of a trial's artifacts (resolving the best trial, registering it).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    return path


def copy_ray_logs(results: Path) -> Path | None:
    """This machine's Ray session logs (workers, the Train controller, the raylet) copied to `results/ray-logs`;
    None when Ray kept none here."""
    try:
        import ray._private.worker as ray_worker

        source = Path(ray_worker.global_worker.node.get_logs_dir_path())
    except Exception:  # noqa: BLE001 - no Ray node in this process, or a Ray without that attribute
        return None
    if not source.is_dir():
        return None
    out = results / RAY_LOGS
    out.mkdir(exist_ok=True)
    for f in source.glob("*"):
        if f.is_file() and f.suffix in (".out", ".err", ".log") and f.stat().st_size > 0:
            shutil.copy2(f, out / f.name)
    return out

"""What every trial reports and leaves behind: the MLflow contract's metrics, the artifact folder
(resolved config, metrics, per-step history, per-utterance hypotheses), and the report to Ray Train."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables import METHODS
from trainables.blocks import progress
from trainables.blocks.config import redact, to_dict
from trainables.blocks.metrics import MB, peak_host_mem_mb, peak_vram_mb
from trainables.blocks.training import Stepper, all_gather_objects, in_ray_train, reduce_max, world


def contract_metrics(final: Mapping[str, Any], *, samples_per_s: float, size_bytes: float, original_bytes: float,
                     counts: Mapping[str, float]) -> dict[str, float]:
    """The metrics every trial records (DESIGN.md's table), from the final evaluation and the run's numbers.

    Every worker must call it: peak memory is the maximum over workers.
    """
    return {
        "wer": final["wer"], "cer": final["cer"],
        "train_samples_per_s": samples_per_s,
        "peak_vram_mb": reduce_max(peak_vram_mb()),
        "peak_host_mem_mb": reduce_max(peak_host_mem_mb()),
        "model_size_mb": size_bytes / MB,
        "compression_ratio": original_bytes / size_bytes,
        "latency_ms_per_utt": final["latency_ms_per_utt"], "rtf": final["rtf"],
        **{k: float(v) for k, v in counts.items()},
    }


def energy_metrics(*steppers: Stepper | None) -> dict[str, float]:
    """`energy_j` (GPU energy over the training steps, summed over the run's steppers and over workers) and
    `energy_j_per_step`; nothing where a worker could not measure it (CPU, no NVML). Every worker must call it."""
    used = [s for s in steppers if s is not None]
    mine = [s.energy_j for s in used]
    joules = all_gather_objects(None if not used or None in mine else sum(mine))
    if None in joules:
        return {}
    steps = sum(s.steps_done for s in used)
    return {"energy_j": sum(joules), **({"energy_j_per_step": sum(joules) / steps} if steps else {})}


def artifact_dir() -> Path:
    """A new, empty folder for one trial's artifacts (Ray Train copies it into the trial's checkpoint)."""
    return Path(tempfile.mkdtemp(prefix="trial-artifacts-"))


def write_artifacts(out: Path, config: Any, metrics: Mapping[str, float], history: list[dict[str, float]],
                    hypotheses: Mapping[str, list[dict]], json_files: Mapping[str, Any] | None = None) -> None:
    """config.json (the resolved config), method.json (which method wrote them, so a result can be used
    from its folder alone), metrics.json, history.json, one JSON-lines file per evaluated set (reference,
    hypothesis and word errors per utterance, for significance tests), and any other JSON."""
    (out / "config.json").write_text(json.dumps(redact(to_dict(config)), indent=2))  # no token in artifacts
    module = type(config).__module__
    method = next((name for name, mod in METHODS.items() if mod == module), module)
    (out / "method.json").write_text(json.dumps({"method": method}))
    (out / "metrics.json").write_text(json.dumps(dict(metrics), indent=2))
    (out / "history.json").write_text(json.dumps(history))
    for name, obj in (json_files or {}).items():
        (out / name).write_text(json.dumps(obj, indent=2))
    for name, rows in hypotheses.items():
        with open(out / name, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


def report(metrics: dict[str, float], artifacts: Path | None = None) -> None:
    """Send metrics (and, from rank 0, an artifact directory as the checkpoint) to Ray Train.

    Outside Ray Train (unit tests, notebooks) the metrics are printed.
    """
    if not in_ray_train():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, flush=True)
        return
    import ray.train

    if "val_wer" in metrics:  # the sweep's console shows the latest validation WER beside the step
        progress.post(force=True, val_wer=metrics["val_wer"])

    checkpoint = None
    if artifacts is not None and world()[0] == 0:
        checkpoint = ray.train.Checkpoint.from_directory(str(artifacts))
    ray.train.report(metrics, checkpoint=checkpoint)

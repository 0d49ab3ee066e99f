"""The end of every trial, written once: a method hands over what it measured (an `Outcome`), and
`finish_trial` evaluates the model on the validation, test and any other sets, builds the MLflow contract's
metrics, writes the artifact folder on rank 0 (resolved config, metrics, per-step history, per-utterance
hypotheses, the method's weights) and returns both; `report` sends them to Ray Train.

A metric every trial should record is one edit here, in `finish_trial`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables import METHODS
from trainables.assets.corpus import CORPORA
from trainables.blocks import progress
from trainables.blocks.config import redact, to_dict
from trainables.blocks.data import load_natural
from trainables.blocks.distributed import all_gather_objects, in_ray_train, reduce_max, world
from trainables.blocks.evaluation import NATURAL_WINDOW_S, Evaluation, evaluate, window_fitting
from trainables.blocks.languages import per_language
from trainables.blocks.metrics import MB, peak_host_mem_mb, peak_vram_mb
from trainables.blocks.tasks import Transcriber
from trainables.blocks.training import Stepper


@dataclass
class Outcome:
    """What a method measured at the end of its training, for `finish_trial`: the model and how it decodes,
    the sets to score it on, its deployed size, its own numbers, and what to save."""

    task: Transcriber
    model: torch.nn.Module
    """The trained model, as evaluation decodes it (DDP-wrapped where training was)."""
    dev: torch.device
    dtype: torch.dtype
    """dtype of the model's inputs."""
    batch_size: int
    """Utterances per decoding batch (eval.batch_size)."""
    val: list[dict]
    """The validation set: `val_wer`, `val_cer`, what searches and "the best trial" select on."""
    test: list[dict]
    """The headline test set: its rates are the contract's `wer` and `cer`, its rows `hypotheses.jsonl`."""
    size_bytes: float
    """Bytes of the adapted model as deployed (`model_size_mb`)."""
    original_bytes: float
    """Bytes of the original model at its stored precision (`compression_ratio` = original / deployed)."""
    counts: Mapping[str, float]
    """trainable_params, total_params, trainable_param_ratio."""
    stepper: Stepper | None
    """The training run whose throughput is `train_samples_per_s` (None: nothing was trained)."""
    other_steppers: Sequence[Stepper | None] = ()
    """Other phases' runs: their GPU energy counts too."""
    test_name: str | None = None
    """A name for the headline test set's condition ("noisy", "clean"): its rates are also `wer_<name>`."""
    also: Mapping[str, list[dict]] = field(default_factory=dict)
    """More sets to score, by name: `wer_<name>`, `cer_<name>`, `hypotheses_<name>.jsonl`."""
    natural: list[dict] | None = None
    """The natural-voice test set of the trial's domain and conditions (evaluation only): `natural_wer`,
    `natural_cer`, `hypotheses_natural.jsonl`; None where the data has none (a hub or user data set), which
    records NaN."""
    natural_val: list[dict] | None = None
    """The natural-voice validation set (data.natural_val_items), under the same conditions as `natural`:
    `natural_val_wer`, `natural_val_cer`, `hypotheses_natural_val.jsonl`; None: not scored (not logged)."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """The method's own metrics."""
    json_files: Mapping[str, Any] = field(default_factory=dict)
    """More JSON artifacts by file name (e.g. size_breakdown.json)."""
    history_extra: list[dict[str, float]] = field(default_factory=list)
    """Per-step records of work before this run (e.g. a cached phase), appended to history.json."""
    save: Callable[[Path], None] | None = None
    """Writes the trained weights into the artifact folder (rank 0 only)."""


def finish_trial(cfg: Any, history: list[dict[str, float]], outcome: Outcome) -> tuple[dict[str, float], Path | None]:
    """Score the outcome on its sets, build the trial's metrics, and on rank 0 write its artifact folder.

    Every worker must call it (evaluation and peak memory gather over workers). Returns (metrics, the artifact
    folder on rank 0, else None)."""
    o = outcome

    def score(utts: list[dict], least_s: float = 0.0) -> Evaluation:
        with window_fitting(o.task, o.model, utts, least_s):
            return evaluate(o.task, o.model, utts, o.batch_size, o.dev, o.dtype)

    val = score(o.val)
    test = score(o.test)
    others = {name: score(utts) for name, utts in o.also.items()}
    if o.natural is not None:
        others["natural"] = score(o.natural, NATURAL_WINDOW_S)
    if o.natural_val is not None:
        others["natural_val"] = score(o.natural_val, NATURAL_WINDOW_S)
    data = getattr(cfg, "data", None)
    for corpus in getattr(data, "natural_also", None) or []:  # other domains' natural voice: what it forgot
        others[f"natural_{CORPORA[corpus].domain}"] = score(load_natural(corpus, "test", data.max_eval_items) or [],
                                                            NATURAL_WINDOW_S)
    nan = float("nan")
    metrics: dict[str, float] = {
        "step": float(history[-1]["step"]) if history else 0.0,
        "loss": next((p["loss"] for p in reversed(history) if "loss" in p), nan),
        "val_wer": val["wer"], "val_cer": val["cer"],
        **contract_metrics(test, samples_per_s=o.stepper.samples_per_s if o.stepper else 0.0,
                           size_bytes=o.size_bytes, original_bytes=o.original_bytes, counts=o.counts),
        **energy_metrics(o.stepper, *o.other_steppers),
    }
    if o.test_name:
        metrics.update({f"wer_{o.test_name}": test["wer"], f"cer_{o.test_name}": test["cer"]})
    metrics.update(per_language(test["rows"]))  # wer_<lang>, cer_<lang> where the test set mixes languages
    metrics.update({"natural_wer": nan, "natural_cer": nan})  # NaN (not logged) where the data has no natural voice
    for name, ev in others.items():
        if name in ("natural", "natural_val"):
            metrics.update({f"{name}_wer": ev["wer"], f"{name}_cer": ev["cer"]})
        elif name.startswith("natural_"):
            domain = name.removeprefix("natural_")
            metrics.update({f"natural_wer_{domain}": ev["wer"], f"natural_cer_{domain}": ev["cer"]})
        else:
            metrics.update({f"wer_{name}": ev["wer"], f"cer_{name}": ev["cer"]})
    metrics.update({k: float(v) for k, v in o.metrics.items()})
    if world()[0] != 0:
        return metrics, None
    out = artifact_dir()
    hypotheses = {"hypotheses.jsonl": test["rows"], **{f"hypotheses_{n}.jsonl": ev["rows"] for n, ev in others.items()}}
    write_artifacts(out, cfg, metrics, history + o.history_extra, hypotheses, o.json_files)
    if o.save is not None:
        o.save(out)
    return metrics, out


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

"""Reading a sweep back from MLflow: its parent run's record, one row per trial, and the trials' artifacts
that the report uses (per-utterance hypotheses, rank heatmaps). Nothing here computes or renders."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platform import tracking

COLUMNS = ["val_wer", "natural_val_wer", "wer", "natural_wer", "cer", "natural_cer", "peak_vram_mb", "peak_host_mem_mb",
           "train_samples_per_s", "model_size_mb", "compression_ratio", "trainable_params"]
"""Contract metrics every trial row carries (None where the trial did not report one)."""


@dataclass
class SweepRecord:
    """What the parent run says of its sweep (the tags `platform.runner.report_tags` wrote, its baseline metrics)."""

    name: str
    experiment_id: str
    tags: dict[str, str]
    searched_keys: list[str]
    baseline: dict[str, float]
    """The untuned model's metrics (the parent's `baseline_*` metrics, prefix removed)."""
    objectives: list[list[str]]
    """[metrics, modes]."""
    ablation: dict[str, Any] | None
    space: dict[str, Any]

    @property
    def metric(self) -> str:
        """The first objective's metric (the one "the best trial" is chosen by)."""
        return self.objectives[0][0]

    @property
    def mode(self) -> str:
        return self.objectives[1][0]


def sweep_record(c: Any, parent_run_id: str) -> SweepRecord:
    """The sweep's record from its parent run."""
    parent = c.get_run(parent_run_id)
    tags = parent.data.tags
    return SweepRecord(
        name=tags.get("sweep", parent.info.run_name), experiment_id=parent.info.experiment_id, tags=dict(tags),
        searched_keys=json.loads(tags.get("searched_keys", "[]")),
        baseline={k.removeprefix("baseline_"): v for k, v in parent.data.metrics.items() if k.startswith("baseline_")},
        objectives=json.loads(tags.get("objectives", "null")) or [["wer"], ["min"]],
        ablation=json.loads(tags.get("ablation", "null")), space=json.loads(tags.get("space", "{}")),
    )


def trial_rows(uri: str, parent_run_id: str) -> list[dict[str, Any]]:
    """One dict per trial (child run): its metrics, `trial` (run name), `run_id`, `status`, `searched` (the
    sampled values), `error`, `early_stopped`, `stopped_at_step`; sorted by the searched values, then name."""
    c = tracking.client(uri)
    parent = c.get_run(parent_run_id)
    runs = c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                         max_results=10000)
    rows = []
    for run in runs:
        searched = json.loads(run.data.tags.get("searched", "{}"))
        rows.append({**run.data.metrics, "trial": run.info.run_name, "run_id": run.info.run_id,
                     "status": run.info.status, "searched": searched, "error": run.data.tags.get("error", ""),
                     "early_stopped": run.data.tags.get(tracking.STOPPED_EARLY) == "true",
                     "stopped_at_step": run.data.tags.get(tracking.STOPPED_AT_STEP),
                     **{k: run.data.metrics.get(k) for k in COLUMNS}})
    return sorted(rows, key=lambda r: ([_sort_key(r["searched"][k]) for k in sorted(r["searched"])], r["trial"]))


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers in numeric order, before anything else in text order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, json.dumps(value))


def hypotheses(c: Any, run_id: str, tmp: Path, name: str = "hypotheses.jsonl") -> list[dict[str, Any]] | None:
    """A trial's per-utterance hypotheses (artifact `name`, rows of id, reference, hypothesis, errors, ref_words:
    `hypotheses.jsonl` for the test split, `hypotheses_natural.jsonl` for the natural-voice test set), or None
    when it has none."""
    try:
        path = c.download_artifacts(run_id, name, str(tmp))
    except Exception:  # noqa: BLE001 - a trial without hypotheses is left out of the paired statistics
        return None
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def rank_heatmap(c: Any, run_id: str, tmp: Path, dest: Path) -> bool:
    """Copy a trial's `lora_ranks.png` to `dest`; False when it has none."""
    try:
        src = c.download_artifacts(run_id, "lora_ranks.png", str(tmp / f"ranks-{run_id}"))
    except Exception:  # noqa: BLE001 - only methods that allocate ranks draw one
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return True


def latest_parent_run(c: Any, experiment_id: str) -> str | None:
    """The experiment's most recent sweep (parent) run, or None."""
    parents = [r for r in c.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
               if "mlflow.parentRunId" not in r.data.tags]
    return parents[0].info.run_id if parents else None

"""qlora_bits, the real search-space file with its local preset: three of its levels (NF4, the 16-bit baseline,
full fine-tuning) with 2 seeds each.

The model is swapped for a tiny random Whisper and the budget cut with --set, so the ablation (6 trials through Ray
Tune, Optuna's grid sampler and Ray Train) runs in a few minutes; the report's statistics are then read back from
MLflow. The other levels' bases (NF4 with double quantisation, FP4, int8) train in tests/test_qlora.py, in-process:
what this test checks (a grid of levels x seeds, the paired statistics against the baseline) does not grow with
the number of levels, while its time does.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT

pytestmark = pytest.mark.integration  # starts Ray


def test_qlora_bits_runs_each_level_with_two_seeds(tmp_path: Path, tiny_whisper_dir: Path) -> None:
    # The shipped sweep, two trials at a time on one CPU each: a tiny model's trial mostly waits on its start and
    # tracking, so its trials take about two thirds of the time they take one by one.
    spec = yaml.safe_load((ROOT / "search_spaces" / "qlora_bits.yaml").read_text())
    levels = ("nf4", "lora16", "full")
    spec["space"]["base"]["named"] = {k: v for k, v in spec["space"]["base"]["named"].items() if k in levels}
    spec["num_samples"] = 2 * len(levels)
    spec["presets"]["local"].update(max_concurrent_trials=2, resources={"num_workers": 1, "cpus_per_worker": 1})
    sweep_file = tmp_path / "qlora_bits.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "platform.sweep", str(sweep_file), "--preset", "local",
           "--set", f"model={tiny_whisper_dir}", "--set", "data.source=espeak-smoke",
           "--set", "data.max_eval_items=8", "--set", "data.max_val_items=2", "--set", "eval.max_new_tokens=4",
           "--set", "optim.max_steps=2", "--set", "optim.warmup_steps=1", "--set", "optim.batch_size=2",
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "results"), "--no-register"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("qlora_bits")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    seeds = collections.defaultdict(set)
    for r in children:
        assert r.info.status == "FINISHED", (r.info.run_name, r.data.tags.get("error"))
        searched = json.loads(r.data.tags["searched"])
        seeds[searched["base"]].add(searched["seed"])
    assert seeds == {level: {0, 1} for level in levels}
    # The full fine-tuning level really trains every weight; the 4-bit ones are smaller than 16-bit.
    by = {(json.loads(r.data.tags["searched"])["base"], json.loads(r.data.tags["searched"])["seed"]): r.data.metrics
          for r in children}
    assert by[("full", 0)]["trainable_param_ratio"] == 1.0
    assert by[("nf4", 0)]["model_size_mb"] < by[("lora16", 0)]["model_size_mb"]
    # The report gives NF4 against 16-bit LoRA: ΔWER with its CI and a p-value.
    report_path = c.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path / "dl"))
    report = Path(report_path).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| nf4 |") and "[" in line and "%" in line)
    cells = [x.strip() for x in row.strip("|").split("|")]
    assert "[" in cells[3] and "," in cells[3]  # ΔWER [low, high]
    assert 0.0 <= float(cells[5]) <= 1.0  # p-value
    assert list((tmp_path / "results" / "qlora_bits").glob("*/ablation_base.png"))

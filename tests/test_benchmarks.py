"""The overhead and Seq2SeqTrainer benchmarks run end to end on a tiny configuration and print well-formed
fields. Speed itself is the benchmarks' business, not the tests': no number is compared with a bound here."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NUMBER = r"([-+]?\d+(?:\.\d+)?|nan)"


def run_benchmark(script: str, *args: str, timeout: int = 600) -> tuple[str, dict]:
    """Run benchmarks/`script`, assert it exits 0, and return its stdout and its RESULT object."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert len(lines) == 1, out.stdout[-3000:]
    return out.stdout, json.loads(lines[0].removeprefix("RESULT "))


def printed(stdout: str, label: str) -> float:
    """The number printed after `label:` (a line's field), which must be there."""
    m = re.search(re.escape(label) + r":\s+" + NUMBER, stdout)
    assert m, f"{label!r} not printed:\n{stdout[-2000:]}"
    return float(m.group(1))


def finite_positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


@pytest.mark.integration  # starts Ray twice: one TorchTrainer, one sweep
def test_overhead_prints_walls_ratios_and_phases(tiny_whisper_dir: Path) -> None:
    stdout, result = run_benchmark("overhead.py", "--tiny", "--model", str(tiny_whisper_dir), "--no-baseline")
    for label in ("(a) bare loop wall_s", "(b) Ray Train TorchTrainer wall_s", "(c) one-trial sweep wall_s",
                  "ratio (b)/(a)", "ratio (c)/(a)"):
        assert finite_positive(printed(stdout, label)), label
    assert "where the time goes" in stdout and "total (wall)" in stdout
    assert set(result["wall_s"]) == {"a", "b", "c"} and set(result["ratio"]) == {"b", "c"}
    assert result["ratio"]["c"] == pytest.approx(result["wall_s"]["c"] / result["wall_s"]["a"])
    assert result["spec"]["sampled"] == {"lora.r": 1} and result["spec"]["baseline"] is False
    for run in ("a", "b", "c"):
        phases = result["phases"][run]
        for key in ("before", "to_first_step", "after_steps", "after_result"):
            assert phases[key] is not None and phases[key] >= 0, (run, key, phases[key])
        assert phases["detail"], run
        assert 0 <= result["wer"][run] <= 1.5, (run, result["wer"][run])
    detail = result["phases"]["a"]["detail"]
    assert detail["model load + quantisation"] > 0 and detail["training steps (all N)"] > 0
    assert result["phases"]["c"]["detail"]["result -> trial's MLflow run ended (history, artifacts logged)"] >= 0
    assert result["phases"]["c"]["detail"]["baseline: the untuned model measured (its own Ray Train run)"] is None


@pytest.mark.slow  # trains a tiny model twice (no Ray)
def test_vs_hf_trainer_prints_both_throughputs_ratio_and_wers(tiny_whisper_dir: Path) -> None:
    stdout, result = run_benchmark("vs_hf_trainer.py", "--tiny", "--model", str(tiny_whisper_dir))
    for label in ("project loop", "Seq2SeqTrainer + peft"):
        line = next(x for x in stdout.splitlines() if x.startswith(label))
        assert finite_positive(printed(line, "train_samples_per_s")), line
        assert 0 <= printed(line, "wer") <= 1.5, line
    assert finite_positive(printed(stdout, "ratio project/hf train_samples_per_s"))
    printed(stdout, "wer project - hf")
    for side in ("project", "hf"):
        assert result[side]["steps"] == 4, side
    # Same adapters on both sides: the same number of trainable parameters.
    assert result["project"]["trainable_params"] == result["hf"]["trainable_params"]
    assert result["ratio_samples_per_s"] == pytest.approx(result["project"]["samples_per_s"] / result["hf"]["samples_per_s"])

"""Metrics: normalised error rates, BLEU, perplexity, sizes from stored tensors, throughput, energy."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from trainables.blocks.config import build
from trainables.blocks.finish import energy_metrics
from trainables.blocks.metrics import (
    EnergyMeter,
    bleu,
    deployed_size_bytes,
    error_rates,
    param_counts,
    perplexity,
    safetensors_bytes,
    utterance_errors,
)
from trainables.blocks.models import PrecisionConfig, load_base_model
from trainables.blocks.training import OptimConfig, Stepper, Throughput


def test_error_rates_use_whisper_normalisation() -> None:
    rates = error_rates(["Mr. Smith has twenty-five dogs!"], ["mister smith has 25 dogs"])
    assert rates["wer"] == 0.0 and rates["cer"] == 0.0
    rates = error_rates(["the cat sat", "a dog ran"], ["the cat sat", "a log ran far"])
    assert rates["wer"] == pytest.approx(2 / 6)
    assert utterance_errors("a dog ran", "a log ran far") == (2, 3)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])


def test_bleu_and_perplexity() -> None:
    assert bleu(["the patient takes two tablets daily"], ["the patient takes two tablets daily"]) == pytest.approx(100)
    assert bleu(["the patient takes two tablets daily"], ["a dog ran away"]) < 10
    assert perplexity(total_nll=10 * math.log(4), n_tokens=10) == pytest.approx(4)
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_int8_and_fp32_sizes(tiny_en_dir: Path) -> None:
    int8 = load_base_model(str(tiny_en_dir), "whisper", PrecisionConfig(bits=8), torch.device("cpu"))
    parts = deployed_size_bytes(int8, stored_itemsize=2)
    quantised = [m for m in int8.modules() if type(m).__name__ == "Linear8bitLt"]
    fp16 = sum(2 * m.weight.numel() for m in quantised)
    assert 0.5 <= parts["quantised"] / fp16 <= 0.52  # one byte a weight plus a float scale per row
    full = load_base_model(str(tiny_en_dir), "whisper", PrecisionConfig(bits=32), torch.device("cpu"))
    for p in full.parameters():
        p.requires_grad_(True)
    # Fully fine-tuned weights deploy at the stored precision: the size of the checkpoint itself.
    assert deployed_size_bytes(full, stored_itemsize=2)["total"] == pytest.approx(safetensors_bytes(tiny_en_dir), rel=0.01)
    counts = param_counts(full)
    assert counts["trainable_param_ratio"] == 1.0 and counts["total_params"] > 37e6


def test_throughput_skips_warmup_steps() -> None:
    t = Throughput(skip=2)
    t.seconds, t.samples = [5.0, 3.0, 1.0, 1.0], [8, 8, 8, 8]
    assert t.rate == pytest.approx(8.0)
    t.seconds, t.samples = [2.0], [8]  # too short to skip anything
    assert t.rate == pytest.approx(4.0)


def test_assets_cli_prints_paths() -> None:
    out = subprocess.run([sys.executable, "-m", "platform.assets", "path", "whisper-tiny.en"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (Path(out.stdout.strip()) / "config.json").exists()
    listing = subprocess.run([sys.executable, "-m", "platform.assets", "list"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert "espeak-general" in listing.stdout and "whisper-base" in listing.stdout
    bad = subprocess.run([sys.executable, "-m", "platform.assets", "prepare", "whisper-huge"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown asset 'whisper-huge'" in bad.stderr


class Counter:
    """A cumulative energy counter in mJ that advances 250 mJ on every read (what NVML's reads look like)."""

    def __init__(self) -> None:
        self.mj = 10_000.0

    def __call__(self) -> float:
        self.mj += 250.0
        return self.mj


def test_the_energy_meter_sums_its_windows_only() -> None:
    counter = Counter()
    meter = EnergyMeter(torch.device("cpu"), read=counter)
    with meter.window():
        pass
    counter.mj += 5_000.0  # energy spent between windows (evaluation, say) is not the steps'
    with meter.window():
        pass
    assert meter.joules == pytest.approx(0.5)  # two windows of one 250 mJ advance each
    assert EnergyMeter(torch.device("cpu")).joules is None  # no counter on a CPU


def test_energy_metrics_per_step_and_through_a_resume() -> None:
    cfg = build(OptimConfig, {"lr": 0.1, "max_steps": 3, "warmup_steps": 0, "batch_size": 2})
    model = torch.nn.Linear(4, 1)
    stepper = Stepper(cfg, list(model.parameters()), torch.device("cpu"), model)
    assert energy_metrics(stepper) == {}  # nothing measurable on a CPU: no energy metrics at all
    stepper.energy = EnergyMeter(torch.device("cpu"), read=Counter())
    x = torch.randn(2, 4)
    for _ in range(2):
        stepper.step(lambda micro: (model(x).pow(2).sum(), {}))
    assert energy_metrics(stepper) == {"energy_j": pytest.approx(0.5), "energy_j_per_step": pytest.approx(0.25)}

    resumed = Stepper(cfg, list(model.parameters()), torch.device("cpu"), model)
    resumed.energy = EnergyMeter(torch.device("cpu"), read=Counter())
    resumed.load_state_dict(stepper.state_dict())
    resumed.step(lambda micro: (model(x).pow(2).sum(), {}))
    assert energy_metrics(resumed)["energy_j"] == pytest.approx(0.75)  # the earlier attempt's steps count too
    assert energy_metrics(resumed, None)["energy_j_per_step"] == pytest.approx(0.25)

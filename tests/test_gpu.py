"""GPU paths: CUDA bitsandbytes layers, paged optimisers, peak_vram_mb, energy. Skipped without CUDA."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("optimizer", ["paged_adamw_8bit", "paged_adamw_32bit"])
def test_qlora_on_cuda_reports_vram(optimizer: str) -> None:
    from trainables.qlora import parse_config, run

    metrics = run(parse_config({
        "data": {"source": "espeak-smoke", "max_eval_items": 8, "max_val_items": 4},
        "precision": {"bits": 4}, "optim": {"name": optimizer, "max_steps": 4, "warmup_steps": 1, "batch_size": 4},
    }))
    assert metrics["peak_vram_mb"] > 0
    assert math.isfinite(metrics["wer"]) and metrics["train_samples_per_s"] > 0
    # NVML counts energy on Volta and later; the 4 steps' share of it is positive and per step is a quarter.
    assert metrics["energy_j"] > 0 and metrics["energy_j_per_step"] == pytest.approx(metrics["energy_j"] / 4)

"""QLoRA trainable: placement, parameter counts, sizes, config errors, and real training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import CONTRACT_METRICS, ROOT
from trainables.blocks.config import ConfigError
from trainables.blocks.metrics import deployed_size_bytes
from trainables.blocks.models import (
    LoraConfig,
    PrecisionConfig,
    add_lora,
    family_of,
    load_base_model,
    stack_depths,
    target_module_names,
)
from trainables.qlora import adalora_config, parse_config, run

CPU = torch.device("cpu")


def lora_param_count(model: torch.nn.Module, names: list[str], r: int) -> int:
    """Σ r·(d_in + d_out) over the targeted layers: what LoRA should add."""
    modules = dict(model.named_modules())
    return sum(r * (modules[n].in_features + modules[n].out_features) for n in names)

PLACEMENTS = [
    {"modules": ["q", "v"]},
    {"modules": ["q", "k", "v", "out"], "stacks": ["decoder"], "cross_attention": False},
    {"modules": ["fc1", "fc2"], "stacks": ["encoder"]},
    {"modules": ["q", "k", "v", "out", "fc1", "fc2"], "layers": "top_half"},
    {"modules": ["v", "fc2"], "layers": [0]},
]


def _lora(**kw) -> LoraConfig:
    from trainables.blocks.config import build

    return build(LoraConfig, kw)


@pytest.mark.parametrize("placement", PLACEMENTS, ids=lambda p: json.dumps(p, sort_keys=True))
@pytest.mark.parametrize("r", [1, 4])
def test_whisper_lora_params_equal_rank_times_dims(tiny_whisper_dir: Path, placement: dict, r: int) -> None:
    cfg = json.loads((tiny_whisper_dir / "config.json").read_text())
    model = load_base_model(str(tiny_whisper_dir), "whisper", PrecisionConfig(bits=32), CPU)
    lora = _lora(r=r, **placement)
    names = target_module_names(model, "whisper", lora, stack_depths(cfg, "whisper"))
    expected = sum(r * (mod.in_features + mod.out_features) for n, mod in model.named_modules() if n in names)
    peft_model = add_lora(model, names, lora)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == expected == lora_param_count(peft_model.base_model.model, names, r)
    # The placement selected what it says: only the named kinds and stacks.
    kinds = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj", "fc1": "fc1", "fc2": "fc2"}
    assert {n.rsplit(".", 1)[-1] for n in names} == {kinds[k] for k in lora.modules}
    assert {n.split(".")[1] for n in names} == set(lora.stacks)
    # LoRA starts as the identity update: every B matrix is zero.
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)


def test_wav2vec2_placement_counts(tiny_wav2vec2_dir: Path) -> None:
    cfg = json.loads((tiny_wav2vec2_dir / "config.json").read_text())
    assert family_of(cfg) == "wav2vec2"
    model = load_base_model(str(tiny_wav2vec2_dir), "wav2vec2", PrecisionConfig(bits=32), CPU)
    lora = _lora(r=2, modules=["q", "fc1"], stacks=["encoder"])
    names = target_module_names(model, "wav2vec2", lora, stack_depths(cfg, "wav2vec2"))
    assert len(names) == 2 * 2  # two kinds in two layers
    peft_model = add_lora(model, names, lora)
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == 2 * 2 * ((32 + 32) + (32 + 64))


BAD_CONFIGS = [
    ({"lora": {"r": 0}}, "lora.r"),
    ({"precision": {"bits": 3}}, "precision.bits"),
    ({"lora": {"modules": ["q", "gate_proj"]}}, "lora.modules[1]"),
    ({"data": {"source": "/no/such/folder"}}, "data.source"),
    ({"model": "openai/whisper-small"}, "model"),
    ({"data": {"source": "google/fleurs"}}, "data.source"),
    ({"lora": {"rnak": 4}}, "lora.rnak"),
    ({"optim": {"lr": -1}}, "optim.lr"),
    ({"lora": {"enabled": False}, "precision": {"bits": 4}}, "lora.enabled"),
    ({"precision": {"quant_type": "int3"}}, "precision.quant_type"),
    ({"lora": {"stacks": ["middle"]}}, "lora.stacks[0]"),
]


@pytest.mark.parametrize(("override", "field"), BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_config_fails_at_once_naming_the_field(override: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(override)
    message = str(info.value)
    assert message.startswith(field + ":"), message
    assert "\n" not in message


def test_offline_hub_model_names_the_offline_alternative() -> None:
    with pytest.raises(ConfigError, match="whisper-tiny.en"):
        parse_config({"model": "openai/whisper-small"})


def test_layer_index_checked_against_the_model(tiny_en_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^lora.layers: layer 9 does not exist"):
        parse_config({"model": str(tiny_en_dir), "lora": {"layers": [9]}})


def test_nf4_model_size_is_counted_from_stored_tensors(tiny_en_dir: Path) -> None:
    """NF4 layers take ≤ 0.35× their fp16 bytes; everything else is counted as stored."""
    nf4 = load_base_model(str(tiny_en_dir), "whisper", PrecisionConfig(bits=4, quant_type="nf4"), CPU)
    quantised = [m for m in nf4.modules() if type(m).__name__ == "Linear4bit"]
    assert quantised
    fp16_bytes = sum(2 * math.prod(m.weight.quant_state.shape) for m in quantised)
    parts = deployed_size_bytes(nf4, stored_itemsize=2)
    assert parts["quantised"] <= 0.35 * fp16_bytes, (parts, fp16_bytes)
    assert parts["quantised"] >= 0.25 * fp16_bytes  # 4 bits a weight cannot be undercut
    # Everything else (embeddings, norms, convolutions, biases) at fp16, as the checkpoint stores it.
    from trainables.blocks.metrics import safetensors_bytes

    assert parts["total"] == parts["quantised"] + parts["frozen"]
    assert parts["total"] < safetensors_bytes(tiny_en_dir)
    assert parts["frozen"] + fp16_bytes == pytest.approx(safetensors_bytes(tiny_en_dir), rel=0.01)


def test_ctc_model_trains_and_reports(tiny_wav2vec2_dir: Path) -> None:
    metrics = run(parse_config({
        "model": str(tiny_wav2vec2_dir), "data": {"source": "espeak-smoke", "max_eval_items": 4, "max_val_items": 4},
        "precision": {"bits": 32}, "lora": {"r": 2}, "optim": {"max_steps": 3, "warmup_steps": 1, "batch_size": 4},
    }))
    for name in CONTRACT_METRICS:
        assert name in metrics and math.isfinite(metrics[name]), name
    assert metrics["wer"] >= 0.9  # a random 2-layer model cannot transcribe


@pytest.mark.slow
def test_qlora_nf4_lowers_wer_below_the_untuned_model() -> None:
    """Real QLoRA (NF4, double quantisation) on tiny.en and the espeak corpus, on CPU (about 90 s).

    The test split's voices and sentences are absent from training; the untuned model is
    evaluated as released (fp32, 30-second window).
    """
    data = {"source": "espeak-general", "max_eval_items": 64, "max_val_items": 8}
    untuned = run(parse_config({"data": {**data, "encoder_window_s": 30.0}, "optim": {"max_steps": 0, "warmup_steps": 0}}))
    tuned = run(parse_config({
        "data": data, "precision": {"bits": 4, "quant_type": "nf4", "double_quant": True},
        "lora": {"r": 8}, "optim": {"max_steps": 40, "warmup_steps": 4, "lr": 1e-3, "batch_size": 8},
    }))
    assert untuned["wer"] <= 0.35, untuned["wer"]
    assert tuned["wer"] < untuned["wer"], (tuned["wer"], untuned["wer"])
    assert tuned["compression_ratio"] > 1


def test_adalora_prunes_to_the_uniform_budget(tiny_whisper_dir: Path) -> None:
    """AdaLoRA starts above rank r and ends with the budget of uniform rank r."""
    metrics = run(parse_config({
        "model": str(tiny_whisper_dir), "data": {"source": "espeak-smoke", "max_eval_items": 2, "max_val_items": 2},
        "precision": {"bits": 32}, "eval": {"max_new_tokens": 2},
        "lora": {"kind": "adalora", "r": 2, "modules": ["q", "v"]},
        "optim": {"max_steps": 12, "warmup_steps": 1, "batch_size": 2},
    }))
    assert metrics["step"] == 12 and math.isfinite(metrics["wer"])
    modules = 2 * (2 + 2 + 2)  # q and v in 2 encoder, 2 decoder self-attention and 2 cross-attention layers
    assert metrics["lora_rank_total"] == 2 * modules  # pruned from init_r = 3 per module to the budget of r = 2
    assert 0 <= metrics["lora_rank_min"] <= 2 <= metrics["lora_rank_max"] <= 3  # the ranks it ended with
    assert 0 <= metrics["lora_rank_gini"] < 1


@pytest.mark.parametrize(("steps", "warmup"), [(40, 4), (400, 60), (4000, 100)])
def test_adalora_schedule_scales_with_the_step_budget(tiny_whisper_dir: Path, steps: int, warmup: int) -> None:
    """On the config qlora builds, peft's own budget schedule keeps the initial ranks through the warm-up, prunes
    in the middle, and holds the pruned ranks fixed over the last steps, at every step budget."""
    from peft import get_peft_model

    cfg = parse_config({"model": str(tiny_whisper_dir), "lora": {"kind": "adalora", "r": 4, "alpha": 8, "modules": ["q", "v"]},
                        "optim": {"max_steps": steps, "warmup_steps": warmup}})
    base = load_base_model(str(tiny_whisper_dir), "whisper", PrecisionConfig(bits=32), CPU)
    names = target_module_names(base, "whisper", cfg.lora, stack_depths(base.config.to_dict(), "whisper"))
    config = adalora_config(names, cfg)
    assert config.total_step == steps and config.init_r == 6 and config.target_r == 4
    assert config.lora_alpha / config.init_r == pytest.approx(8 / 4)  # the same scale per direction as LoRA
    assert config.orth_reg_weight == pytest.approx(0.1)
    allocator = get_peft_model(base, config).base_model.rankallocator
    schedule = [allocator.budget_schedule(step) for step in range(1, steps + 1)]
    budgets = [b for b, _ in schedule]
    first = next(step for step, b in enumerate(budgets, 1) if b < allocator.init_bgt)
    last = max(step for step in range(2, steps + 1) if budgets[step - 1] != budgets[step - 2])
    assert first > warmup and first > steps // 20  # after the warm-up, and not in the first few steps
    assert last <= steps - steps // 5  # ranks fixed for at least the last fifth of the steps
    assert budgets[-1] == allocator.target_bgt == 4 * len(names)  # ends at the uniform budget
    reallocations = sum(masks for _, masks in schedule[first - 1:last])
    assert 5 <= reallocations <= 60  # re-allocated several times, not at every one of 4,000 steps
    assert all(b1 >= b2 for b1, b2 in zip(budgets, budgets[1:], strict=False))  # never grows back


def test_nf4_trains_after_a_mid_training_evaluation(tiny_whisper_dir: Path) -> None:
    """Evaluating (eval mode, no grad) then training again must work on 4-bit layers on the CPU."""
    metrics = run(parse_config({
        "model": str(tiny_whisper_dir), "data": {"source": "espeak-smoke", "max_eval_items": 2, "max_val_items": 2},
        "precision": {"bits": 4}, "eval": {"max_new_tokens": 2, "every": 1},
        "optim": {"max_steps": 3, "warmup_steps": 1, "batch_size": 2},
    }))
    assert metrics["step"] == 3 and math.isfinite(metrics["loss"])


def _bits_levels() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "search_spaces" / "qlora_bits.yaml").read_text())["space"]["base"]["named"]


@pytest.mark.parametrize("level", ["nf4_dq", "fp4", "int8"])
def test_each_base_precision_of_qlora_bits_trains(tiny_whisper_dir: Path, level: str) -> None:
    """The ablation sweep's test runs three of qlora_bits' levels through Ray; the other bases train here, each as
    the shipped file holds it, with the same LoRA: a few steps, a finite loss, every contract metric."""
    levels = _bits_levels()
    metrics = run(parse_config({
        "model": str(tiny_whisper_dir), "data": {"source": "espeak-smoke", "max_eval_items": 2, "max_val_items": 2},
        "lora": {"r": 4}, "eval": {"max_new_tokens": 2},
        "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 2}, **levels[level],
    }))
    assert metrics["step"] == 2 and math.isfinite(metrics["loss"])
    for name in CONTRACT_METRICS:
        assert name in metrics and math.isfinite(metrics[name]), name


def test_adapted_nf4_size_counts_each_quantised_weight_once(tiny_en_dir: Path) -> None:
    """With LoRA on top, the deployed size is the base's plus the adapters' bytes, nothing more."""
    cfg = json.loads((tiny_en_dir / "config.json").read_text())
    model = load_base_model(str(tiny_en_dir), "whisper", PrecisionConfig(bits=4), CPU)
    base = deployed_size_bytes(model, stored_itemsize=2)
    lora = _lora(r=4)
    names = target_module_names(model, "whisper", lora, stack_depths(cfg, "whisper"))
    adapted = deployed_size_bytes(add_lora(model, names, lora), stored_itemsize=2)
    adapter_bytes = 4 * lora_param_count(model, names, 4)  # fp32 A and B
    assert adapted["quantised"] == base["quantised"]
    assert adapted["total"] == base["total"] + adapter_bytes


def test_a_repeated_library_warning_reaches_the_console_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from trainables.blocks.models import warn_once

    log = logging.getLogger("test.repeats")
    warn_once(log)
    warn_once(log)  # idempotent: one filter, not two
    with caplog.at_level(logging.WARNING, logger="test.repeats"):
        for _ in range(5):
            log.warning("inputs will be cast from %s to float16", "torch.float32")
        log.warning("another message")
    assert [r.getMessage() for r in caplog.records] == ["inputs will be cast from torch.float32 to float16",
                                                        "another message"]

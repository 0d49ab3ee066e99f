"""Entropy-aware LoRA: rank allocation, peft rank patterns, entropy measurement, the loss term, logging."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from trainables.blocks.config import ConfigError, build
from trainables.blocks.models import (
    LoraConfig,
    PrecisionConfig,
    load_base_model,
    shrink_whisper_encoder,
    stack_depths,
    target_module_names,
)
from trainables.qlora_entropy import (
    ActivationCollector,
    EntropyConfig,
    activation_entropy,
    add_entropy_term,
    allocate_ranks,
    entropy_heatmap,
    entropy_metrics,
    entropy_penalty,
    gram_entropy,
    layer_entropies,
    lora_rank_pattern,
    measure_entropy,
    module_position,
    rank_spread,
    resolve_modules,
    sharpen,
)

CPU = torch.device("cpu")
FRAMES = 100  # log-mel frames of the random utterances: a 2-second encoder window


# ---------------------------------------------------------------------------------------------
# Allocation


def _profile(rng: random.Random, n: int, kind: int) -> dict[str, float]:
    if kind == 0:  # spread
        values = [rng.uniform(0, 6) for _ in range(n)]
    elif kind == 1:  # ties (q, k, v share an input)
        values = [float(rng.randint(0, 3)) for _ in range(n)]
    elif kind == 2:  # some zeros
        values = [0.0 if rng.random() < 0.3 else rng.uniform(0, 5) for _ in range(n)]
    elif kind == 3:  # heavy tail
        values = [math.exp(rng.uniform(-6, 4)) for _ in range(n)]
    else:  # all zero
        values = [0.0] * n
    return {f"m{i}": v for i, v in enumerate(values)}


def test_allocated_ranks_sum_to_budget_stay_in_bounds_and_follow_entropy() -> None:
    rng = random.Random(0)
    checked = 0
    for trial in range(250):
        n = rng.randint(1, 30)
        entropies = _profile(rng, n, trial % 5)
        r_min = rng.randint(1, 3)
        r_max = rng.choice([None, rng.randint(r_min, r_min + 12)])
        top = r_max * n if r_max is not None else r_min * n + 12 * n
        for budget in {r_min * n, top, rng.randint(r_min * n, top), rng.randint(r_min * n, top)}:
            ranks = allocate_ranks(entropies, budget, r_min, r_max)
            assert list(ranks) == list(entropies)
            assert all(isinstance(r, int) for r in ranks.values())
            assert sum(ranks.values()) == budget, (entropies, budget, ranks)
            assert all(r_min <= r <= (r_max or budget) for r in ranks.values())
            for a, ha in entropies.items():
                for b, hb in entropies.items():
                    if ha > hb:
                        assert ranks[a] >= ranks[b], (entropies, budget, ranks, a, b)
            checked += 1
    assert checked > 500


def test_allocation_is_proportional_when_the_bounds_do_not_bind() -> None:
    assert allocate_ranks({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, 100) == {"a": 10, "b": 20, "c": 30, "d": 40}
    # Largest remainder: shares 5.33, 10.67, 16 -> floors 5, 10, 16, and the unit left goes to b.
    assert allocate_ranks({"a": 1.0, "b": 2.0, "c": 3.0}, 32) == {"a": 5, "b": 11, "c": 16}
    # Equal entropies: uniform up to one unit, the extra units in model order.
    assert allocate_ranks({"a": 2.0, "b": 2.0, "c": 2.0}, 24) == {"a": 8, "b": 8, "c": 8}
    assert allocate_ranks({"a": 2.0, "b": 2.0, "c": 2.0}, 10) == {"a": 4, "b": 3, "c": 3}


def test_sharpness_spreads_a_nearly_uniform_allocation() -> None:
    """Entropies within 1.5× of each other: γ = 1 is close to uniform, γ = 4 clearly is not, γ = 0 is uniform."""
    entropies = {f"m{i}": 3.0 + 0.1 * i for i in range(16)}  # 3.0 .. 4.5 nats
    spread = {g: rank_spread(allocate_ranks(sharpen(entropies, g), 8 * 16)) for g in (0.0, 1.0, 4.0)}
    assert spread[0.0] == {"min": 8, "max": 8, "gini": 0.0}
    assert spread[1.0]["max"] - spread[1.0]["min"] <= 4 and spread[1.0]["gini"] < 0.1
    assert spread[4.0]["max"] >= 2 * spread[4.0]["min"] and spread[4.0]["gini"] > 2 * spread[1.0]["gini"]
    assert sharpen(entropies, 1.0) == entropies


def test_rank_spread_of_known_allocations() -> None:
    assert rank_spread({"a": 4, "b": 4}) == {"min": 4, "max": 4, "gini": 0.0}
    # Gini of (0, 0, 0, 4): mean |difference| over the 16 ordered pairs is 24/16, over twice the mean 2.
    assert rank_spread({"a": 0, "b": 0, "c": 0, "d": 4})["gini"] == pytest.approx(0.75)
    assert rank_spread({"a": 1, "b": 3})["gini"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        rank_spread({})


def test_bounds_redistribute_the_budget() -> None:
    # a alone would take 100/102 of 12; capped at 6, the rest is split evenly.
    assert allocate_ranks({"a": 100.0, "b": 1.0, "c": 1.0}, 12, r_max=6) == {"a": 6, "b": 3, "c": 3}
    # a zero-entropy module still gets r_min.
    assert allocate_ranks({"a": 0.0, "b": 1.0}, 10, r_min=2) == {"a": 2, "b": 8}


@pytest.mark.parametrize(("entropies", "budget", "kwargs", "match"), [
    ({"a": 1.0, "b": 2.0}, 3, {"r_min": 2}, "below r_min"),
    ({"a": 1.0, "b": 2.0}, 9, {"r_max": 4}, "above r_max"),
    ({"a": -1.0}, 4, {}, "finite and non-negative"),
    ({"a": float("nan")}, 4, {}, "finite and non-negative"),
    ({}, 4, {}, "no modules"),
    ({"a": 1.0}, 4, {"r_min": 0}, "r_min must be at least 1"),
])
def test_impossible_budgets_fail_in_one_line(entropies: dict, budget: int, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        allocate_ranks(entropies, budget, **kwargs)
    assert "\n" not in str(info.value)


def test_entropy_config_checks_name_the_field() -> None:
    assert build(EntropyConfig, {}).lambda_ == 0.0
    for bad, field in [({"r_min": 0}, "r_min"), ({"r_min": 4, "r_max": 2}, "r_max"), ({"order": 3}, "order"),
                       ({"budget": 0}, "budget"), ({"calibration_batches": 0}, "calibration_batches"),
                       ({"log_every": -1}, "log_every"), ({"side": "middle"}, "side"),
                       ({"sharpness": -1.0}, "sharpness")]:
        with pytest.raises(ConfigError, match=rf"^{field}:"):
            build(EntropyConfig, bad)
    cfg = build(EntropyConfig, {"log_every": 5})
    assert [cfg.collects(s) for s in (1, 5, 10)] == [False, True, True]
    assert build(EntropyConfig, {"lambda_": 0.1}).collects(1)


# ---------------------------------------------------------------------------------------------
# Entropy estimates


def test_entropy_of_known_spectra() -> None:
    p = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    gram = torch.diag(p * 7)  # the scale does not matter
    assert float(gram_entropy(gram, 2)) == pytest.approx(-math.log(float((p * p).sum())))
    assert float(gram_entropy(gram, 1)) == pytest.approx(-float((p * p.log()).sum()))
    assert float(gram_entropy(torch.zeros(4, 4), 2)) == 0.0
    torch.manual_seed(0)
    white = torch.randn(6000, 8)
    assert float(activation_entropy(white, 2)) == pytest.approx(math.log(8), abs=0.02)
    assert float(activation_entropy(white, 1)) == pytest.approx(math.log(8), abs=0.02)
    basis, _ = torch.linalg.qr(torch.randn(16, 2))
    plane = torch.randn(6000, 2) @ basis.T + 3.0  # two equal directions, offset (centring removes it)
    assert float(activation_entropy(plane, 2)) == pytest.approx(math.log(2), abs=0.02)
    assert float(activation_entropy(100 * plane, 2)) == pytest.approx(float(activation_entropy(plane, 2)), rel=1e-4)
    # Few tokens: the Gram matrix is taken on the token side and the bound is log(tokens - 1).
    assert float(activation_entropy(torch.randn(5, 64), 1)) <= math.log(4) + 1e-5
    # Constant activations: zero entropy, finite gradient.
    flat = torch.ones(10, 4, requires_grad=True)
    h = activation_entropy(flat, 2)
    h.backward()
    assert float(h.detach()) == 0.0 and torch.isfinite(flat.grad).all()


# ---------------------------------------------------------------------------------------------
# The tiny Whisper model


def _tiny(tiny_whisper_dir: Path) -> tuple[torch.nn.Module, list[str]]:
    cfg = json.loads((tiny_whisper_dir / "config.json").read_text())
    model = load_base_model(str(tiny_whisper_dir), "whisper", PrecisionConfig(bits=32), CPU)
    shrink_whisper_encoder(model, FRAMES // 2)
    names = target_module_names(model, "whisper", LoraConfig(), stack_depths(cfg, "whisper"))
    return model, names


def _batch(seed: int, n: int = 2, tokens: int = 6) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"input_features": torch.randn(n, 80, FRAMES, generator=gen),
            "labels": torch.randint(0, 1000, (n, tokens), generator=gen)}


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def _with_lora(model: torch.nn.Module, names: list[str], ranks: dict[str, int], random_b: bool) -> torch.nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=names, bias="none",
                            rank_pattern=lora_rank_pattern(ranks), init_lora_weights=not random_b)
    torch.manual_seed(0)
    return get_peft_model(model, config)


def test_measure_entropy_gives_one_finite_value_per_module(tiny_whisper_dir: Path) -> None:
    model, names = _tiny(tiny_whisper_dir)
    assert len(names) == 2 * 6 + 2 * 10  # every linear kind; the decoder's cross-attention too
    batches = [_batch(1), _batch(2)]
    model.train()
    h2 = measure_entropy(model, names, batches, _forward)
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed
    assert list(h2) == names
    widths = dict(model.named_modules())
    for name, h in h2.items():
        assert math.isfinite(h) and 0.0 <= h <= math.log(widths[name].in_features) + 1e-9, (name, h)
    # q, k and v of one block read the same tensor.
    for stack in ("encoder", "decoder"):
        for layer in range(2):
            qkv = [h2[f"model.{stack}.layers.{layer}.self_attn.{p}_proj"] for p in "qkv"]
            assert qkv[0] == qkv[1] == qkv[2]
    # Shannon entropy is never below the collision entropy.
    h1 = measure_entropy(model, names, batches, _forward, order=1)
    assert all(h1[n] >= h2[n] - 1e-9 for n in names)
    # Under a memory cap the modules are measured in groups, one pass over the batches each; same values.
    calls = []
    grouped = measure_entropy(model, names, batches, lambda m, b: calls.append(1) or _forward(m, b), max_bytes=100_000)
    assert len(calls) >= 3 * len(batches)
    assert grouped == pytest.approx(h2, rel=1e-9)
    # Outputs differ per module.
    out = measure_entropy(model, names, batches, _forward, side="output")
    assert all(math.isfinite(v) for v in out.values())


def test_rank_pattern_gives_each_module_its_allocated_rank(tiny_whisper_dir: Path) -> None:
    from peft.utils.other import get_pattern_key

    model, names = _tiny(tiny_whisper_dir)
    entropies = measure_entropy(model, names, [_batch(1)], _forward)
    ranks = allocate_ranks(entropies, budget=3 * len(names), r_min=1, r_max=8)
    assert len(set(ranks.values())) >= 3  # not uniform: the test means something
    base = dict(model.named_modules())
    expected = sum(r * (base[n].in_features + base[n].out_features) for n, r in ranks.items())
    pattern = lora_rank_pattern(ranks)
    # Under peft's own matching, each key matches its own module and nothing else.
    for module_name in base:
        key = get_pattern_key(list(pattern), module_name)
        assert (key in pattern) == (module_name in ranks), module_name
        if key in pattern:
            assert pattern[key] == ranks[module_name]
    peft_model = _with_lora(model, names, ranks, random_b=False)
    inner = peft_model.base_model.model
    for name, r in ranks.items():
        layer = inner.get_submodule(name)
        assert layer.lora_A["default"].weight.shape == (r, layer.in_features), name
        assert layer.lora_B["default"].weight.shape == (layer.out_features, r), name
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == expected


def test_collector_finds_modules_inside_wrappers_and_removes_its_hooks(tiny_whisper_dir: Path) -> None:
    model, names = _tiny(tiny_whisper_dir)
    peft_model = _with_lora(model, names, dict.fromkeys(names, 2), random_b=False)
    found = resolve_modules(peft_model, names)
    assert all(type(m).__name__ == "Linear" and hasattr(m, "lora_A") for m in found.values())
    with pytest.raises(KeyError, match="no module"):
        resolve_modules(peft_model, ["model.encoder.layers.7.fc1"])
    with ActivationCollector(peft_model, names, active=False) as collector:
        _forward(peft_model, _batch(1))
        assert collector.activations == {}
        collector.active = True
        _forward(peft_model, _batch(1))
        assert set(collector.activations) == set(names)
        logged = collector.entropies()
        assert set(logged) == set(names) and all(math.isfinite(v) for v in logged.values())
    assert collector.activations == {}
    assert all(not m._forward_hooks for m in peft_model.modules())


# ---------------------------------------------------------------------------------------------
# The loss term


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _plain_run(tiny_whisper_dir: Path, seed: int) -> tuple[torch.nn.Module, list[str], Any, torch.Tensor, dict]:
    """A LoRA model (random B), a batch, and its plain loss and gradients, the gradients then cleared."""
    model, names = _tiny(tiny_whisper_dir)
    peft_model = _with_lora(model, names, dict.fromkeys(names, 2), random_b=True)
    peft_model.eval()
    batch = _batch(seed)
    plain = _forward(peft_model, batch)
    plain.backward()
    plain_grads = _grads(peft_model)
    peft_model.zero_grad(set_to_none=True)
    return peft_model, names, batch, plain, plain_grads


def test_lambda_zero_is_exactly_the_loss_without_the_term(tiny_whisper_dir: Path) -> None:
    peft_model, names, batch, plain, plain_grads = _plain_run(tiny_whisper_dir, 3)
    with ActivationCollector(peft_model, names) as collector:
        loss = _forward(peft_model, batch)
        total = add_entropy_term(loss, collector.activations, 0.0)
        assert total is loss
        total.backward()
    assert torch.equal(total, plain) and total.item() == plain.item()
    grads = _grads(peft_model)
    assert all(torch.equal(grads[n], g) for n, g in plain_grads.items())


def test_lambda_changes_the_loss_and_its_gradient_reaches_the_adapters(tiny_whisper_dir: Path) -> None:
    peft_model, names, batch, plain, plain_grads = _plain_run(tiny_whisper_dir, 4)
    with ActivationCollector(peft_model, names) as collector:
        loss = _forward(peft_model, batch)
        h = float(entropy_penalty(collector.activations).detach())
        total = add_entropy_term(loss, collector.activations, 0.5)
        value, plain_value = float(loss.detach()), float(plain.detach())
        assert float(total.detach()) == pytest.approx(value - 0.5 * h, rel=1e-6)
        assert float(total.detach()) != plain_value
        per_layer = layer_entropies(collector.activations)
        assert h == pytest.approx(sum(float(v.detach()) for v in per_layer.values()) / len(names), rel=1e-6)
        flipped = add_entropy_term(loss, collector.activations, -0.5)
        assert float(flipped.detach()) == pytest.approx(value + 0.5 * h, rel=1e-6)
        total.backward()
    grads = _grads(peft_model)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(not torch.equal(grads[n], g) for n, g in plain_grads.items())

    # The term alone: every adapter whose output reaches an adapted layer's input gets a gradient,
    # i.e. all but the last decoder layer's fc2 (its output only feeds the final norm and the head).
    peft_model.zero_grad(set_to_none=True)
    with ActivationCollector(peft_model, names) as collector:
        _forward(peft_model, batch)
        entropy_penalty(collector.activations).backward()
    silent = {n.split(".lora_")[0].removeprefix("base_model.model.") for n, p in peft_model.named_parameters()
              if "lora_" in n and (p.grad is None or torch.count_nonzero(p.grad) == 0)}
    assert silent == {"model.decoder.layers.1.fc2"}


def test_entropy_penalty_needs_activations() -> None:
    with pytest.raises(ValueError, match="no activations"):
        entropy_penalty({})
    loss = torch.tensor(1.5)
    assert add_entropy_term(loss, {}, 0.0) is loss  # λ = 0 never looks at the activations


# ---------------------------------------------------------------------------------------------
# Logging


def test_metrics_and_positions_name_modules_compactly() -> None:
    values = {"model.encoder.layers.3.self_attn.q_proj": 1.0, "model.decoder.layers.1.encoder_attn.k_proj": 2.0,
              "base_model.model.model.decoder.layers.0.fc2": torch.tensor(3.0)}
    assert entropy_metrics(values) == {"entropy/enc3.q": 1.0, "entropy/dec1.x.k": 2.0, "entropy/dec0.fc2": 3.0,
                                       "entropy/mean": 2.0}
    assert module_position("wav2vec2.encoder.layers.5.attention.v_proj") == ("v", "encoder", 5)
    assert module_position("wav2vec2.encoder.layers.0.feed_forward.intermediate_dense") == ("fc1", "encoder", 0)
    assert module_position("proj_out") is None


def test_heatmap_png_is_written(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    model, names = _tiny(tiny_whisper_dir)
    entropies = measure_entropy(model, names, [_batch(1)], _forward)
    ranks = allocate_ranks(entropies, 4 * len(names), r_max=8)
    for values, file in [(ranks, "ranks.png"), (entropies, "entropy.png")]:
        path = entropy_heatmap(values, tmp_path / "plots" / file, title=file)
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


# ---------------------------------------------------------------------------------------------
# Wired into the QLoRA trainable (runs once qlora.QLoRAConfig has its `entropy` field)

RUN = {"data": {"source": "espeak-smoke", "max_eval_items": 4, "max_val_items": 4}, "precision": {"bits": 32},
       "lora": {"r": 2}, "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 4}, "eval": {"max_new_tokens": 8},
       "save_adapter": False}


def _qlora() -> Any:
    from trainables import qlora

    if "entropy" not in qlora.QLoRAConfig.__dataclass_fields__:
        pytest.skip("trainables.qlora is not wired to trainables.qlora_entropy yet")
    return qlora


def test_qlora_allocates_ranks_logs_entropy_and_saves_the_heatmaps(tiny_whisper_dir: Path) -> None:
    qlora = _qlora()
    entropy = {"enabled": True, "lambda_": 0.05, "log_every": 1, "calibration_batches": 2, "r_max": 4}
    s = qlora.setup(qlora.parse_config({**RUN, "model": str(tiny_whisper_dir), "entropy": entropy}))
    metrics, out = qlora.finish(s, *qlora.train(s))
    allocation = json.loads((out / "rank_allocation.json").read_text())
    ranks = {n: a["rank"] for n, a in allocation.items()}
    assert sum(ranks.values()) == 2 * len(ranks) == metrics["lora_rank_total"]  # default budget: lora.r per module
    assert all(1 <= r <= 4 for r in ranks.values())
    assert (metrics["lora_rank_min"], metrics["lora_rank_max"]) == (min(ranks.values()), max(ranks.values()))
    assert metrics["lora_rank_gini"] == pytest.approx(rank_spread(ranks)["gini"])
    base = dict(load_base_model(str(tiny_whisper_dir), "whisper", PrecisionConfig(bits=32), CPU).named_modules())
    assert metrics["trainable_params"] == sum(r * (base[n].in_features + base[n].out_features) for n, r in ranks.items())
    history = json.loads((out / "history.json").read_text())
    assert all(f"entropy/{short}" in point for point in history for short in ("enc0.q", "dec1.x.k", "mean"))
    for png in ("lora_ranks.png", "calibration_entropy.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")


def test_qlora_with_lambda_zero_trains_exactly_as_without_the_module(tiny_whisper_dir: Path) -> None:
    qlora = _qlora()
    plain = qlora.run(qlora.parse_config({**RUN, "model": str(tiny_whisper_dir)}))
    logged = qlora.run(qlora.parse_config({**RUN, "model": str(tiny_whisper_dir), "entropy": {"log_every": 1}}))
    assert logged["loss"] == plain["loss"]  # hooks and logging leave the training bitwise unchanged
    with pytest.raises(ConfigError, match=r"^entropy.budget: budget 3 is below"):
        qlora.run(qlora.parse_config({**RUN, "model": str(tiny_whisper_dir), "entropy": {"enabled": True, "budget": 3}}))


def test_rank_one_spectrum_has_zero_not_negative_entropy() -> None:
    """A rank-1 Gram matrix has entropy 0; rounding must not make it negative (the allocator rejects that)."""
    from trainables.qlora_entropy import gram_entropy

    torch.manual_seed(0)
    for _ in range(50):
        v = torch.randn(64, dtype=torch.float32) * 10 ** torch.empty(1).uniform_(-3, 3)
        h = float(gram_entropy(torch.outer(v, v)))
        assert h >= 0.0 and h < 1e-5

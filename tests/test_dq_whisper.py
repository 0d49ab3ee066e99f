"""DQ-Whisper: student construction, losses, layer matching, fake quantisation, packed export, and real runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CONTRACT_METRICS
from trainables import dq_whisper as dq
from trainables import dq_whisper_quant as fq
from trainables.blocks.config import ConfigError, build
from trainables.blocks.models import PrecisionConfig, load_base_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def teacher(tiny_whisper_dir: Path) -> torch.nn.Module:
    return load_base_model(str(tiny_whisper_dir), "whisper", PrecisionConfig(bits=32), CPU).eval()


def _inputs(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, model.config.num_mel_bins, 2 * model.config.max_source_positions, generator=gen)
    labels = torch.randint(0, 1000, (2, 7), generator=gen)
    labels[1, 5:] = -100
    return {"input_features": feats, "labels": labels}


def test_spaced_layers_keep_first_and_last() -> None:
    assert dq.spaced_layers(6, 2) == [0, 5]
    assert dq.spaced_layers(32, 2) == [0, 31]
    assert dq.spaced_layers(6, 3) in ([0, 2, 5], [0, 3, 5])
    assert dq.spaced_layers(4, 0) == dq.spaced_layers(4, 4) == [0, 1, 2, 3]


def test_student_copies_the_chosen_teacher_layers(teacher: torch.nn.Module) -> None:
    same = dq.student_from_teacher(teacher, 0, 0).eval()
    x = _inputs(teacher)
    with torch.no_grad():
        assert torch.equal(same(**x).logits, teacher(**x).logits)
    small = dq.student_from_teacher(teacher, 1, 1)
    assert (small.config.encoder_layers, small.config.decoder_layers) == (1, 1)
    t_last = teacher.model.decoder.layers[1].fc1.weight
    assert torch.equal(small.model.decoder.layers[0].fc1.weight, t_last)
    assert small.model.decoder.layers[0].fc1.weight.data_ptr() != t_last.data_ptr()  # a copy, not a view


def test_alpha_zero_is_exactly_cross_entropy(teacher: torch.nn.Module) -> None:
    out = teacher(**_inputs(teacher))
    kd = torch.tensor(float("nan"))  # whatever the distillation terms are, α = 0 ignores them
    loss = dq.combine(out.loss, kd, 0.0)
    assert loss is out.loss
    assert loss.item() == out.loss.item()
    mixed = dq.combine(out.loss, torch.tensor(2.0), 0.25)
    assert mixed.item() == pytest.approx(0.75 * out.loss.item() + 0.25 * 2.0)


def test_kl_is_zero_for_an_identical_student_and_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 50, generator=gen)
    mask = torch.ones(2, 5, dtype=torch.bool)
    vals, idx = logits.topk(50, dim=-1)  # full support: the truncated KL is the ordinary KL
    assert dq.kd_kl(logits, vals, idx, mask, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 5, 50, generator=gen)
    assert dq.kd_kl(other, vals, idx, mask, 2.0).item() > 0.01
    vals8, idx8 = logits.topk(8, dim=-1)
    assert dq.kd_kl(other, vals8, idx8, mask, 2.0).item() > 0  # top-k KL(p̂ ‖ q) is a true KL, ≥ 0


def _teacher_states(n: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(2, 5, 16, generator=gen) for _ in range(n)]


def test_dynamic_matching_finds_the_equal_teacher_layer() -> None:
    t = _teacher_states()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    picks = [4, 1, 3]
    student = [t[j].clone() for j in picks]
    loss, match = dq.hidden_loss(student, t, mask, "dynamic")
    assert match == picks and loss.item() == 0.0
    _, mono = dq.hidden_loss(student, t, mask, "dynamic_monotonic")
    assert mono == sorted(mono) and mono[1:] == [1, 3]  # the best non-decreasing path keeps the two exact matches
    ordered = [t[j].clone() for j in (0, 2, 5)]
    assert dq.hidden_loss(ordered, t, mask, "dynamic_monotonic")[1] == [0, 2, 5]
    assert dq.match_layers(torch.zeros(4, 6), "static") == [1, 3, 5, 5]


def test_hidden_loss_has_gradients_for_the_student() -> None:
    t = _teacher_states(3)
    s = [torch.randn(2, 5, 16, requires_grad=True) for _ in range(2)]
    loss, _ = dq.hidden_loss(s, t, torch.ones(2, 5, dtype=torch.bool), "dynamic")
    loss.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)


def test_8bit_fake_quantisation_changes_logits_by_under_one_percent(teacher: torch.nn.Module) -> None:
    """Every linear weight at 8 bits (the embedding stays fp16 here; with it at 8 bits too this model's logits move 1.2%)."""
    student = dq.student_from_teacher(teacher, 0, 0).eval()
    x = _inputs(teacher)
    with torch.no_grad():
        ref = student(**x).logits
        bits = fq.add_fake_quant(student, build(fq.QuantConfig, {"bits": 8, "embed_bits": 16}))
        assert bits and set(bits.values()) == {8}
        quant = student(**x).logits
    rel = float((quant - ref).norm() / ref.norm())
    assert 0 < rel < 0.01, rel


def test_fake_quant_edges_and_straight_through_gradients(teacher: torch.nn.Module) -> None:
    student = dq.student_from_teacher(teacher, 0, 0)
    bits = fq.add_fake_quant(student, build(fq.QuantConfig, {"bits": 2}))
    assert bits["model.encoder.layers.0.fc1"] == 8 and bits["model.decoder.layers.1.fc2"] == 8  # first and last
    assert bits["model.encoder.layers.1.fc1"] == 2 and bits["model.decoder.layers.0.self_attn.q_proj"] == 2
    assert fq.add_fake_quant(dq.student_from_teacher(teacher, 0, 0), build(fq.QuantConfig, {"bits": 16})) == {}
    student(**_inputs(teacher)).loss.backward()
    layer = student.get_submodule("model.encoder.layers.1.fc1")
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.log_scale.grad is not None and layer.log_scale.grad.abs().sum() > 0


def test_token_embedding_is_quantised_once_for_input_and_tied_output(teacher: torch.nn.Module, tmp_path: Path) -> None:
    """The embedding and the output projection read one quantised matrix; the export stores it once, packed."""
    import json

    from safetensors import safe_open

    student = dq.student_from_teacher(teacher, 0, 0)
    bits = fq.add_fake_quant(student, build(fq.QuantConfig, {"bits": 4, "embed_bits": 4}))
    emb = student.model.decoder.embed_tokens
    assert bits["model.decoder.embed_tokens"] == 4 and student.proj_out.embedding is emb
    h = torch.randn(2, 3, student.config.d_model)
    assert torch.allclose(student.proj_out(h), h @ emb.quantised_weight().T)
    assert torch.equal(emb(torch.tensor([[5, 9]])), emb.quantised_weight()[[5, 9]][None])
    student(**_inputs(teacher)).loss.backward()
    assert emb.weight.grad.abs().sum() > 0 and emb.log_scale.grad.abs().sum() > 0

    path = tmp_path / "model.safetensors"
    fq.export_quantised(student, path)
    with safe_open(str(path), "pt") as fh:
        keys, meta = set(fh.keys()), fh.metadata()
        codes = fq.unpack_bits(fh.get_tensor("model.decoder.embed_tokens.qweight").numpy(), 4, emb.weight.numel())
        scale = fh.get_tensor("model.decoder.embed_tokens.scale").float()
    assert "proj_out.weight" not in keys and "model.decoder.embed_tokens.weight" not in keys
    assert json.loads(meta["proj_out"]) == {"tied_to": "model.decoder.embed_tokens"}
    restored = (torch.from_numpy(codes.astype(np.int16) - 7).reshape(emb.weight.shape).float() * scale[:, None])
    assert torch.allclose(restored, emb.quantised_weight().detach(), rtol=1e-2, atol=1e-6)

    plain = dq.student_from_teacher(teacher, 0, 0)
    assert "model.decoder.embed_tokens" not in fq.add_fake_quant(plain, build(fq.QuantConfig, {"bits": 4, "embed_bits": 16}))
    assert isinstance(plain.model.decoder.embed_tokens, torch.nn.Embedding)


def test_decoding_reuses_the_quantised_weight_until_an_update(teacher: torch.nn.Module) -> None:
    """Outside autograd the fake-quantised weight is computed once, and recomputed after an optimiser step."""
    student = dq.student_from_teacher(teacher, 0, 0)
    fq.add_fake_quant(student, build(fq.QuantConfig, {"bits": 4}))
    layer = student.get_submodule("model.encoder.layers.1.fc1")
    with torch.no_grad():
        first = layer.quantised_weight()
        assert layer.quantised_weight() is first
    with torch.no_grad():
        layer.weight.add_(0.5 * layer.scale[:, None])
        moved = layer.quantised_weight()
    assert moved is not first and torch.equal(moved, fq.fake_quant(layer.weight, layer.scale, layer.qmax))
    assert layer.quantised_weight().requires_grad  # in training (autograd on) it is recomputed with gradients


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_round_trips(bits: int) -> None:
    values = np.random.default_rng(bits).integers(0, 2**bits - 1, size=101).astype(np.uint8)
    packed = fq.pack_bits(values, bits)
    assert packed.nbytes == math.ceil(101 * bits / 8)
    assert np.array_equal(fq.unpack_bits(packed, bits, 101), values)


def test_exported_4bit_student_size(teacher: torch.nn.Module, tmp_path: Path) -> None:
    """File size = 4-bit packed weights (8-bit at the edges) + fp16 scales + fp16 rest + header, exactly."""
    from safetensors import safe_open

    student = dq.student_from_teacher(teacher, 0, 0)
    bits = fq.add_fake_quant(student, build(fq.QuantConfig, {"bits": 4, "edge_bits": 8}))
    mods = {n: student.get_submodule(n) for n in bits}
    packed = sum(math.ceil(m.weight.numel() * bits[n] / 8) for n, m in mods.items())
    scales = sum(2 * m.out_features for m in mods.values())
    quantised_ids = {id(m.weight) for m in mods.values()} | {id(m.log_scale) for m in mods.values()}
    unique = {id(p): p for p in list(student.parameters()) + list(student.buffers()) if p.is_floating_point()}
    rest = sum(2 * p.numel() for i, p in unique.items() if i not in quantised_ids)  # embeddings, norms, convs, biases
    fp16_weights = sum(2 * m.weight.numel() for m in mods.values())

    parts = fq.export_quantised(student, tmp_path / "model.safetensors")
    expected = packed + scales + rest
    assert parts["file"] == (tmp_path / "model.safetensors").stat().st_size
    assert parts["file"] - parts["header"] == expected
    assert parts["header"] < 0.05 * parts["file"]
    four = [n for n, b in bits.items() if b == 4]
    assert packed == pytest.approx(sum(mods[n].weight.numel() * 2 for n in four) / 4
                                   + sum(mods[n].weight.numel() for n in bits if bits[n] == 8))
    assert packed < 0.5 * fp16_weights  # even with 8-bit edges, well under half of fp16
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as fh:
        name = "model.encoder.layers.1.fc1"
        q = fq.unpack_bits(fh.get_tensor(f"{name}.qweight").numpy(), 4, mods[name].weight.numel()).astype(np.int16) - 7
        assert np.array_equal(q.reshape(mods[name].weight.shape), mods[name].integer_weight().numpy())


BAD = [
    ({"quant": {"bits": 5}}, "quant.bits"),
    ({"quant": {"embed_bits": 6}}, "quant.embed_bits"),
    ({"eval_snr_db": 99.0}, "eval_snr_db"),
    ({"eval_noise": "folder"}, "eval_noise"),
    ({"distill": {"alpha": 1.5}}, "distill.alpha"),
    ({"distill": {"matching": "greedy"}}, "distill.matching"),
    ({"student": {"decoder_layers": -1}}, "student.decoder_layers"),
    ({"teacher": "openai/whisper-small"}, "teacher"),
    ({"distill": {"temperature": 0}}, "distill.temperature"),
]


@pytest.mark.parametrize(("override", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_config_fails_naming_the_field(override: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        dq.parse_config(override)
    assert str(info.value).startswith(field + ":") and "\n" not in str(info.value)


def test_student_deeper_than_teacher_is_rejected(tiny_whisper_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^student.decoder_layers: 3 is more than the teacher's 2"):
        dq.parse_config({"teacher": str(tiny_whisper_dir), "student": {"decoder_layers": 3}})


def _run_config(teacher_dir: Path, **over: dict) -> dq.DQWhisperConfig:
    base = {"teacher": str(teacher_dir), "student": {"encoder_layers": 1, "decoder_layers": 1},
            "data": {"source": "espeak-smoke", "max_train_items": 8, "max_val_items": 2, "max_eval_items": 2},
            "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 4}, "quant": {"bits": 4},
            "eval": {"max_new_tokens": 8, "batch_size": 2}}
    from trainables.blocks.config import merge

    return dq.parse_config(merge(base, over))


def test_alpha_zero_run_never_touches_the_teacher(tiny_whisper_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_a: object, **_k: object) -> None:
        raise AssertionError("the teacher cache was asked for with alpha = 0")

    monkeypatch.setattr(dq, "teacher_cache", fail)
    metrics = dq.run(_run_config(tiny_whisper_dir, distill={"alpha": 0.0}))
    assert math.isfinite(metrics["ce_loss"]) and math.isnan(metrics["kd_loss"])
    assert metrics["loss"] == metrics["ce_loss"]


@pytest.mark.slow  # trains tiny models for tens of steps: out of the everyday tier
def test_distillation_run_reports_every_metric_and_caches_the_teacher_once(
        tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECH_SWEEPS_CACHE", str(tmp_path))
    built = []
    real = dq.teacher_cache

    def counting(*a: object, **k: object) -> Path:
        path = real(*a, **k)
        built.append(path)
        return path

    monkeypatch.setattr(dq, "teacher_cache", counting)
    cfg = _run_config(tiny_whisper_dir, distill={"alpha": 0.5, "matching": "dynamic_monotonic", "top_k": 8})
    metrics = dq.run(cfg)
    for name in [*CONTRACT_METRICS, "kd_loss", "ce_loss", "wer_clean", "wer_noisy"]:
        assert name in metrics and math.isfinite(metrics[name]), name
    assert metrics["compression_ratio"] > 1  # fewer layers, 4-bit weights, against the fp16 teacher
    cache = built[0]
    stamp = (cache / "index.json").stat().st_mtime_ns
    assert len(list(cache.glob("*.npz"))) == 8
    dq.run(cfg)
    assert built[1] == cache and (cache / "index.json").stat().st_mtime_ns == stamp  # reused, not rebuilt


@pytest.mark.slow  # trains tiny models for tens of steps: out of the everyday tier
def test_a_smaller_pretrained_student_is_distilled_through_a_projection(
        tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """student.source = a narrower Whisper with the teacher's tokenizer: hidden states meet through a trained map."""
    import json
    import shutil

    from transformers import WhisperConfig, WhisperForConditionalGeneration

    monkeypatch.setenv("SPEECH_SWEEPS_CACHE", str(tmp_path / "cache"))
    narrow = tmp_path / "narrow"
    config = json.loads((tiny_whisper_dir / "config.json").read_text())
    config.update(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64)
    torch.manual_seed(1)
    WhisperForConditionalGeneration(WhisperConfig(**{k: v for k, v in config.items() if k != "architectures"})).save_pretrained(narrow)
    for f in tiny_whisper_dir.iterdir():
        if f.suffix in (".json", ".txt") and f.name != "config.json":
            shutil.copy(f, narrow / f.name)
    cfg = _run_config(tiny_whisper_dir, student={"source": str(narrow)}, distill={"alpha": 0.5, "matching": "dynamic"})
    metrics = dq.run(cfg)
    assert metrics["student_decoder_layers"] == 1 and metrics["student_encoder_layers"] == 1
    assert math.isfinite(metrics["kd_loss"]) and metrics["kd_loss"] > 0 and math.isfinite(metrics["hidden_loss"])
    assert metrics["compression_ratio"] > 1


def test_a_section_given_in_part_keeps_the_methods_own_defaults_for_the_rest() -> None:
    """dq_whisper's optim defaults (lr 1e-4, batch 4) stay when a file sets only optim.max_steps."""
    cfg = dq.parse_config({"optim": {"max_steps": 64}})
    assert (cfg.optim.max_steps, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.warmup_steps) == (64, 1e-4, 4, 4)
    assert cfg.data.max_train_items == 128


def test_student_sweep_local_preset_plans_the_small_students(capsys: pytest.CaptureFixture[str]) -> None:
    """dq_whisper_student's local preset: whisper-base's encoder + 4 or 6 decoder layers, 4-bit QAT with a
    4-bit token embedding (the embedding is a third of whisper-base; at 8 bits no depth reaches 3x), the teacher as baseline."""
    from platform import sweep

    assert sweep.main(["dq_whisper_student", "--dry-run", "--preset", "local"]) == 0
    out = capsys.readouterr().out
    assert 'student.decoder_layers: {"type": "grid", "values": [4, 6]}' in out
    # The baseline line says "measured once" or "cached <date>" as this machine's cache has it (test_baselines).
    assert "trials    2, 1 at a time" in out and "baseline  the untuned model, " in out
    for line in ("teacher: whisper-base", "embed_bits: 4", "bits: 4", "alpha: 0.5", "max_steps: 64"):
        assert line in out, line


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_an_optimiser_step_moves_the_scale_by_the_same_fraction_at_every_bit_width(bits: int) -> None:
    """Adam's steps are about lr in size whatever the gradient; on the log-scale that is a relative change of
    about lr, where a scale learned directly moved by lr / s (45% of a typical 8-bit scale at lr 3e-4)."""
    torch.manual_seed(0)
    layer = fq.FakeQuantLinear(torch.nn.Linear(64, 32), bits, learn_scale=True)
    layer.weight.requires_grad_(False)
    before = layer.scale.detach().clone()
    opt = torch.optim.AdamW([layer.log_scale], lr=1e-3, weight_decay=0.0)
    layer(torch.randn(8, 64)).pow(2).sum().backward()
    opt.step()
    relative = (layer.scale.detach() / before - 1).abs()
    assert relative.max() <= 1.1e-3 and relative.median() > 5e-4


@pytest.mark.slow  # builds the espeak-multilingual corpus once (about 30 s) and trains a tiny student
def test_a_multilingual_distillation_run_reports_each_language(tiny_multilingual_dir: Path) -> None:
    cfg = _run_config(tiny_multilingual_dir, distill={"alpha": 0.5, "top_k": 8},
                      data={"source": "espeak-multilingual", "max_train_items": 8, "max_eval_items": 8})
    metrics = dq.run(cfg)
    assert math.isfinite(metrics["kd_loss"])  # the teacher's cached outputs line up with the language-led labels
    for lang in ("en", "de", "fr", "es"):
        assert math.isfinite(metrics[f"wer_{lang}"]) and math.isfinite(metrics[f"cer_{lang}"]), lang

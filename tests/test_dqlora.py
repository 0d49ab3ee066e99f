"""DQLoRA: λ = 0 is plain CTC, KD falls in training, time alignment, the teacher cache, and a real run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CONTRACT_METRICS
from trainables import dqlora
from trainables.blocks.config import ConfigError
from trainables.blocks.data import load_speech
from trainables.blocks.tasks import CTC
from trainables.dqlora import (
    aligned_lengths,
    batch_loss,
    build_student,
    kd_distance,
    noisy_utterances,
    parse_config,
    run,
    teacher_states,
    whisper_frames,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smoke() -> list[dict]:
    return load_speech("espeak-smoke", "train", max_items=12)


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(dqlora, "cache_root", lambda: tmp_path)
    return tmp_path


def _cfg(student: Path, teacher: Path, **kw: object) -> dqlora.DQLoRAConfig:
    base = {"student": str(student), "precision": {"bits": 32}, "lora": {"r": 4, "dropout": 0.0},
            "kd": {"teacher": str(teacher), "lambda_": 1.0}, "data": {"source": "espeak-smoke"}}
    return parse_config({**base, **kw})


def test_lambda_zero_is_exactly_plain_ctc(tiny_wav2vec2_dir: Path, smoke: list[dict]) -> None:
    """The wav2vec2 student's λ = 0 loss equals qlora's CTC loss bit for bit, and the teacher is never read."""
    cfg = parse_config({"student": str(tiny_wav2vec2_dir), "precision": {"bits": 32}, "kd": {"lambda_": 0.0}})
    model, task, _ = build_student(cfg, str(tiny_wav2vec2_dir), CPU, 0.0)
    noisy = noisy_utterances(smoke[:4], cfg.noise, seed=0)
    plain = CTC(str(tiny_wav2vec2_dir))
    model.train()

    class Untouchable(dict):
        def __getitem__(self, key: str) -> np.ndarray:
            raise AssertionError("the teacher was read with λ = 0")

    torch.manual_seed(3)
    ours, parts = batch_loss(task, model, noisy, CPU, torch.float32, 0.0, None, Untouchable())
    torch.manual_seed(3)
    reference = plain.loss(model, noisy, CPU, torch.float32)
    assert torch.equal(ours, reference), (ours, reference)
    assert "kd_loss" not in parts


def test_lambda_zero_whisper_student_is_its_ctc_loss(tiny_whisper_dir: Path, smoke: list[dict]) -> None:
    cfg = _cfg(tiny_whisper_dir, tiny_whisper_dir)
    model, task, _ = build_student(cfg, str(tiny_whisper_dir), CPU, 4.0)
    model.eval()
    loss, _ = batch_loss(task, model, smoke[:3], CPU, torch.float32, 0.0)
    assert torch.equal(loss, task.forward(model, smoke[:3], CPU, torch.float32, want_hidden=False).ctc)


def test_time_alignment_crops_to_the_shorter() -> None:
    # wav2vec2: floor((n - 400) / 320) + 1 frames; Whisper: ceil(n / 320): off by one for most lengths.
    n = [16000, 16321, 8000]
    teacher = [whisper_frames(x, 30.0) for x in n]
    assert teacher == [50, 52, 25]
    student = [(x - 400) // 320 + 1 for x in n]
    assert student == [49, 50, 24]
    lengths = aligned_lengths(student, teacher)
    assert lengths.tolist() == [49, 50, 24]
    assert aligned_lengths([10, 5], [7, 9]).tolist() == [7, 5]
    assert whisper_frames(16000 * 40, 30.0) == 1500  # capped at the window
    # Frames past each utterance's aligned length never count, whichever side is longer.
    s = torch.zeros(2, 6, 3)
    t = torch.zeros(2, 4, 3)
    s[0, 3:] = 100.0  # beyond the aligned length 3 of utterance 0
    s[1, 2] = 2.0  # inside utterance 1 (aligned length 4): counted
    mse = kd_distance(s, t, torch.tensor([3, 4]), "mse")
    assert mse.item() == pytest.approx((3 * 4.0 / 3) / 7)
    assert kd_distance(s + 1, t + 1, torch.tensor([3, 4]), "cosine").item() >= 0


def test_teacher_cache_is_built_once(tiny_whisper_dir: Path, smoke: list[dict], tmp_cache: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = dqlora._encode_teacher

    def counting(*args: object, **kw: object) -> None:
        calls.append(1)
        real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dqlora, "_encode_teacher", counting)
    kw = {"split": "train", "max_items": 12, "window_s": 30.0, "dev": CPU}
    first = teacher_states(str(tiny_whisper_dir), "espeak-smoke", smoke, **kw)
    second = teacher_states(str(tiny_whisper_dir), "espeak-smoke", smoke, **kw)
    assert len(calls) == 1
    assert set(first) == {u["id"] for u in smoke}
    for u in smoke:
        states = second[u["id"]]
        assert states.dtype == np.float16 and states.shape == (whisper_frames(len(u["audio"]), 30.0), 64)  # the tiny teacher is 64 wide
        assert np.array_equal(states, first[u["id"]])
    teacher_states(str(tiny_whisper_dir), "espeak-smoke", smoke, **{**kw, "window_s": 10.0})
    assert len(calls) == 2  # another window is another key


@pytest.mark.slow  # trains tiny models for tens of steps: out of the everyday tier
def test_kd_loss_falls_in_training(tiny_whisper_dir: Path, smoke: list[dict], tmp_cache: Path) -> None:
    cfg = _cfg(tiny_whisper_dir, tiny_whisper_dir)
    torch.manual_seed(0)
    model, task, _ = build_student(cfg, str(tiny_whisper_dir), CPU, 4.0)
    teacher = teacher_states(str(tiny_whisper_dir), "espeak-smoke", smoke, split="train", max_items=12,
                             window_s=30.0, dev=CPU)
    noisy = noisy_utterances(smoke, cfg.noise, seed=0)
    projection = torch.nn.Linear(64, 64)
    params = [p for p in model.parameters() if p.requires_grad] + list(projection.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    kd = []
    for step in range(15):
        batch = [noisy[(4 * step + j) % len(noisy)] for j in range(4)]
        loss, parts = batch_loss(task, model, batch, CPU, torch.float32, 1.0, projection, teacher, "mse")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        kd.append(parts["kd_loss"])
    assert np.mean(kd[-3:]) < 0.7 * np.mean(kd[:3]), kd
    assert kd[-1] < kd[0]


def test_noise_is_deterministic_and_drawn_per_utterance(smoke: list[dict]) -> None:
    cfg = parse_config({"noise": {"kind": "pink", "snr_range": [0.0, 20.0]}}).noise
    a, b = noisy_utterances(smoke[:4], cfg, 7), noisy_utterances(smoke[:4], cfg, 7)
    assert all(np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, b, strict=True))
    snrs = [cfg.snr_for(7, i) for i in range(4)]
    assert len(set(snrs)) == 4 and all(0 <= s <= 20 for s in snrs)
    for u, n, snr in zip(smoke[:4], a, snrs, strict=True):
        noise = n["audio"] - u["audio"]
        measured = 10 * math.log10(np.mean(u["audio"].astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=0.05)


BAD = [
    ({"noise": {"kind": "brown"}}, "noise.kind"),
    ({"noise": {"snr_db": 99}}, "noise.snr_db"),
    ({"noise": {"snr_range": [20, 0]}}, "noise.snr_range"),
    ({"noise": {"kind": "folder"}}, "noise.noise_dir"),
    ({"kd": {"lambda_": -0.1}}, "kd.lambda_"),
    ({"kd": {"distance": "kl"}}, "kd.distance"),
    ({"kd": {"teacher": "openai/whisper-small"}}, "kd.teacher"),
    ({"student": "facebook/wav2vec2-base-960h"}, "student"),
    ({"lora": {"r": 0}}, "lora.r"),
]


@pytest.mark.parametrize(("override", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_config_names_the_field(override: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(override)
    assert str(info.value).startswith(field + ":") and "\n" not in str(info.value), str(info.value)


def test_real_run_reports_the_contract(tiny_whisper_dir: Path, tmp_cache: Path) -> None:
    metrics = run(_cfg(tiny_whisper_dir, tiny_whisper_dir, optim={"max_steps": 3, "warmup_steps": 1, "batch_size": 4},
                       data={"source": "espeak-smoke", "max_train_items": 8, "max_val_items": 2, "max_eval_items": 4},
                       noise={"kind": "white", "snr_range": [0.0, 20.0]}))
    for name in [*CONTRACT_METRICS, "wer_clean", "wer_noisy", "kd_loss", "ctc_loss", "loss"]:
        assert name in metrics and math.isfinite(metrics[name]), name
    assert metrics["wer"] == metrics["wer_noisy"]
    assert metrics["kd_loss"] > 0 and metrics["trainable_params"] < metrics["total_params"]


def test_wav2vec2_student_distils_with_aligned_lengths(tiny_wav2vec2_dir: Path, tiny_whisper_dir: Path,
                                                       smoke: list[dict], tmp_cache: Path) -> None:
    """The wav2vec2 student's frames (one fewer than Whisper's for most lengths) align with the teacher's."""
    with pytest.raises(ConfigError, match=r"^student: frames every 80 samples"):
        build_student(_cfg(tiny_wav2vec2_dir, tiny_whisper_dir), str(tiny_wav2vec2_dir), CPU, 0.0)
    student = tmp_cache / "w2v2-50hz"  # the same tiny model with wav2vec2's 320-sample frame stride
    shutil.copytree(tiny_wav2vec2_dir, student)
    config = json.loads((student / "config.json").read_text())
    (student / "config.json").write_text(json.dumps({**config, "conv_stride": [5, 8, 8]}))
    model, task, _ = build_student(_cfg(student, tiny_whisper_dir), str(student), CPU, 0.0)
    teacher = teacher_states(str(tiny_whisper_dir), "espeak-smoke", smoke, split="train", max_items=12,
                             window_s=30.0, dev=CPU)
    out = task.forward(model, smoke[:4], CPU, torch.float32, want_hidden=True)
    assert out.lengths.tolist() == [(((len(u["audio"]) - 10) // 5 + 1 - 4) // 8 + 1 - 4) // 8 + 1 for u in smoke[:4]]
    assert (torch.tensor([teacher[u["id"]].shape[0] for u in smoke[:4]]) - out.lengths).abs().max() <= 1
    loss, parts = batch_loss(task, model, smoke[:4], CPU, torch.float32, 1.0, torch.nn.Linear(32, 64), teacher, "cosine")
    assert math.isfinite(parts["kd_loss"]) and parts["kd_loss"] > 0
    assert loss.item() == pytest.approx(parts["ctc_loss"] + parts["kd_loss"], rel=1e-5)


def test_a_noisy_copy_never_reuses_the_clean_features(smoke: list[dict]) -> None:
    """Noisy copies keep the clean utterance's id; the feature cache must still tell them apart."""
    from transformers import WhisperFeatureExtractor

    from trainables.blocks.batching import WhisperFeatures

    feats = WhisperFeatures(WhisperFeatureExtractor(), 5.0)
    noisy = noisy_utterances(smoke[:2], dqlora.NoiseConfig(snr_db=0.0), seed=0)
    assert [u["id"] for u in noisy] == [u["id"] for u in smoke[:2]]
    clean, _ = feats.batch(smoke[:2])
    heard, _ = feats.batch(noisy)
    again, _ = feats.batch(smoke[:2])
    assert (clean - heard).abs().mean() > 0.1
    assert torch.equal(clean, again)

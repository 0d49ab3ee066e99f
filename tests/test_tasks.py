"""Transcription tasks (trainables/blocks/tasks.py): one Whisper decoder and one CTC task serve every method,
a multilingual Whisper is told its language, an English-only one is not."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

from trainables.blocks.tasks import CTC, TrainingTask, Transcriber, WhisperSeq2Seq

CPU = torch.device("cpu")


def test_every_method_decodes_whisper_with_the_one_shared_decoder() -> None:
    """No method keeps a Whisper decoder of its own: qlora, dq_whisper and whistle all build WhisperSeq2Seq."""
    root = Path(__file__).resolve().parents[1] / "trainables"
    for name in ("qlora", "dq_whisper", "whistle"):
        source = (root / f"{name}.py").read_text()
        assert "WhisperSeq2Seq(" in source, name
        assert ".generate(" not in source, f"{name} decodes Whisper itself"
        module = importlib.import_module(f"trainables.{name}")
        assert module.WhisperSeq2Seq is WhisperSeq2Seq


def test_a_multilingual_model_is_told_its_language_and_an_english_only_one_is_not(tiny_whisper_dir: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    german = WhisperSeq2Seq(str(tiny_whisper_dir), 2.0, 8, language="de")
    assert not getattr(model.generation_config, "is_multilingual", False)
    assert german.generate_kwargs(model) == {}
    model.generation_config.is_multilingual = True
    assert german.generate_kwargs(model) == {"language": "de", "task": "transcribe"}


def test_the_tasks_satisfy_the_protocols(tiny_whisper_dir: Path, tiny_wav2vec2_dir: Path) -> None:
    whisper = WhisperSeq2Seq(str(tiny_whisper_dir), 2.0, 8)
    ctc = CTC(str(tiny_wav2vec2_dir))
    for task in (whisper, ctc):
        assert isinstance(task, Transcriber) and isinstance(task, TrainingTask)


def test_whisper_loss_and_decoding_run_on_a_tiny_model(tiny_whisper_dir: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir, dtype=torch.float32)
    task = WhisperSeq2Seq(str(tiny_whisper_dir), 30.0, 6)
    utts = [{"id": f"u{i}", "audio": np.random.default_rng(i).normal(0, 0.1, 16000).astype(np.float32),
             "text": "hello there"} for i in range(2)]
    loss = task.loss(model, utts, CPU, torch.float32)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    texts = task.transcribe(model.eval(), utts, CPU, torch.float32)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_window_widened_from_a_wider_models_table_gets_sinusoids_of_its_own_width() -> None:
    """A dq_whisper student narrower than its teacher decodes a natural-voice set at a longer window: its new
    positions are Whisper's sinusoids at the student's width, its own rows kept."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder, sinusoids

    from trainables.blocks.models import set_whisper_window

    config = WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, max_source_positions=100)
    encoder = WhisperEncoder(config)
    own = encoder.embed_positions.weight.detach().clone()
    set_whisper_window(encoder, config, 250, sinusoids(1500, 64))
    widened = encoder.embed_positions.weight.detach()
    assert widened.shape == (250, 32) and config.max_source_positions == 250
    assert torch.equal(widened[:100], own) and torch.allclose(widened[100:], sinusoids(250, 32)[100:])

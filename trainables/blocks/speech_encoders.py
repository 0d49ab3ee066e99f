"""Frozen speech encoders and their outputs, computed once per data set and kept on disk.

Methods that leave an encoder frozen (WhisTLE's targets, the LLM adaptor's inputs) never need its forward
pass more than once per utterance: `encoder_states` runs it once over a set of audio, stores the states as a
float16 memory map keyed by the encoder, the window and what the audio is, and every later trial, epoch and
worker reads them back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables import assets
from trainables.assets.cache import build_once, cache_root, input_key
from trainables.blocks import models
from trainables.blocks.config import ConfigError
from trainables.blocks.models import PrecisionConfig
from trainables.loaders.llm_adaptor import SpeechEncoder

ENCODER_TYPES = {"whisper": "whisper", "wav2vec2": "ctc", "hubert": "ctc", "wavlm": "ctc", "data2vec-audio": "ctc"}


def check_encoder_source(name: str, field: str) -> None:
    """The encoder must be a Whisper or wav2vec2-style model (checked when its config is on disk already)."""
    assets.check_model_source(name, field)
    config = assets.model_config_if_local(name)
    if config is not None and config.get("model_type") not in ENCODER_TYPES:
        raise ConfigError(f"{field}: model_type {config.get('model_type')!r} is not a speech encoder this loader builds "
                          f"({', '.join(ENCODER_TYPES)})")


def load_speech_encoder(source: str, window_s: float, dev: torch.device) -> SpeechEncoder:
    """The frozen encoder of a resolved model source (fp32, eval mode) over a `window_s` window."""
    from transformers import AutoFeatureExtractor, AutoModel

    model_type = assets.load_model_config(source).get("model_type")
    if model_type not in ENCODER_TYPES:
        raise ConfigError(f"encoder: model_type {model_type!r} is not a speech encoder ({', '.join(ENCODER_TYPES)})")
    fe = AutoFeatureExtractor.from_pretrained(source)
    if model_type == "whisper":
        model = models.load_base_model(source, "whisper", PrecisionConfig(bits=32), dev)
        models.shrink_whisper_encoder(model, models.window_positions(window_s))
        encoder = model.get_encoder()
    else:
        encoder = AutoModel.from_pretrained(source, dtype=torch.float32).to(dev)
        encoder.requires_grad_(False)
    return SpeechEncoder(ENCODER_TYPES[model_type], encoder.eval(), fe, window_s)


def encoder_states(source: str, window_s: float, audios: Callable[[], list[np.ndarray]], key: dict[str, Any],
                   dev: torch.device, what: str, batch_size: int = 16, encoder: SpeechEncoder | None = None) -> np.ndarray:
    """The frozen encoder's (n, frames, hidden) float16 states of the audio `audios()` makes, over the whole
    window, computed once and kept on disk under `key` (what the audio is; the encoder and window are added);
    read as a memory map. `audios` is only called when the cache is built (e.g. TTS audio is synthesised then).
    Each build is one line in the cache's build log (`trainables.assets.cache.builds("encoder-states/")`).
    `encoder`: the same encoder, already loaded by the caller, so a build does not load it again."""
    from tqdm import tqdm

    inputs = {"model": source, "window_s": window_s, **key, "version": 1}
    target = cache_root() / "encoder-states" / f"{what}-{input_key(inputs)}"

    def build(out: Path) -> None:
        audios_ = audios()
        enc = encoder or load_speech_encoder(source, window_s, dev)
        states = np.lib.format.open_memmap(out / "states.npy", mode="w+", dtype=np.float16,
                                           shape=(len(audios_), enc.frames, enc.hidden_size))
        for start in tqdm(range(0, len(audios_), batch_size), desc=f"encoder states: {what} (once)", disable=None):
            batch = enc(audios_[start : start + batch_size])
            states[start : start + len(batch)] = batch.cpu().numpy().astype(np.float16)
        states.flush()

    build_once(target, build, inputs)
    return np.load(target / "states.npy", mmap_mode="r")


def rows(states: np.ndarray, idx: list[int] | np.ndarray, dev: torch.device) -> torch.Tensor:
    """Float32 tensor of the cached states of utterances `idx`, on `dev`."""
    return torch.from_numpy(np.asarray(states[np.asarray(idx)], dtype=np.float32)).to(dev)

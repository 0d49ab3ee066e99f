"""Load a Whisper-encoder CTC student exported by speech-sweeps (method dqlora, offline student).

This is not a transformers model: transformers has no CTC head for Whisper's encoder. The folder holds
`model.safetensors` (the encoder, its LoRA adapters merged in, and a linear `head` over the characters of
`vocab.json`, index 0 being the CTC blank; fp16), the Whisper `config.json` (its `max_source_positions`
is the trained window: 50 per second) and `preprocessor_config.json` (the log-mel feature extractor, padding
to that window).

    from load_ctc import load, transcribe
    model, features, vocab = load("exported-folder")
    texts = transcribe(model, features, vocab, [audio_16khz_float32, ...])

Audio longer than the window is cut off; cut it into windows first. This file imports only torch,
safetensors and transformers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch


class WhisperEncoderCTC(torch.nn.Module):
    """Whisper's encoder and a linear character head; `forward` gives (batch, frames, characters) logits."""

    def __init__(self, config: Any, n_chars: int) -> None:
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__()
        self.encoder = WhisperEncoder(config)
        self.head = torch.nn.Linear(config.d_model, n_chars)

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_features=input_features).last_hidden_state)


def load(folder: str | Path, device: str = "cpu") -> tuple[WhisperEncoderCTC, Any, list[str]]:
    """(model in float32, feature extractor, vocabulary) of an exported folder."""
    from safetensors.torch import load_file
    from transformers import WhisperConfig, WhisperFeatureExtractor

    folder = Path(folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    model = WhisperEncoderCTC(WhisperConfig.from_pretrained(folder), len(vocab))
    state = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), WhisperFeatureExtractor.from_pretrained(folder), vocab


def greedy(ids: list[int], vocab: list[str]) -> str:
    """Best-path CTC decoding: merge repeats, drop blanks (index 0)."""
    out, previous = [], None
    for i in ids:
        if i != previous and i != 0:
            out.append(vocab[i])
        previous = i
    return " ".join("".join(out).split())


@torch.no_grad()
def transcribe(model: WhisperEncoderCTC, features: Any, vocab: list[str], audio: list[Any]) -> list[str]:
    """Greedy transcripts of 16 kHz mono float32 arrays (each cut to the window)."""
    device = next(model.parameters()).device
    x = features(audio, sampling_rate=16000, padding="max_length", truncation=True, return_tensors="pt").input_features
    ids = model(x.to(device)).argmax(-1).cpu()
    frames = [min(math.ceil(len(a) / 320), ids.shape[1]) for a in audio]  # 50 frames a second
    return [greedy(ids[i, :n].tolist(), vocab) for i, n in enumerate(frames)]

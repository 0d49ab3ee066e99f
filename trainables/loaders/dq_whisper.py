"""Load a quantised Whisper student exported by speech-sweeps (method dq_whisper).

The folder holds `model.safetensors` with the student's weights at their trained precision: a b-bit linear
layer or token embedding is stored as `NAME.qweight` (int8 codes at 8 bits; below that, codes offset by
2^(b-1) - 1 and packed b bits each, least significant bit first) and `NAME.scale` (fp16, one per output
row), with its bit width and shape in the file's metadata; an output projection tied to the embedding is
only a `tied_to` entry there; everything else is fp16. Beside it: the Whisper `config.json`,
`generation_config.json`, and the tokenizer and feature extractor files.

    from load_quantised import load
    model, processor = load("exported-folder")          # weights dequantised to float32 in memory
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    text = processor.batch_decode(model.generate(features), skip_special_tokens=True)

or, with transformers' pipeline:
    pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
             feature_extractor=processor.feature_extractor)

This file imports only numpy, torch, safetensors and transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """`count` unsigned integers of `bits` bits each from a uint8 stream (least significant bit first)."""
    planes = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    return (planes.astype(np.uint8) << np.arange(bits, dtype=np.uint8)).sum(axis=1).astype(np.uint8)


def dequantised_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a packed file as float32: a quantised weight is its integer codes times its row scales."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        names = set(fh.keys())
        quantised = {n for n, v in meta.items() if "bits" in json.loads(v)}
        for name in quantised:
            info = json.loads(meta[name])
            bits, shape = int(info["bits"]), info["shape"]
            data = fh.get_tensor(f"{name}.qweight")
            if bits == 8:
                codes = data.to(torch.float32)
            else:
                qmax = 2 ** (bits - 1) - 1
                raw = unpack_bits(data.numpy(), bits, int(np.prod(shape))).astype(np.int16) - qmax
                codes = torch.from_numpy(raw.astype(np.float32))
            scale = fh.get_tensor(f"{name}.scale").to(torch.float32)
            state[f"{name}.weight"] = codes.reshape(shape) * scale[:, None]
        for key in names:
            if not key.endswith((".qweight", ".scale")) or key.rsplit(".", 1)[0] not in quantised:
                state[key] = fh.get_tensor(key).to(torch.float32)
        for name, value in meta.items():
            tied = json.loads(value).get("tied_to")
            if tied:
                state[f"{name}.weight"] = state[f"{tied}.weight"]
    return state


def model_from_state(state: dict[str, torch.Tensor], config: Any) -> torch.nn.Module:
    """A WhisperForConditionalGeneration with `config` and the given weights (every one must fit)."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise ValueError(f"the weights do not fit the config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    return model.eval()


def load(folder: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """(model, processor) of an exported folder; the model's weights are dequantised to float32."""
    from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

    folder = Path(folder)
    model = model_from_state(dequantised_state_dict(folder / "model.safetensors"), WhisperConfig.from_pretrained(folder))
    model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.to(device), WhisperProcessor.from_pretrained(folder)

"""Audio as every other module sees it: mono float32 at one sample rate, read from WAV or FLAC files."""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
"""The rate every utterance, noise clip and model input is held at (Whisper's and wav2vec2's)."""
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac")
"""Sound files that local data folders and noise folders may hold (what soundfile reads without extra codecs)."""


def resample(audio: np.ndarray, from_sr: int, to_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling between two integer rates, as float32 (a copy-free pass-through when equal)."""
    if from_sr == to_sr:
        return np.asarray(audio, dtype=np.float32)
    g = math.gcd(int(from_sr), int(to_sr))
    return resample_poly(audio, int(to_sr) // g, int(from_sr) // g).astype(np.float32)


def to_mono(audio: np.ndarray, sr: int, to_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Average the channels (soundfile's frames x channels layout) and resample to `to_sr`, contiguous float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return np.ascontiguousarray(resample(audio, sr, to_sr), dtype=np.float32)


def decode_audio(source: str | Path | bytes, to_sr: int = SAMPLE_RATE) -> np.ndarray:
    """A sound file (path or encoded bytes) as mono float32 at `to_sr`, decoded with soundfile."""
    import soundfile as sf  # here, not at the top: models and the training step run where only torch is installed

    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    audio, sr = sf.read(handle, dtype="float32", always_2d=True)
    return to_mono(audio, sr, to_sr)


@lru_cache(maxsize=32)
def _read_cached(path: str, to_sr: int) -> np.ndarray:
    audio = decode_audio(path, to_sr)
    audio.setflags(write=False)
    return audio


def read_audio(path: Path, to_sr: int = SAMPLE_RATE) -> np.ndarray:
    """A sound file as mono float32 at `to_sr`, cached (the array is read-only): noise clips are read again and again."""
    return _read_cached(str(path), to_sr)

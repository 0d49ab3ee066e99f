"""Additive noise at a set signal-to-noise ratio: white, pink, babble, or a folder of noise files."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainables.blocks.audio import AUDIO_SUFFIXES, SAMPLE_RATE, read_audio

NOISE_KINDS: tuple[str, ...] = ("white", "pink", "babble", "folder")


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """`x` cropped or looped to exactly `n` samples."""
    if len(x) >= n:
        return x[:n]
    return np.tile(x, math.ceil(n / len(x)))[:n]


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`clean` plus `noise` scaled so that power(clean) / power(scaled noise) is exactly `snr_db`.

    The noise is cropped or looped to the length of `clean`. The mix is not rescaled afterwards
    (that would keep the SNR but change the speech level), so its peak can exceed 1 at low SNR.
    """
    clean = np.asarray(clean, dtype=np.float32)
    if clean.ndim != 1 or noise.ndim != 1:
        raise ValueError("mix_at_snr: clean and noise must be 1-D (mono) arrays")
    if len(clean) == 0:
        return clean.copy()
    if len(noise) == 0:
        raise ValueError("mix_at_snr: noise is empty")
    noise = _fit_length(np.asarray(noise, dtype=np.float64), len(clean))
    p_clean, p_noise = _power(clean), _power(noise)
    if p_noise == 0.0:
        raise ValueError("mix_at_snr: noise is silent, so no SNR can be reached")
    scale = math.sqrt(p_clean / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (clean + scale * noise).astype(np.float32)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(_power(x))
    return (x / rms if rms > 0 else x).astype(np.float32)


def _pink(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise shaped in the frequency domain to a 1/f power spectrum."""
    spectrum = rng.standard_normal(n_samples // 2 + 1) + 1j * rng.standard_normal(n_samples // 2 + 1)
    freqs = np.fft.rfftfreq(n_samples)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n=n_samples)


def _babble(n_samples: int, rng: np.random.Generator, pool: list[np.ndarray]) -> np.ndarray:
    """The sum of 3-6 talkers from `pool`, each looped to length and started at a random offset.

    Silent picks are skipped rather than filtered up front, so a large pool costs nothing extra.
    """
    k = int(rng.integers(3, 7))
    picks = rng.choice(len(pool), size=k, replace=len(pool) < k)
    out = np.zeros(n_samples, dtype=np.float64)
    used = 0
    for index in picks:
        talker = np.asarray(pool[int(index)], dtype=np.float32)
        if len(talker) == 0 or _power(talker) == 0.0:
            continue
        talker = _unit_rms(talker)
        gap = np.zeros(int(rng.integers(0, 4000)), dtype=np.float32)
        track = _fit_length(np.concatenate([talker, gap]), n_samples + len(talker) + len(gap))
        offset = int(rng.integers(0, len(talker) + len(gap)))
        out += track[offset : offset + n_samples]
        used += 1
    if not used:
        raise ValueError("babble_pool: the utterances picked for babble are all silent")
    return out


def noise_files(noise_dir: Path) -> list[Path]:
    """The .wav and .flac files under `noise_dir` (recursively), sorted; ValueError if there are none."""
    folder = Path(noise_dir).expanduser()
    if not folder.is_dir():
        raise ValueError(f"noise_dir: {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"noise_dir: {str(folder)!r} holds no .wav or .flac files")
    return files


def _from_folder(n_samples: int, rng: np.random.Generator, noise_dir: Path, sr: int) -> np.ndarray:
    files = noise_files(noise_dir)
    audio = read_audio(files[int(rng.integers(len(files)))], sr)
    if len(audio) == 0:
        raise ValueError(f"noise_dir: {str(noise_dir)!r} contains an empty sound file")
    if len(audio) <= n_samples:
        start = int(rng.integers(len(audio)))
        return _fit_length(np.roll(audio, -start), n_samples)
    start = int(rng.integers(0, len(audio) - n_samples + 1))
    return audio[start : start + n_samples]


def make_noise(
    kind: str,
    n_samples: int,
    rng: np.random.Generator,
    *,
    babble_pool: list[np.ndarray] | None = None,
    noise_dir: Path | None = None,
    sr: int = SAMPLE_RATE,
) -> np.ndarray:
    """`n_samples` of noise of `kind` (one of NOISE_KINDS) as float32, drawn from `rng`.

    "babble" sums utterances from `babble_pool`; "folder" crops (or loops) a random file from
    `noise_dir`. Levels are arbitrary: `mix_at_snr` sets the level.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind: {kind!r} is not one of {', '.join(NOISE_KINDS)}")
    if kind == "babble" and not babble_pool:
        raise ValueError("babble_pool: babble noise needs a non-empty pool of utterances")
    if kind == "folder" and noise_dir is None:
        raise ValueError("noise_dir: folder noise needs a folder of .wav or .flac files")
    if n_samples <= 0:
        return np.zeros(0, dtype=np.float32)
    if kind == "white":
        noise = rng.standard_normal(n_samples)
    elif kind == "pink":
        noise = _pink(n_samples, rng)
    elif kind == "babble":
        noise = _babble(n_samples, rng, babble_pool or [])
    else:
        noise = _from_folder(n_samples, rng, Path(noise_dir or "."), sr)
    return np.asarray(noise, dtype=np.float32)


def add_noise(
    clean: np.ndarray,
    kind: str,
    snr_db: float,
    seed: int | list[int],
    *,
    babble_pool: list[np.ndarray] | None = None,
    noise_dir: Path | None = None,
    sr: int = SAMPLE_RATE,
) -> np.ndarray:
    """`clean` with noise of `kind` at `snr_db`; the same seed gives the same result."""
    rng = np.random.default_rng(seed)
    noise = make_noise(kind, len(clean), rng, babble_pool=babble_pool, noise_dir=noise_dir, sr=sr)
    return mix_at_snr(clean, noise, snr_db)


def noisy_copies(utts: list[dict], kind: str, snr_db: float | Callable[[int], float], seed: int,
                 noise_dir: Path | None = None) -> list[dict]:
    """Copies of `utts` (same ids) with seeded noise; `snr_db` is one SNR or a function of the utterance's index.

    Babble for an utterance comes from the other utterances of the list.
    """
    audios = [u["audio"] for u in utts]
    out = []
    for i, utt in enumerate(utts):
        snr = snr_db(i) if callable(snr_db) else snr_db
        pool = audios[:i] + audios[i + 1:] if kind == "babble" else None
        out.append({**utt, "audio": add_noise(utt["audio"], kind, snr, [seed, i], babble_pool=pool, noise_dir=noise_dir)})
    return out


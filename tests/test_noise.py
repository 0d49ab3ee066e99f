"""Noise generation and mixing at a set SNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from trainables.blocks.noise import add_noise, make_noise, mix_at_snr


def _speechlike(n: int, seed: int) -> np.ndarray:
    """A harmonic tone under a slow envelope: a stand-in for speech in the pool and as `clean`."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16_000
    f0 = rng.uniform(90, 220)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (tone * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _snr_db(clean: np.ndarray, mixed: np.ndarray) -> float:
    residual = mixed.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(residual**2))


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 20.0])
def test_mix_hits_the_snr(kind: str, snr: float) -> None:
    clean = _speechlike(24_000, 0)
    pool = [_speechlike(8_000 + 1000 * i, i + 1) for i in range(5)]
    noisy = add_noise(clean, kind, snr, seed=1, babble_pool=pool)
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert abs(_snr_db(clean, noisy) - snr) < 0.1


def test_short_noise_is_looped() -> None:
    clean = _speechlike(16_000, 0)
    noise = np.random.default_rng(0).standard_normal(1000)
    mixed = mix_at_snr(clean, noise, 5.0)
    assert mixed.shape == clean.shape
    assert abs(_snr_db(clean, mixed) - 5.0) < 0.1


def _log_log_slope(x: np.ndarray, lo: float = 50.0, hi: float = 5000.0) -> float:
    freqs, power = welch(x, fs=16_000, nperseg=4096)
    band = (freqs >= lo) & (freqs <= hi)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


def test_pink_noise_falls_as_one_over_f() -> None:
    rng = np.random.default_rng(0)
    assert -1.15 < _log_log_slope(make_noise("pink", 2**17, rng)) < -0.85
    assert abs(_log_log_slope(make_noise("white", 2**17, rng))) < 0.1


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_noise_is_deterministic_by_seed(kind: str) -> None:
    clean = _speechlike(16_000, 0)
    pool = [_speechlike(6_000, i) for i in range(1, 8)]
    a = add_noise(clean, kind, 5.0, seed=7, babble_pool=pool)
    assert np.array_equal(a, add_noise(clean, kind, 5.0, seed=7, babble_pool=pool))
    assert not np.array_equal(a, add_noise(clean, kind, 5.0, seed=8, babble_pool=pool))


def test_folder_noise_crops_loops_and_resamples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "fan.wav", rng.standard_normal(1600).astype(np.float32) * 0.1, 8_000)
    sub = tmp_path / "street"
    sub.mkdir()
    sf.write(sub / "cars.flac", rng.standard_normal((44_100, 2)).astype(np.float32) * 0.1, 22_050)
    (tmp_path / "notes.txt").write_text("not audio")
    for seed in range(6):
        noise = make_noise("folder", 40_000, np.random.default_rng(seed), noise_dir=tmp_path)
        assert noise.shape == (40_000,) and noise.dtype == np.float32 and np.abs(noise).max() > 0
    clean = _speechlike(40_000, 0)
    a = add_noise(clean, "folder", 3.0, seed=2, noise_dir=tmp_path)
    assert np.array_equal(a, add_noise(clean, "folder", 3.0, seed=2, noise_dir=tmp_path))
    assert abs(_snr_db(clean, a) - 3.0) < 0.1


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="noise kind: 'brown'"):
        make_noise("brown", 100, rng)
    with pytest.raises(ValueError, match="noise_dir") as err:
        make_noise("folder", 100, rng, noise_dir=tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="noise_dir"):
        make_noise("folder", 100, rng, noise_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="noise_dir"):
        make_noise("folder", 100, rng)
    with pytest.raises(ValueError, match="babble_pool"):
        make_noise("babble", 100, rng, babble_pool=[])

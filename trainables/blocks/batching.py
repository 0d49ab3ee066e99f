"""Turning utterances into model batches: features, SpecAugment, dynamic padding, length buckets."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainables.blocks.audio import SAMPLE_RATE
from trainables.blocks.config import require


@dataclass
class SpecAugmentConfig:
    """Time and frequency masking of log-mel features during training (Park et al., 2019)."""

    enabled: bool = True
    """Apply masks to training batches (never to evaluation)."""
    freq_masks: int = 2
    """Number of frequency masks per utterance."""
    freq_width: int = 12
    """Largest frequency-mask width, in mel bins."""
    time_masks: int = 2
    """Number of time masks per utterance."""
    time_width: float = 0.05
    """Largest time-mask width, as a fraction of the utterance's frames."""

    def check(self) -> None:
        require(self.freq_masks >= 0, "freq_masks", "must be >= 0")
        require(self.time_masks >= 0, "time_masks", "must be >= 0")
        require(self.freq_width >= 0, "freq_width", "must be >= 0")
        require(0 <= self.time_width <= 0.5, "time_width", f"must be in [0, 0.5], got {self.time_width}")


def spec_augment(features: torch.Tensor, frames: Sequence[int], cfg: SpecAugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Mask bands of (batch, mels, time) features in place with each utterance's mean value.

    Time masks fall inside each utterance's own `frames`, not on its padding.
    """
    if not cfg.enabled:
        return features
    n_mels = features.shape[1]
    for i, n_frames in enumerate(frames):
        fill = features[i, :, :n_frames].mean()
        for _ in range(cfg.freq_masks):
            width = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=gen))
            start = int(torch.randint(0, max(1, n_mels - width), (1,), generator=gen))
            features[i, start : start + width, :] = fill
        max_t = int(cfg.time_width * n_frames)
        for _ in range(cfg.time_masks):
            width = int(torch.randint(0, max_t + 1, (1,), generator=gen))
            start = int(torch.randint(0, max(1, n_frames - width), (1,), generator=gen))
            features[i, :, start : start + width] = fill
    return features


def length_buckets(lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                   world: int = 1, drop_last: bool = False) -> list[list[int]]:
    """Batches of indices of similar length, for this worker.

    Indices are sorted by length (with a seeded jitter so equal lengths mix), cut into batches,
    and the batch order is shuffled; each worker takes every `world`-th batch. With `drop_last`
    every worker gets the same number of full batches, which data-parallel training needs.
    """
    rng = np.random.default_rng(seed)
    order = np.argsort(np.asarray(lengths) + rng.random(len(lengths)) if shuffle else np.asarray(lengths), kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle:
        rng.shuffle(batches)
    if drop_last:
        per_worker = len(batches) // world
        batches = batches[: per_worker * world]
    return batches[rank::world]


class BatchStream:
    """An endless stream of training batches, re-shuffled each epoch, that knows how far it has gone.

    `consumed` is the data position a mid-training checkpoint stores; `skip(n)` brings a fresh stream
    (same lengths, batch size, seed and worker) back to it when a trial resumes.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, rank: int, world: int) -> None:
        self.lengths, self.batch_size, self.seed, self.rank, self.world = list(lengths), batch_size, seed, rank, world
        self.consumed = 0
        self._epoch, self._batches, self._next = -1, [], 0

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> list[int]:
        if self._next >= len(self._batches):
            self._epoch += 1
            self._batches = length_buckets(self.lengths, self.batch_size, shuffle=True, seed=self.seed + self._epoch,
                                           rank=self.rank, world=self.world, drop_last=True)
            self._next = 0
            if not self._batches:
                raise ValueError(f"training set too small: fewer than {self.batch_size * self.world} utterances "
                                 "for one batch per worker")
        self._next += 1
        self.consumed += 1
        return self._batches[self._next - 1]

    def skip(self, n: int) -> None:
        """Advance past `n` batches (index lists only: no audio is read)."""
        for _ in range(n):
            next(self)


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, rank: int, world: int) -> BatchStream:
    """An endless stream of training batches, re-shuffled each epoch (see BatchStream)."""
    return BatchStream(lengths, batch_size, seed, rank, world)


@contextlib.contextmanager
def no_autocast() -> Iterator[None]:
    """Full precision inside a method's autocast region, on every device type.

    Features are data, not model compute: the feature extractors turn torch results into numpy arrays,
    which have no bfloat16, so under CPU bf16 autocast they failed with "Got unsupported ScalarType
    BFloat16"; and half-precision log-mels would change what the model sees. Every method builds its
    batches inside `Stepper.step`'s autocast context, so the batching helpers switch it off here.
    """
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield


class WhisperFeatures:
    """Log-mel features for Whisper, padded to a fixed encoder window, computed once per audio.

    The cache is keyed by the utterance id AND a digest of its samples: a noisy copy of an utterance
    keeps the clean one's id (hypotheses and teacher states pair up by id) but must not get its features.
    """

    def __init__(self, feature_extractor: Any, window_s: float) -> None:
        self.fe = feature_extractor
        self.n_samples = int(round(window_s * SAMPLE_RATE))
        self.cache: dict[tuple[str, bytes], np.ndarray] = {}

    def frames(self, audio: np.ndarray) -> int:
        return min(math.ceil(len(audio) / self.fe.hop_length), self.n_samples // self.fe.hop_length)

    def one(self, utt: dict) -> np.ndarray:
        audio = np.ascontiguousarray(utt["audio"])
        key = (utt["id"], hashlib.blake2b(audio.view(np.uint8), digest_size=16).digest())
        if key not in self.cache:
            with no_autocast():
                out = self.fe(
                    utt["audio"][: self.n_samples], sampling_rate=SAMPLE_RATE, padding="max_length",
                    max_length=self.n_samples, truncation=True, return_tensors="np",
                )
            self.cache[key] = out["input_features"][0].astype(np.float32)
        return self.cache[key]

    def batch(self, utts: Sequence[dict]) -> tuple[torch.Tensor, list[int]]:
        feats = torch.from_numpy(np.stack([self.one(u) for u in utts]))
        return feats, [self.frames(u["audio"]) for u in utts]


def whisper_labels(tokenizer: Any, texts: Sequence[str], decoder_start_token_id: int, max_len: int,
                   languages: Sequence[str] | None = None) -> torch.Tensor:
    """Token ids of the transcripts (prefix tokens and end-of-text included), padded with -100.

    `languages` (a multilingual tokenizer only): each transcript's prefix names its language and the transcribe
    task, as the decoder is told when it transcribes. The model builds its decoder inputs by shifting these right
    behind the start token, so a leading start token is dropped here.
    """
    rows = []
    current = None
    for i, text in enumerate(texts):
        if languages is not None and languages[i] != current:
            current = languages[i]
            tokenizer.set_prefix_tokens(language=current, task="transcribe")
        ids = tokenizer(" " + text.strip()).input_ids
        if ids and ids[0] == decoder_start_token_id:
            ids = ids[1:]
        rows.append(ids[:max_len])
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def ctc_batch(processor: Any, utts: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Padded, normalised waveforms and character labels (padding -100) for a CTC model."""
    audio = [u["audio"] for u in utts]
    with no_autocast():
        inputs = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt",
                                             return_attention_mask=True)
    labels = [processor.tokenizer(u["text"].upper() if processor_uppercase(processor) else u["text"]).input_ids
              for u in utts]
    width = max(1, max(len(x) for x in labels))
    lab = torch.full((len(labels), width), -100, dtype=torch.long)
    for i, row in enumerate(labels):
        lab[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return {"input_values": inputs["input_values"], "attention_mask": inputs["attention_mask"], "labels": lab}


def processor_uppercase(processor: Any) -> bool:
    """wav2vec2 English checkpoints use an upper-case character vocabulary."""
    vocab = processor.tokenizer.get_vocab()
    return "E" in vocab and "e" not in vocab

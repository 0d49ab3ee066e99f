"""Evaluation: its config, and decoding a set with a `tasks.Transcriber` on every worker and scoring it (corpus
WER/CER, per-utterance errors, latency)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from trainables.blocks import progress
from trainables.blocks.audio import SAMPLE_RATE
from trainables.blocks.batching import length_buckets
from trainables.blocks.config import require
from trainables.blocks.distributed import all_gather_objects, world
from trainables.blocks.metrics import error_rates, utterance_errors
from trainables.blocks.tasks import Transcriber
from trainables.blocks.training import unwrap


@dataclass
class EvalConfig:
    """How a trial is evaluated."""

    batch_size: int = 16
    """Utterances per decoding batch."""
    max_new_tokens: int = 96
    """Longest transcript a sequence-to-sequence decoder writes, in tokens (and the longest it is trained on)."""
    every: int = 0
    """Evaluate on the validation split every this many steps (0 = only at the end)."""

    def check(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be at least 1, got {self.max_new_tokens}")
        require(self.every >= 0, "every", f"must be >= 0 (0 = only at the end), got {self.every}")


Evaluation = dict[str, Any]
"""An evaluated set: `wer`, `cer`, `latency_ms_per_utt`, `rtf`, and `rows` (per utterance: id, reference,
hypothesis, word errors, reference words)."""


def evaluate(task: Transcriber, model: torch.nn.Module, utts: list[dict], batch_size: int, dev: torch.device,
             dtype: torch.dtype) -> Evaluation:
    """Decode this worker's share of `utts`, gather all workers' results, and score them."""
    rank, size = world()
    mine = utts[rank::size]
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    rows, seconds, audio_s = [], 0.0, 0.0
    batches = length_buckets([len(u["audio"]) for u in mine], batch_size, shuffle=False, seed=0)
    for batch_idx in progress.tracked(batches, f"decoding {len(utts)} utterances"):
        batch = [mine[i] for i in batch_idx]
        t0 = time.perf_counter()
        hyps = task.transcribe(inner, batch, dev, dtype)
        seconds += time.perf_counter() - t0
        audio_s += sum(len(u["audio"]) for u in batch) / SAMPLE_RATE
        rows += [{"id": u["id"], "reference": u["text"], "hypothesis": h, **({"language": u["language"]} if
                  u.get("language") else {})} for u, h in zip(batch, hyps, strict=True)]
    inner.train(was_training)
    gathered = all_gather_objects((rows, seconds, audio_s))
    rows = sorted((r for g in gathered for r in g[0]), key=lambda r: r["id"])
    total_s, total_audio = sum(g[1] for g in gathered), sum(g[2] for g in gathered)
    langs = [r.get("language") or "en" for r in rows]
    for r, lang in zip(rows, langs, strict=True):
        r["errors"], r["ref_words"] = utterance_errors(r["reference"], r["hypothesis"], lang)
    rates = error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows], langs)
    return {**rates, "rows": rows, "latency_ms_per_utt": 1000 * total_s / max(1, len(rows)),
            "rtf": total_s / max(total_audio, 1e-9)}


WHISPER_WINDOW_S = 30.0
"""Whisper's own encoder window: the longest a task's window is widened to."""


NATURAL_WINDOW_S = 10.0
"""The shortest window natural-voice speech is decoded at. Whisper cut to a window a few seconds long repeats
itself on natural-sounding speech: the released tiny.en on the natural-voice clinical test set (clips 1.8-5.8 s)
scores WER 0.978 at a 6 s window (22 of 100 hypotheses say the sentence again and again), 0.443 at 7 s, 0.321 at
8 s, 0.204 at 10 s, 0.217 at 15 s and 0.224 at 30 s (2 repeats at each of the last three). It is the window,
not the silence after the clip: at 8 s, clips followed by 5.6 s of padding still looped. Decoding at 10 s costs
what decoding at 6 s does (the decoder dominates)."""


@contextmanager
def window_fitting(task: Transcriber, model: torch.nn.Module, utts: list[dict], least_s: float = 0.0) -> Iterator[None]:
    """Decode `utts` at a window that holds the longest of them (rounded up to 0.5 s) and is at least `least_s`,
    at most 30 s, where the task can change its window (`use_window`) and its own is shorter; the task's window
    is restored afterwards.

    A trial's window fits its own data; a set from elsewhere (the natural-voice test set) must not have its
    clips cut to that window, or the measurement would count the cut words, not the model's errors; nor be
    decoded at a window so short that Whisper loops (`least_s`: NATURAL_WINDOW_S)."""
    use = getattr(task, "use_window", None)
    window = float(getattr(task, "window_s", 0.0) or 0.0)
    longest = max((len(u["audio"]) for u in utts), default=0) / SAMPLE_RATE
    if not callable(use) or window <= 0 or (longest <= window and least_s <= window):
        yield
        return
    use(model, min(WHISPER_WINDOW_S, max(least_s, math.ceil(2 * longest) / 2)))
    try:
        yield
    finally:
        use(model, window)


def validator(task: Transcriber, model: torch.nn.Module, utts: list[dict], batch_size: int, dev: torch.device,
              dtype: torch.dtype) -> Callable[[], dict[str, float]]:
    """What `loop.fit` calls to score the model on the validation split during training."""

    def validate() -> dict[str, float]:
        v = evaluate(task, model, utts, batch_size, dev, dtype)
        return {"val_wer": v["wer"], "val_cer": v["cer"]}

    return validate

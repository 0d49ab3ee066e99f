"""Decoding an evaluation set on every worker and scoring it: corpus WER/CER, per-utterance errors, latency."""

from __future__ import annotations

import time
from typing import Any

import torch

from trainables.batching import SAMPLE_RATE, length_buckets
from trainables.metrics import error_rates, utterance_errors
from trainables.training import all_gather_objects, world


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def evaluate(task: Any, model: torch.nn.Module, utts: list[dict], batch_size: int, dev: torch.device,
             dtype: torch.dtype) -> dict[str, Any]:
    """Decode this worker's share of `utts`, gather all workers' results, and score them."""
    rank, size = world()
    mine = utts[rank::size]
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    rows, seconds, audio_s = [], 0.0, 0.0
    for batch_idx in length_buckets([len(u["audio"]) for u in mine], batch_size, shuffle=False, seed=0):
        batch = [mine[i] for i in batch_idx]
        t0 = time.perf_counter()
        hyps = task.transcribe(inner, batch, dev, dtype)
        seconds += time.perf_counter() - t0
        audio_s += sum(len(u["audio"]) for u in batch) / SAMPLE_RATE
        rows += [{"id": u["id"], "reference": u["text"], "hypothesis": h} for u, h in zip(batch, hyps, strict=True)]
    inner.train(was_training)
    gathered = all_gather_objects((rows, seconds, audio_s))
    rows = sorted((r for g in gathered for r in g[0]), key=lambda r: r["id"])
    total_s, total_audio = sum(g[1] for g in gathered), sum(g[2] for g in gathered)
    for r in rows:
        r["errors"], r["ref_words"] = utterance_errors(r["reference"], r["hypothesis"])
    rates = error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    return {**rates, "rows": rows, "latency_ms_per_utt": 1000 * total_s / max(1, len(rows)),
            "rtf": total_s / max(total_audio, 1e-9)}

"""Benchmark: Whisper's encoder window cut to the data's longest utterance, against its own 30 seconds.

Measures, on the offline corpus and tiny.en: untuned WER at each window, and NF4 QLoRA training
throughput and peak memory at each window, then prints the ratios.

    python benchmarks/encoder_window.py [--short 5] [--eval-items 100] [--steps 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.qlora import parse_config, run  # noqa: E402


def untuned(window: float, items: int) -> dict[str, float]:
    return run(parse_config({
        "data": {"source": "espeak-general", "max_eval_items": items, "max_val_items": 1, "encoder_window_s": window},
        "precision": {"bits": 32}, "lora": {"enabled": False}, "optim": {"max_steps": 0, "warmup_steps": 0},
        "save_adapter": False,
    }))


def training(window: float, steps: int) -> dict[str, float]:
    return run(parse_config({
        "data": {"source": "espeak-general", "max_eval_items": 1, "max_val_items": 1, "encoder_window_s": window},
        "eval": {"max_new_tokens": 4}, "precision": {"bits": 4},
        "optim": {"max_steps": steps, "warmup_steps": 1, "batch_size": 8}, "save_adapter": False,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", type=float, default=5.0, help="shortened window, seconds")
    p.add_argument("--eval-items", type=int, default=100)
    p.add_argument("--steps", type=int, default=4, help="training steps per measurement (2 are warm-up)")
    args = p.parse_args()
    short, full = untuned(args.short, args.eval_items), untuned(30.0, args.eval_items)
    # Peak memory is the process's maximum so far: measure the small window first.
    t_short, t_full = training(args.short, args.steps), training(30.0, args.steps)
    print(f"untuned WER        {args.short:g} s: {short['wer']:.4f}   30 s: {full['wer']:.4f}")
    print(f"decode latency     {args.short:g} s: {short['latency_ms_per_utt']:.1f} ms   30 s: {full['latency_ms_per_utt']:.1f} ms"
          f"   ratio {full['latency_ms_per_utt'] / short['latency_ms_per_utt']:.2f}x")
    print(f"train samples/s    {args.short:g} s: {t_short['train_samples_per_s']:.2f}   30 s: {t_full['train_samples_per_s']:.2f}"
          f"   speed-up {t_short['train_samples_per_s'] / t_full['train_samples_per_s']:.2f}x")
    print(f"peak host memory   {args.short:g} s: {t_short['peak_host_mem_mb']:.0f} MB   30 s: {t_full['peak_host_mem_mb']:.0f} MB")


if __name__ == "__main__":
    main()

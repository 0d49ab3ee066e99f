"""Benchmark: Whisper's encoder window cut to the data's longest utterance, against its own 30 seconds.

Measures, on the offline corpus and tiny.en: untuned WER at each window, and NF4 QLoRA training
throughput and peak memory at each window, then prints the ratios.

    python benchmarks/encoder_window.py [--short 5] [--eval-items 100] [--steps 4]
    python benchmarks/encoder_window.py --natural espeak-clinical [--windows 6,7,8,10,15,30]

`--natural CORPUS` instead decodes that corpus's natural-voice test set with the untuned model at each of
`--windows`, and prints WER and how many hypotheses repeat themselves (more than 1.5 times the reference's
words): what sets `trainables.blocks.evaluation.NATURAL_WINDOW_S`.
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


def natural_by_window(corpus: str, windows: list[float], items: int, model_name: str) -> list[tuple[float, float, int, int]]:
    """(window, WER, hypotheses that repeat, utterances) of the untuned model on `corpus`'s natural-voice test set."""
    import torch

    from trainables import assets
    from trainables.blocks import models
    from trainables.blocks.data import load_natural
    from trainables.blocks.evaluation import evaluate
    from trainables.blocks.tasks import WhisperSeq2Seq

    utts = load_natural(corpus, "test", items)
    if not utts:
        sys.exit(f"--natural {corpus}: this corpus has no natural-voice test set")
    dev, source = torch.device("cpu"), assets.resolve_model(model_name)
    model = models.load_base_model(source, "whisper", models.PrecisionConfig(bits=32), dev).eval()
    task = WhisperSeq2Seq(source, windows[0], 64)
    out = []
    for window in windows:
        task.use_window(model, window)
        ev = evaluate(task, model, utts, 16, dev, torch.float32)
        repeats = sum(len(r["hypothesis"].split()) > 1.5 * r["ref_words"] for r in ev["rows"])
        out.append((window, ev["wer"], repeats, len(ev["rows"])))
        print(f"window {window:4g} s: WER {ev['wer']:.3f}, {repeats} of {len(ev['rows'])} hypotheses repeat", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", type=float, default=5.0, help="shortened window, seconds")
    p.add_argument("--eval-items", type=int, default=100)
    p.add_argument("--steps", type=int, default=4, help="training steps per measurement (2 are warm-up)")
    p.add_argument("--natural", metavar="CORPUS", help="only: the untuned model on CORPUS's natural-voice test set "
                                                      "at each of --windows")
    p.add_argument("--windows", default="6,7,8,10,15,30", help="comma-separated windows in seconds (--natural)")
    p.add_argument("--model", default="whisper-tiny.en", help="the untuned model (--natural)")
    args = p.parse_args()
    if args.natural:
        try:
            windows = [float(w) for w in args.windows.split(",")]
        except ValueError:
            sys.exit(f"--windows: expected comma-separated seconds, got {args.windows!r}")
        if not windows or any(not 0 < w <= 30 for w in windows):
            sys.exit(f"--windows: each must be in (0, 30] seconds, got {args.windows!r}")
        natural_by_window(args.natural, windows, args.eval_items, args.model)
        return
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

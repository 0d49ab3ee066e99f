"""Benchmark: how much a natural-voice test set's WER moves with Piper's noise alone.

Piper draws noise for every utterance (VITS samples durations and its latent). The shipped sets are spoken with a
fixed seed, so every build holds the same audio; this measures what that fixes. For each seed it speaks the first
`--items` test sentences of a natural-voice set (the set's rates, in turn, as the set does) and scores the untuned
model on them at the natural-voice window (or `--window`: a preset whose trials train at Whisper's 30 s window
scores its natural-voice sets there), then prints each seed's WER, their mean, standard deviation and range,
and the last line `RESULT {json}`.

    python benchmarks/natural_seeds.py [--set natural-general] [--seeds 0,1,2,3] [--items 100] [--model whisper-tiny.en]
                                       [--window 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.assets.natural_voice import NATURAL_SETS, seeded_voice, sentences, speak_fitting  # noqa: E402


def spoken(name: str, seed: int, items: int) -> list[dict]:
    """The first `items` test sentences of set `name`, spoken with Piper's noise seeded by `seed`."""
    spec = NATURAL_SETS[name]
    voice = seeded_voice(seed)
    texts = sentences(spec)["test"][:items]
    return [{"id": f"{name}-seed{seed}-{i:05d}", "text": text, "language": "en",
             "audio": speak_fitting(text, spec.length_scales[i % len(spec.length_scales)], spec, voice)[0]}
            for i, text in enumerate(texts)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="natural-general", choices=sorted(NATURAL_SETS))
    p.add_argument("--seeds", default="0,1,2,3", help="comma-separated Piper seeds (default 0,1,2,3)")
    p.add_argument("--items", type=int, default=100, help="test utterances per seed (default 100)")
    p.add_argument("--model", default="whisper-tiny.en", help="model asset or folder (default whisper-tiny.en)")
    p.add_argument("--window", type=float, help="decoding window in seconds, up to 30 (default: the natural-voice "
                   "window, 10; the sets' clips are shorter)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if len(seeds) < 2 or args.items < 1:
        p.error("--seeds: at least two; --items: at least 1")
    if args.window is not None and not 0 < args.window <= 30:
        p.error(f"--window: seconds in (0, 30], got {args.window:g}")

    import torch

    from trainables import assets
    from trainables.blocks import models
    from trainables.blocks.evaluation import NATURAL_WINDOW_S, evaluate
    from trainables.blocks.tasks import WhisperSeq2Seq

    dev, source = torch.device("cpu"), assets.resolve_model(args.model)
    model = models.load_base_model(source, "whisper", models.PrecisionConfig(bits=32), dev).eval()
    window = args.window or NATURAL_WINDOW_S
    task = WhisperSeq2Seq(source, window, 64)
    task.use_window(model, window)
    wers = []
    for seed in seeds:
        ev = evaluate(task, model, spoken(args.set, seed, args.items), 16, dev, torch.float32)
        wers.append(ev["wer"])
        words = sum(r["ref_words"] for r in ev["rows"])
        print(f"seed {seed}: WER {ev['wer']:.4f} over {words} words", flush=True)
    result = {"set": args.set, "model": args.model, "items": args.items, "window_s": window, "seeds": seeds,
              "wer": wers, "mean": statistics.mean(wers), "sd": statistics.stdev(wers), "range": max(wers) - min(wers)}
    print(f"{args.model} on {args.items} utterances of {args.set} at a {window:g} s window, {len(seeds)} seeds: "
          f"mean WER {result['mean']:.4f}, sd {result['sd']:.4f}, range {result['range']:.4f} "
          f"({min(wers):.4f} to {max(wers):.4f})")
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

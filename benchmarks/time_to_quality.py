"""Time to a target validation WER: the recipe users follow to LoRA-tune Whisper against a platform trial.

    .venv/bin/python benchmarks/time_to_quality.py [--sweep qlora_rank] [--preset local] [--value lora.r=16]
                                                   [--steps N] [--every K] [--target WER] [--order standard,platform]
                                                   [--spec-augment] [--platform-steps N] [--standard-from PATH]
                                                   [--json PATH]
    .venv/bin/python benchmarks/time_to_quality.py --tiny   # a random 2+2-layer Whisper, 4 steps (what the test runs)

Both sides fine-tune the same trial (by default the first level of the sweep's searched key on its preset; for
qlora_rank local: Whisper tiny.en, LoRA on q/k/v/out/fc1/fc2 of both stacks, AdamW, warm-up + cosine, clipping at
1.0, batch 8, 40 steps, seed 0) on the same espeak-ng splits, and both decode the validation split every K steps:

- standard: the recipe of the Hugging Face Whisper fine-tuning guides, with peft. The model loaded at fp32 with
            `from_pretrained`; Whisper's own 30 s window (every clip padded to 3,000 log-mel frames by the feature
            extractor); a `prepare_dataset` step (features and token ids per utterance, computed the first time an
            utterance is read and kept, as `dataset.map` keeps them); the usual speech seq2seq collator, written
            here (`SpeechSeq2SeqCollator`); `get_peft_model` on the same modules with the same rank, alpha and
            dropout; `Seq2SeqTrainer` with the same optimiser settings, `eval_strategy="steps"`,
            `predict_with_generate` and a WER `compute_metrics`.
- platform: the project's qlora method (`setup` -> `train` -> `finish`, in-process: no Ray, so a sweep's per-trial
            start-up is not counted; benchmarks/overhead.py and sweep_cost.py measure it) with what makes it fast:
            the preset's precision (qlora_rank local: NF4 double-quantised base, fp32 compute), its shortened encoder
            window (`data.encoder_window_s`; 0 = the longest utterance of the splits) and its feature cache.

Same utterances in the same batches and order on both sides (the project's length-bucketed stream, fed to the
Trainer sequentially: benchmarks/vs_hf_trainer.py's `project_order`); the transcript's tokens are the same (a
leading space, the decoder-start token stripped by the collator). SpecAugment is off on both sides unless
--spec-augment (the recipe has none; it is a quality knob, not a speed one). Both WERs are corpus WER after
Whisper's English normalisation (`trainables.blocks.metrics.error_rates`); the Trainer's own evaluation loop scores
the standard side's validation passes, and the same model is scored again by `trainables.blocks.evaluation` at the
end as a check that the two agree. Final test WERs (the espeak test split, and the natural-voice set where one
is available: see NATURAL_VOICE_HOOK) come from `trainables.blocks.evaluation.evaluate` on both sides.

Timing, the same for both sides (`timeline`): `train_s` is wall time from the start of training to the end of a
step with every evaluation before it taken out; `wall_s` is wall time from the side's start (data loading, model
loading and quantisation included) to the end of a validation pass, evaluations included. The target is the
standard recipe's best validation WER within its budget unless --target names one; each side's time to it is that
of its first validation pass at or below it. The ratio is standard / platform. The last line is `RESULT {json}`.

A platform step costs a fraction of a standard one, so the same step budget can leave the platform short of the
standard recipe's best: --platform-steps gives the platform side a budget of its own (its schedule's length with it;
validation still every K steps). The standard side takes minutes on CPU; --standard-from reads it from an earlier
run's --json (the same trial, steps and K, checked) instead of training it again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import ROOT, run_console, trial_spec  # noqa: E402 - the sibling benchmarks' helpers
from vs_hf_trainer import project_order, steady_rate  # noqa: E402

RESULT_PREFIX = "RESULT "
CHILD_PREFIX = "BENCH_CHILD "
PROGRESS_PREFIX = "BENCH_PROGRESS "
SIDES = ("standard", "platform")
TINY_STEPS, TINY_EVERY = 4, 2
EVALS_PER_RUN = 8
"""Validation passes in a run when --every is not given (every max_steps // 8 steps)."""


# --------------------------------------------------------------------------- shared by both sides


def natural_voice_utterances(source: str, max_items: int | None) -> list[dict] | None:
    """The natural-voice test utterances of `source` (trainables.assets.natural_voice), or None where it has none."""
    from trainables.blocks.data import load_natural

    return load_natural(source, "test", max_items)


def progress(side: str, step: int, total: int, val_wer: float, seconds: float) -> None:
    """A child's line for the parent to echo: a side trains for minutes, and each validation pass is news."""
    print(f"{PROGRESS_PREFIX}{side}: step {step}/{total}, val WER {val_wer:.4f} ({seconds:.0f} s)", flush=True)


def timeline(train_start: float, step_ends: list[float], evals: list[dict[str, float]]) -> list[dict[str, float]]:
    """Per validation pass (`evals`: {"start", "end", "wer"}, seconds from the side's start, as `step_ends` and
    `train_start`): the steps done before it, its WER, the training seconds to the end of its step with the time
    of every earlier pass taken out (`train_s`), and the wall seconds from the side's start to its end (`wall_s`)."""
    out = []
    for e in evals:
        steps = sum(1 for t in step_ends if t <= e["start"])
        if steps == 0:
            continue
        step_end = step_ends[steps - 1]
        eval_before = sum(x["end"] - x["start"] for x in evals if x["end"] <= step_end)
        out.append({"step": steps, "val_wer": e["wer"], "train_s": step_end - train_start - eval_before,
                    "wall_s": e["end"]})
    return out


def to_target(curve: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first validation pass at or below `target` WER (its step, train_s and wall_s), or None."""
    hit = next((p for p in curve if p["val_wer"] <= target + 1e-12), None)
    return None if hit is None else {k: hit[k] for k in ("step", "train_s", "wall_s")}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


# --------------------------------------------------------------------------- the standard recipe


@dataclass
class SpeechSeq2SeqCollator:
    """The collator of the Whisper fine-tuning guides: log-mel features padded by the feature extractor, token
    ids padded by the tokenizer with the padding set to -100 (ignored by the loss), and a leading decoder-start
    token stripped when every row has it (the model prepends it when it shifts the labels right)."""

    processor: Any
    decoder_start_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.processor.feature_extractor.pad([{"input_features": f["input_features"]} for f in features],
                                                     return_tensors="pt")
        labels_batch = self.processor.tokenizer.pad([{"input_ids": f["labels"]} for f in features], return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch["attention_mask"].ne(1), -100)
        if bool((labels[:, 0] == self.decoder_start_token_id).all()):
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


class PreparedSpeech:
    """The guides' `prepare_dataset` over a list of utterances: Whisper's 30 s features (the feature extractor's
    default padding) and the transcript's token ids, computed the first time an utterance is read and kept."""

    def __init__(self, utts: list[dict], processor: Any) -> None:
        self.utts, self.processor = utts, processor
        self.cache: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        u = self.utts[i]
        if u["id"] not in self.cache:
            feats = self.processor.feature_extractor(u["audio"], sampling_rate=16000).input_features[0]
            self.cache[u["id"]] = {"input_features": feats,
                                   "labels": self.processor.tokenizer(" " + u["text"].strip()).input_ids}
        return self.cache[u["id"]]


def child_standard(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Seq2SeqTrainer + peft at fp32 over Whisper's 30 s window; validation WER every K steps by the Trainer."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    from trainables import assets, load_method
    from trainables.blocks.data import load_splits
    from trainables.blocks.evaluation import evaluate
    from trainables.blocks.metrics import error_rates
    from trainables.blocks.models import family_of, stack_depths, target_module_names
    from trainables.blocks.tasks import WhisperSeq2Seq
    from trainables.blocks.training import autocast_mode, device, seed_everything

    module = load_method(spec["method"])
    cfg = module.parse_config(spec["config"])
    o, every = cfg.optim, cfg.eval.every
    dev = device()
    seed_everything(cfg.seed)
    source = assets.resolve_model(cfg.model)
    mcfg = assets.load_model_config(source)
    if family_of(mcfg) != "whisper":
        raise SystemExit(f"time_to_quality compares Whisper trials; {cfg.model} is {family_of(mcfg)}")
    splits = load_splits(cfg.data)
    processor = WhisperProcessor.from_pretrained(source)
    model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32).to(dev)
    window_s = float(processor.feature_extractor.chunk_length)  # Whisper's own 30 s
    targets = target_module_names(model, "whisper", cfg.lora, stack_depths(mcfg, "whisper"))
    model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                             target_modules=targets, bias="none"))
    tokenizer = processor.tokenizer
    collator = SpeechSeq2SeqCollator(processor, model.config.decoder_start_token_id)
    train_set = PreparedSpeech(project_order(splits.train, o, cfg.seed), processor)
    val_set = PreparedSpeech(splits.val, processor)

    def compute_metrics(pred: Any) -> dict[str, float]:
        pred_ids, label_ids = pred.predictions, pred.label_ids
        pred_ids[pred_ids == -100] = tokenizer.pad_token_id
        label_ids[label_ids == -100] = tokenizer.pad_token_id
        hyps = tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
        refs = tokenizer.batch_decode(label_ids, skip_special_tokens=True)
        return error_rates(refs, hyps)

    step_ends: list[float] = []
    evals: list[dict[str, float]] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step_ends.append(time.perf_counter() - t0)

    class TimedTrainer(Seq2SeqTrainer):
        def evaluate(self, *a: Any, **kw: Any) -> dict[str, float]:
            kw.setdefault("max_new_tokens", cfg.eval.max_new_tokens)
            start = time.perf_counter() - t0
            out = super().evaluate(*a, **kw)
            evals.append({"start": start, "end": time.perf_counter() - t0, "wer": float(out["eval_wer"])})
            progress("standard", self.state.global_step, o.max_steps, evals[-1]["wer"], evals[-1]["end"])
            return out

    mixed = autocast_mode(o, dev)
    args = Seq2SeqTrainingArguments(
        output_dir=str(work / "standard"), per_device_train_batch_size=o.batch_size,
        per_device_eval_batch_size=cfg.eval.batch_size, gradient_accumulation_steps=o.grad_accum,
        max_steps=o.max_steps, learning_rate=o.lr, weight_decay=o.weight_decay, warmup_steps=o.warmup_steps,
        lr_scheduler_type="cosine", max_grad_norm=o.max_grad_norm, optim="adamw_torch", seed=cfg.seed,
        data_seed=cfg.seed, train_sampling_strategy="sequential", eval_strategy="steps", eval_steps=every,
        predict_with_generate=True, remove_unused_columns=False, label_names=["labels"], dataloader_num_workers=0,
        dataloader_pin_memory=False, save_strategy="no", report_to="none", logging_steps=every, disable_tqdm=True,
        use_cpu=dev.type == "cpu", bf16=mixed == "bf16", fp16=mixed == "fp16",
    )
    trainer = TimedTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                           data_collator=collator, compute_metrics=compute_metrics, callbacks=[StepTimes()])
    train_start = time.perf_counter() - t0
    trainer.train()
    if not evals or evals[-1]["start"] < step_ends[-1]:  # the Trainer evaluates at multiples of K only
        trainer.evaluate()
    task = WhisperSeq2Seq(source, window_s, cfg.eval.max_new_tokens)
    dtype = torch.float32
    check = evaluate(task, model, splits.val, cfg.eval.batch_size, dev, dtype)
    final = evaluate(task, model, splits.test, cfg.eval.batch_size, dev, dtype)
    natural = natural_voice_utterances(cfg.data.source, cfg.data.max_eval_items)
    nat = evaluate(task, model, natural, cfg.eval.batch_size, dev, dtype) if natural else None
    return {"window_s": window_s, "base": "fp32", "train_start": train_start, "step_ends": step_ends, "evals": evals,
            "val_wer_check": float(check["wer"]), "test_wer": float(final["wer"]), "test_cer": float(final["cer"]),
            "natural_wer": float(nat["wer"]) if nat else None,
            "samples_per_s": steady_rate(step_ends, o.batch_size * o.grad_accum),
            "trainable_params": float(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            "end": time.perf_counter() - t0}


# --------------------------------------------------------------------------- the platform trial


def replace_everywhere(name: str, original: Any, replacement: Any) -> int:
    """Point every loaded `trainables` module's `name` that is `original` at `replacement` (the methods import shared
    pieces by name, so replacing them where they are defined alone would miss them); returns how many."""
    count = 0
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] == "trainables" and getattr(module, name, None) is original:
            setattr(module, name, replacement)
            count += 1
    return count


def child_platform(spec: dict[str, Any]) -> dict[str, Any]:
    """The qlora method in-process at the preset's precision and window; its step ends and evaluations timed from
    outside (a Stepper subclass, a wrapped `evaluate`)."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from trainables import load_method
    from trainables.blocks import evaluation
    from trainables.blocks.training import Stepper

    module = load_method(spec["method"])
    step_ends: list[float] = []
    calls: list[dict[str, Any]] = []
    original = evaluation.evaluate
    training = False

    class TimedStepper(Stepper):
        def step(self, *a: Any, **kw: Any) -> dict[str, float]:
            out = super().step(*a, **kw)
            step_ends.append(time.perf_counter() - t0)
            return out

    def timed_evaluate(task: Any, model: Any, utts: list[dict], *a: Any, **kw: Any) -> dict[str, Any]:
        start = time.perf_counter() - t0
        out = original(task, model, utts, *a, **kw)
        calls.append({"start": start, "end": time.perf_counter() - t0, "wer": float(out["wer"]),
                      "cer": float(out["cer"]), "ids": [u["id"] for u in utts]})
        if training:  # the validation passes between steps; finish's evaluations come after
            progress("platform", len(step_ends), spec["config"]["optim"]["max_steps"], calls[-1]["wer"], calls[-1]["end"])
        return out

    if not replace_everywhere("evaluate", original, timed_evaluate) or not replace_everywhere("Stepper", Stepper, TimedStepper):
        raise SystemExit("time_to_quality: the qlora method no longer calls trainables.blocks.evaluation.evaluate and "
                         "trainables.blocks.training.Stepper by name; update child_platform's timing hooks")
    cfg = module.parse_config(spec["config"])
    s = module.setup(cfg)
    train_start = time.perf_counter() - t0
    training = True
    history, stepper = module.train(s)
    training = False
    metrics, out = module.finish(s, history, stepper)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    val_ids = [u["id"] for u in s.splits.val]
    evals = [{k: c[k] for k in ("start", "end", "wer")} for c in calls if c["ids"] == val_ids]
    natural = natural_voice_utterances(cfg.data.source, cfg.data.max_eval_items)
    nat = original(s.task, s.wrapped, natural, cfg.eval.batch_size, s.dev, s.dtype) if natural else None
    o = cfg.optim
    return {"window_s": float(s.window_s), "base": precision_label(cfg.precision), "train_start": train_start,
            "step_ends": step_ends, "evals": evals, "test_wer": float(metrics["wer"]), "test_cer": float(metrics["cer"]),
            "natural_wer": float(nat["wer"]) if nat else None,
            "samples_per_s": steady_rate(step_ends, o.batch_size * o.grad_accum),
            "trainable_params": float(metrics["trainable_params"]), "end": time.perf_counter() - t0}


def earlier_standard(path: Path, spec: dict[str, Any], steps: int, every: int) -> dict[str, Any]:
    """The standard side's row of an earlier run's --json, refused in one line unless that run trained the same
    trial (sweep, preset, sampled values, overrides) for the same steps with the same validation interval."""
    try:
        earlier = json.loads(path.read_text())
        row = earlier["standard"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--standard-from {path}: not a time_to_quality --json result ({type(exc).__name__}: {exc})") from None
    mine = {k: spec[k] for k in ("sweep", "preset", "sampled", "overrides")}
    for key, want in (("steps", steps), ("every", every), *mine.items()):
        have = earlier.get("spec", {}).get(key) if key in mine else earlier.get(key)
        if have != want:
            raise SystemExit(f"--standard-from {path}: its {key} is {json.dumps(have)}, this run's is {json.dumps(want)}")
    return row


def precision_label(p: Any) -> str:
    """nf4+dq, fp4, int8, 16-bit, fp32: the base weights' precision in a word."""
    if p.bits == 4:
        return p.quant_type + ("+dq" if p.double_quant else "")
    return {8: "int8", 16: "16-bit"}.get(p.bits, "fp32")


# --------------------------------------------------------------------------- the driver


def run_child(side: str, spec_file: Path, work: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    stderr_path = work / f"{side}.stderr"

    def echo(text: str) -> None:  # a side trains for minutes: its validation passes show as they come
        if text.startswith(PROGRESS_PREFIX):
            print(f"[{time.strftime('%H:%M:%S')}]   {text[len(PROGRESS_PREFIX):]}", flush=True)

    timed, rc, _, _ = run_console([sys.executable, __file__, "--child", side, "--spec-file", str(spec_file),
                                   "--work", str(work)], env, stderr_path, echo)
    lines = [text for _, text in timed]
    line = next((x for x in reversed(lines) if x.startswith(CHILD_PREFIX)), None)
    if rc != 0 or line is None:
        stdout = "\n".join(x for x in lines if not x.startswith(PROGRESS_PREFIX))
        raise SystemExit(f"{side} failed (exit {rc}):\n{stdout[-3000:]}\n{stderr_path.read_text()[-3000:]}")
    return {"process_wall_s": time.time() - t0, **json.loads(line[len(CHILD_PREFIX):])}


def summarise(raw: dict[str, Any], target: float) -> dict[str, Any]:
    """One side's row: its validation curve, time to `target`, and its totals (eval time split from training)."""
    curve = timeline(raw["train_start"], raw["step_ends"], raw["evals"])
    eval_s = sum(e["end"] - e["start"] for e in raw["evals"])
    ends = raw["step_ends"]
    eval_in_training = sum(e["end"] - e["start"] for e in raw["evals"] if ends and e["end"] <= ends[-1])
    row = {k: raw[k] for k in ("window_s", "base", "test_wer", "test_cer", "natural_wer", "samples_per_s",
                               "trainable_params")}
    row.update({
        "steps": len(ends), "curve": curve, "best_val_wer": min((p["val_wer"] for p in curve), default=None),
        "to_target": to_target(curve, target), "setup_s": raw["train_start"],
        "train_s": (ends[-1] - raw["train_start"] - eval_in_training) if ends else 0.0, "val_eval_s": eval_s,
        "wall_s": raw["end"], "process_wall_s": raw["process_wall_s"],
    })
    if "val_wer_check" in raw:
        row["val_wer_check"] = raw["val_wer_check"]
    return row


def fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


HEADER = ("side", "window_s", "base", "steps", "best_val_wer", "steps_to_target", "train_s_to_target",
          "wall_s_to_target", "train_s", "val_eval_s", "setup_s", "wall_s", "test_wer", "natural_wer")


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    widths = [9, 8, 7, 5, 12, 15, 17, 16, 8, 10, 7, 7, 8, 11]
    lines = ["  ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, w) in enumerate(zip(HEADER, widths, strict=True)))]
    for side in SIDES:
        r, t = rows[side], rows[side]["to_target"] or {}
        cells = [side, fmt(r["window_s"], ".1f"), r["base"], str(r["steps"]), fmt(r["best_val_wer"], ".4f"),
                 fmt(t.get("step"), "d"), fmt(t.get("train_s"), ".1f"), fmt(t.get("wall_s"), ".1f"),
                 fmt(r["train_s"], ".1f"), fmt(r["val_eval_s"], ".1f"), fmt(r["setup_s"], ".1f"), fmt(r["wall_s"], ".1f"),
                 fmt(r["test_wer"], ".4f"), fmt(r["natural_wer"], ".4f")]
        lines.append("  ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="qlora_rank", help="a qlora sweep (default qlora_rank)")
    p.add_argument("--preset", default="local", choices=["local", "gpu"])
    p.add_argument("--value", action="append", default=[], metavar="KEY=VALUE",
                   help="the trial's value of a searched key (default: its first value; qlora_rank: lora.r=1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a fixed config value")
    p.add_argument("--steps", type=int, help=f"optimiser steps on both sides (default: the preset's; {TINY_STEPS} with --tiny)")
    p.add_argument("--every", type=int, help=f"validate every K steps on both sides (default: steps // {EVALS_PER_RUN}; "
                                              f"{TINY_EVERY} with --tiny)")
    p.add_argument("--target", type=float, help="the target validation WER (default: the standard recipe's best)")
    p.add_argument("--spec-augment", action="store_true",
                   help="keep the preset's SpecAugment on the platform side (default: off on both; the recipe has none)")
    p.add_argument("--model", help="model asset or folder (with --tiny: instead of a freshly built random one)")
    p.add_argument("--tiny", action="store_true", help="a random 2+2-layer Whisper, espeak-smoke, 4 steps of 2")
    p.add_argument("--platform-steps", type=int, metavar="N",
                   help="the platform side's step budget (default: --steps); validation still every K steps")
    p.add_argument("--standard-from", type=Path, metavar="PATH",
                   help="reuse the standard side of an earlier run's --json (same trial, steps, K) instead of training it")
    p.add_argument("--order", default="standard,platform", help="which side runs first (default standard,platform)")
    p.add_argument("--json", type=Path, help="also write the RESULT object here")
    p.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--spec-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps: must be at least 1, got {args.steps}")
    if args.platform_steps is not None and args.platform_steps < 1:
        p.error(f"--platform-steps: must be at least 1, got {args.platform_steps}")
    if args.standard_from is not None and not args.standard_from.is_file():
        p.error(f"--standard-from: no such file: {args.standard_from}")
    if args.every is not None and args.every < 1:
        p.error(f"--every: must be at least 1, got {args.every}")
    if args.target is not None and args.target < 0:
        p.error(f"--target: a WER is at least 0, got {args.target}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec_file.read_text())
        out = child_standard(spec, args.work) if args.child == "standard" else child_platform(spec)
        print(CHILD_PREFIX + json.dumps(out), flush=True)
        return 0
    order = [x.strip() for x in args.order.split(",")]
    if sorted(order) != sorted(SIDES):
        raise SystemExit("--order: name standard and platform, e.g. platform,standard")
    work = Path(tempfile.mkdtemp(prefix="time-to-quality-"))
    try:
        if args.tiny and args.steps is None:
            args.steps = TINY_STEPS
        extra = [] if args.spec_augment else ["spec_augment.enabled=false"]
        shared = argparse.Namespace(sweep=args.sweep, preset=args.preset, value=args.value, steps=args.steps,
                                    model=args.model, tiny=args.tiny, no_baseline=True, fresh_baseline=False,
                                    set=[*args.set, *extra])
        spec = trial_spec(shared, work)
        if spec["method"] != "qlora":
            raise SystemExit(f"--sweep {args.sweep}: method {spec['method']}; this benchmark compares qlora trials")
        steps = int(spec["config"]["optim"]["max_steps"])
        every = args.every or (TINY_EVERY if args.tiny else max(1, steps // EVALS_PER_RUN))
        spec["config"].setdefault("eval", {})["every"] = every
        platform_steps = args.platform_steps or steps
        reused = earlier_standard(args.standard_from, spec, steps, every) if args.standard_from else None
        raw = {}
        for side in order:
            if side == "standard" and reused is not None:
                print(f"[{time.strftime('%H:%M:%S')}] standard side read from {args.standard_from}", flush=True)
                continue
            side_spec = json.loads(json.dumps(spec))
            if side == "platform" and platform_steps != steps:
                side_spec["config"]["optim"]["max_steps"] = platform_steps
            spec_file = work / f"spec-{side}.json"
            spec_file.write_text(json.dumps(side_spec))
            print(f"[{time.strftime('%H:%M:%S')}] training with {side} ({side_spec['config']['optim']['max_steps']} "
                  f"steps, validation every {every}) ...", flush=True)
            raw[side] = run_child(side, spec_file, work)
        if reused is not None:
            standard_best = reused["best_val_wer"]
        else:
            standard_best = min((e["wer"] for e in raw["standard"]["evals"]), default=None)
        target = args.target if args.target is not None else standard_best
        if target is None:
            raise SystemExit("the standard recipe made no validation pass: no target WER")
        rows = {side: summarise(raw[side], target) for side in SIDES if side in raw}
        if reused is not None:
            rows["standard"] = {**reused, "to_target": to_target(reused["curve"], target)}
        s, p = rows["standard"]["to_target"] or {}, rows["platform"]["to_target"] or {}
        ratios = {"train_s_to_target": ratio(s.get("train_s"), p.get("train_s")),
                  "wall_s_to_target": ratio(s.get("wall_s"), p.get("wall_s")),
                  "steps_to_target": ratio(s.get("step"), p.get("step")),
                  "wall_s": ratio(rows["standard"]["wall_s"], rows["platform"]["wall_s"])}
        data, optim = spec["config"].get("data", {}), spec["config"].get("optim", {})
        print(f"\ntrial: sweep {spec['sweep']}, preset {spec['preset']}, {json.dumps(spec['sampled'])}, "
              f"{steps} steps of {optim.get('batch_size')} (platform: {platform_steps}), seed {spec['config'].get('seed', 0)}, "
              f"SpecAugment {'on (platform side only)' if args.spec_augment else 'off on both'}; "
              f"validation every {every} steps on {data.get('max_val_items')} utterances of {data.get('source')}")
        how = "--target" if args.target is not None else f"the standard recipe's best within its {steps} steps"
        print(f"target val WER: {target:.4f} ({how})")
        print("train_s: training wall time with evaluation time taken out (both sides); wall_s: from the side's start "
              "(data, model load) to the end of the pass, evaluation included; test_wer: espeak test split; "
              "natural_wer: natural-voice set (n/a: none available)")
        print(*table(rows), sep="\n")
        for side in SIDES:
            points = ", ".join(f"{c['step']}: {c['val_wer']:.4f} @ {c['train_s']:.1f} s" for c in rows[side]["curve"])
            print(f"val WER by step ({side}; @ train_s): {points}")
        check = rows["standard"]["val_wer_check"]
        print(f"standard final val WER, Trainer loop {rows['standard']['curve'][-1]['val_wer']:.4f} / "
              f"trainables.blocks.evaluation {check:.4f} (the same model scored both ways)")
        for key, label in (("train_s_to_target", "training time to target, evaluation excluded"),
                           ("wall_s_to_target", "wall time to target, set-up and evaluation included"),
                           ("wall_s", "total wall time")):
            reason = "" if ratios[key] is not None else " (a side never reached the target)"
            print(f"ratio standard/platform {key}: {fmt(ratios[key], '.2f')}{reason}  [{label}]")
        result = {"spec": {k: spec[k] for k in ("sweep", "preset", "sampled", "overrides")}, "order": order,
                  "steps": steps, "platform_steps": platform_steps, "every": every, "target_wer": target,
                  "standard_from": str(args.standard_from) if reused is not None else None,
                  "target_from": "--target" if args.target is not None else "standard_best",
                  "timing": "train_s excludes evaluation time on both sides; wall_s includes set-up and evaluation",
                  **{side: rows[side] for side in SIDES}, "ratio": ratios}
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

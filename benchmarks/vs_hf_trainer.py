"""The project's training loop against Hugging Face's `Seq2SeqTrainer` + peft on the same QLoRA trial.

    .venv/bin/python benchmarks/vs_hf_trainer.py [--sweep qlora_rank] [--preset local] [--value lora.r=16]
                                                 [--steps N] [--order project,hf] [--json PATH]
    .venv/bin/python benchmarks/vs_hf_trainer.py --tiny   # a random 2+2-layer Whisper, 4 steps (what the test runs)

Both sides train the same trial (by default the first level of the sweep's searched key on its preset; for
qlora_rank local: Whisper tiny.en, NF4 double-quantised base loaded by the project's own loader, fp32 compute,
LoRA on q/k/v/out/fc1/fc2 of both stacks, AdamW, warm-up + cosine, clipping at 1.0, batch 8, 40 steps, seed 0):

- project: `setup` -> `train` -> `finish` of the method module, in-process;
- hf:      the same base (`trainables.blocks.models.load_base_model`, Whisper's encoder cut to the same window), peft's
           `get_peft_model` with the same target modules, rank, alpha and dropout, and `Seq2SeqTrainer` with the
           same optimiser settings, fed by a plain collator (the Whisper feature extractor and tokenizer on the
           same utterances), in the same batches and order as the project's loop (sequential sampling over them).

SpecAugment is off on both sides (a plain collator has none). Each side runs in its own fresh Python process.
Training throughput has one definition for both: samples over the time from the end of step 2 to the end of
the last step (the first two steps are warm-up). Both final WERs come from `trainables.blocks.evaluation.evaluate`
(greedy decoding, the project's text normalisation) on the same test utterances. The last line is
`RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import ROOT, trial_spec  # noqa: E402 - the sibling benchmark's helpers

RESULT_PREFIX = "RESULT "
CHILD_PREFIX = "BENCH_CHILD "
TINY_STEPS = 4
WARMUP_STEPS = 2
"""Steps left out of the throughput (allocator, caches, lazy initialisation)."""


def steady_rate(step_ends: list[float], batch: int) -> float:
    """Samples per second from the end of step WARMUP_STEPS to the end of the last step."""
    if len(step_ends) <= WARMUP_STEPS:
        return float("nan")
    seconds = step_ends[-1] - step_ends[WARMUP_STEPS - 1]
    return (len(step_ends) - WARMUP_STEPS) * batch / seconds if seconds > 0 else float("nan")


def child_project(spec: dict[str, Any]) -> dict[str, Any]:
    """The project's loop, with the end of every optimiser step timestamped from outside (a Stepper subclass)."""
    sys.path.insert(0, str(ROOT))
    from trainables import load_method
    from trainables.blocks.training import Stepper

    module = load_method(spec["method"])
    ends: list[float] = []

    class TimedStepper(Stepper):
        def step(self, *a: Any, **kw: Any) -> dict[str, float]:
            out = super().step(*a, **kw)
            ends.append(time.perf_counter())
            return out

    module.Stepper = TimedStepper
    cfg = module.parse_config(spec["config"])
    t0 = time.perf_counter()
    s = module.setup(cfg)
    t1 = time.perf_counter()
    history, stepper = module.train(s)
    t2 = time.perf_counter()
    metrics, out = module.finish(s, history, stepper)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    batch = cfg.optim.batch_size * cfg.optim.grad_accum
    return {"samples_per_s": steady_rate(ends, batch), "own_metric_samples_per_s": float(metrics["train_samples_per_s"]),
            "wer": float(metrics["wer"]), "cer": float(metrics["cer"]), "final_loss": float(history[-1]["loss"]),
            "steps": len(ends), "setup_s": t1 - t0, "train_s": t2 - t1, "first_step_s": ends[0] - t1 if ends else None,
            "trainable_params": float(metrics["trainable_params"])}


def project_order(train: list[dict], optim: Any, seed: int) -> list[dict]:
    """The utterances of the project's training batches in its order (`optim.max_steps` x `grad_accum` batches of
    `batch_size`): fed to a Trainer with sequential sampling, every step sees the same utterances on both sides."""
    from trainables.blocks.batching import epoch_batches

    stream = epoch_batches([len(u["audio"]) for u in train], optim.batch_size, seed, 0, 1)
    return [train[i] for _ in range(optim.max_steps * optim.grad_accum) for i in next(stream)]


class PlainCollator:
    """Log-mel features padded to the trained window and transcript token ids (padding -100), as a user of
    Seq2SeqTrainer writes it: the feature extractor and tokenizer called on the batch."""

    def __init__(self, processor: Any, window_samples: int, max_tokens: int, decoder_start: int) -> None:
        self.processor, self.n, self.max_tokens, self.start = processor, window_samples, max_tokens, decoder_start

    def __call__(self, utts: list[dict]) -> dict[str, Any]:
        import torch

        feats = self.processor.feature_extractor(
            [u["audio"][: self.n] for u in utts], sampling_rate=16000, padding="max_length", max_length=self.n,
            truncation=True, return_tensors="pt").input_features
        ids = [self.processor.tokenizer(" " + u["text"].strip()).input_ids for u in utts]
        ids = [(x[1:] if x and x[0] == self.start else x)[: self.max_tokens] for x in ids]  # the model prepends it
        labels = torch.full((len(ids), max(len(x) for x in ids)), -100, dtype=torch.long)
        for i, x in enumerate(ids):
            labels[i, : len(x)] = torch.tensor(x)
        return {"input_features": feats.float(), "labels": labels}


def child_hf(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Seq2SeqTrainer + peft on the project's NF4 base, same data in the same batches; scored by the project."""
    sys.path.insert(0, str(ROOT))
    from peft import LoraConfig, get_peft_model
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, WhisperProcessor

    from trainables import assets, load_method
    from trainables.blocks.data import SAMPLE_RATE, load_splits
    from trainables.blocks.evaluation import evaluate
    from trainables.blocks.models import (
        family_of,
        input_dtype,
        load_base_model,
        shrink_whisper_encoder,
        stack_depths,
        target_module_names,
        window_positions,
    )
    from trainables.blocks.tasks import WhisperSeq2Seq
    from trainables.blocks.training import device, seed_everything

    module = load_method(spec["method"])
    cfg = module.parse_config(spec["config"])
    o = cfg.optim
    dev = device()
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    source = assets.resolve_model(cfg.model)
    mcfg = assets.load_model_config(source)
    family = family_of(mcfg)
    if family != "whisper":
        raise SystemExit(f"vs_hf_trainer compares Whisper trials; {cfg.model} is {family}")
    splits = load_splits(cfg.data)
    model = load_base_model(source, family, cfg.precision, dev)
    shrink_whisper_encoder(model, window_positions(splits.encoder_window_s))
    targets = target_module_names(model, family, cfg.lora, stack_depths(mcfg, family))
    model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                             target_modules=targets, bias="none"))
    processor = WhisperProcessor.from_pretrained(source)
    collator = PlainCollator(processor, int(round(splits.encoder_window_s * SAMPLE_RATE)), cfg.eval.max_new_tokens,
                             model.config.decoder_start_token_id)
    ordered = project_order(splits.train, o, cfg.seed)
    ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append(time.perf_counter())

    args = Seq2SeqTrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=o.batch_size, gradient_accumulation_steps=o.grad_accum,
        max_steps=o.max_steps, learning_rate=o.lr, weight_decay=o.weight_decay, warmup_steps=o.warmup_steps,
        lr_scheduler_type="cosine", max_grad_norm=o.max_grad_norm, optim="adamw_torch", seed=cfg.seed,
        data_seed=cfg.seed, train_sampling_strategy="sequential", remove_unused_columns=False, label_names=["labels"],
        dataloader_num_workers=0, dataloader_pin_memory=False, save_strategy="no", report_to="none",
        logging_steps=1, disable_tqdm=True, use_cpu=dev.type == "cpu", bf16=False, fp16=False,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=ordered, data_collator=collator,
                             callbacks=[StepTimes()])
    t1 = time.perf_counter()
    out = trainer.train()
    t2 = time.perf_counter()
    losses = [float(x["loss"]) for x in trainer.state.log_history if "loss" in x]  # logged every step, as ours
    task = WhisperSeq2Seq(source, splits.encoder_window_s, cfg.eval.max_new_tokens)
    final = evaluate(task, model, splits.test, cfg.eval.batch_size, dev, input_dtype(model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"samples_per_s": steady_rate(ends, o.batch_size * o.grad_accum), "wer": float(final["wer"]),
            "cer": float(final["cer"]), "final_loss": losses[-1] if losses else float(out.training_loss),
            "steps": len(ends), "setup_s": t1 - t0, "train_s": t2 - t1, "first_step_s": ends[0] - t1 if ends else None,
            "trainable_params": float(trainable)}


def run_child(side: str, spec_file: Path, work: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--child", side, "--spec-file", str(spec_file), "--work", str(work)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    line = next((x for x in reversed(out.stdout.splitlines()) if x.startswith(CHILD_PREFIX)), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{side} failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return {"wall_s": time.time() - t0, **json.loads(line[len(CHILD_PREFIX):])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="qlora_rank", help="a qlora sweep (default qlora_rank)")
    p.add_argument("--preset", default="local", choices=["local", "gpu"])
    p.add_argument("--value", action="append", default=[], metavar="KEY=VALUE",
                   help="the trial's value of a searched key (default: its first value)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a fixed config value")
    p.add_argument("--steps", type=int, help=f"optim.max_steps (default: the preset's; {TINY_STEPS} with --tiny)")
    p.add_argument("--model", help="model asset or folder (with --tiny: instead of a freshly built random one)")
    p.add_argument("--tiny", action="store_true", help="a random 2+2-layer Whisper, espeak-smoke, a few steps of 2")
    p.add_argument("--order", default="project,hf", help="which side runs first (default project,hf)")
    p.add_argument("--json", type=Path, help="also write the RESULT object here")
    p.add_argument("--child", choices=["project", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--spec-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec_file.read_text())
        out = child_project(spec) if args.child == "project" else child_hf(spec, args.work)
        print(CHILD_PREFIX + json.dumps(out), flush=True)
        return 0
    order = [x.strip() for x in args.order.split(",")]
    if sorted(order) != ["hf", "project"]:
        raise SystemExit("--order: name project and hf, e.g. hf,project")
    work = Path(tempfile.mkdtemp(prefix="vs-hf-"))
    try:
        if args.tiny and args.steps is None:
            args.steps = TINY_STEPS
        shared = argparse.Namespace(sweep=args.sweep, preset=args.preset, value=args.value, steps=args.steps,
                                    model=args.model, tiny=args.tiny, no_baseline=True, fresh_baseline=False,
                                    set=[*args.set, "spec_augment.enabled=false"])
        spec = trial_spec(shared, work)
        if spec["method"] != "qlora":
            raise SystemExit(f"--sweep {args.sweep}: method {spec['method']}; this benchmark compares qlora trials")
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        results = {}
        for side in order:
            print(f"[{time.strftime('%H:%M:%S')}] training with {side} ...", flush=True)
            results[side] = run_child(side, spec_file, work)
        p, h = results["project"], results["hf"]
        optim = spec["config"].get("optim", {})
        print(f"\ntrial: sweep {spec['sweep']}, preset {spec['preset']}, {json.dumps(spec['sampled'])}, "
              f"{optim.get('max_steps')} steps of {optim.get('batch_size')}, seed {spec['config'].get('seed', 0)}, "
              f"SpecAugment off on both; throughput over steps {WARMUP_STEPS + 1}..N")
        for side, label in (("project", "project loop"), ("hf", "Seq2SeqTrainer + peft")):
            r = results[side]
            print(f"{label:<22} train_samples_per_s: {r['samples_per_s']:.3f}  wer: {r['wer']:.4f}  cer: {r['cer']:.4f}"
                  f"  final_loss: {r['final_loss']:.4f}  trainable_params: {r['trainable_params']:.0f}"
                  f"  setup_s: {r['setup_s']:.1f}  first_step_s: {r['first_step_s']:.1f}  train_s: {r['train_s']:.1f}"
                  f"  wall_s: {r['wall_s']:.1f}")
        ratio = p["samples_per_s"] / h["samples_per_s"]
        print(f"ratio project/hf train_samples_per_s: {ratio:.3f}")
        print(f"wer project - hf: {p['wer'] - h['wer']:+.4f}")
        result = {"spec": {k: spec[k] for k in ("sweep", "preset", "sampled", "overrides")}, "order": order,
                  "project": p, "hf": h, "ratio_samples_per_s": ratio}
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

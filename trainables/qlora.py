"""QLoRA fine-tuning of a speech recogniser, as a Ray Train train loop.

The base model (Whisper, sequence-to-sequence; or wav2vec2, CTC) is frozen at 4-bit NF4/FP4
(optionally double-quantised), 8-bit, 16-bit or 32-bit precision, and LoRA adapters are trained on
the module kinds, stacks and layers the config names; optionally the ranks are allocated per module
from activation entropy under a fixed budget (trainables.qlora_entropy), or by AdaLoRA. `optim.max_steps = 0`
evaluates the untuned model. Run it in-process with `run(config)` or on Ray Train workers with
`train_loop_per_worker(config)`; either way it reports every metric of the MLflow contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from trainables import assets
from trainables.blocks.batching import SpecAugmentConfig, epoch_batches, length_buckets
from trainables.blocks.checkpoints import Checkpointer, ExtraState
from trainables.blocks.config import ConfigError, merge, require, to_dict
from trainables.blocks.data import DataConfig, Splits, load_natural, load_natural_val, load_splits
from trainables.blocks.distributed import all_gather_objects, world
from trainables.blocks.evaluation import EvalConfig, validator
from trainables.blocks.finish import Outcome
from trainables.blocks.inference import (
    ArtifactError,
    Recogniser,
    TaskRecogniser,
    Trial,
    copy_adapter,
    dequantise_linears,
    exported_generation,
    exported_window,
    prepare_out_dir,
    published_name,
    read_trial,
    whisper_processor,
    widen_whisper_window,
    write_manifest,
)
from trainables.blocks.launch import entry_points
from trainables.blocks.loop import fit
from trainables.blocks.metrics import deployed_size_bytes, param_counts
from trainables.blocks.models import (
    Family,
    LoraConfig,
    PrecisionConfig,
    add_lora,
    check_lora_against_model,
    check_precision_with_lora,
    enable_full_finetuning,
    family_of,
    input_dtype,
    load_base_model,
    shrink_whisper_encoder,
    stack_depths,
    target_module_names,
    window_positions,
)
from trainables.blocks.tasks import CTC, TrainingTask, WhisperSeq2Seq
from trainables.blocks.training import OptimConfig, Stepper, autocast, data_parallel, device, seed_everything, unwrap
from trainables.qlora_entropy import (
    ActivationCollector,
    EntropyConfig,
    add_entropy_term,
    allocate_ranks,
    entropy_heatmap,
    entropy_metrics,
    lora_rank_pattern,
    measure_entropy,
    rank_spread,
    sharpen,
)

# --------------------------------------------------------------------------- config


@dataclass
class AdaLoRASettings:
    """AdaLoRA's schedule and regulariser (used when lora.kind is adalora), scaled to the step budget.

    AdaLoRA (Zhang et al., ICLR 2023) trains P·Λ·Q triplets at init_r per module, then prunes the least
    important singular values on a cubic schedule down to the budget of uniform rank lora.r, and fine-tunes
    the pruned adapters at the end. peft's phases (tinit, tfinal, total_step) are given here as fractions of
    optim.max_steps, so pruning starts after the warm-up and ends before the last steps at any budget.
    """

    init_r_factor: float = 1.5
    """Initial rank per module as a multiple of lora.r (the paper starts at 1.5× the target average rank)."""
    tinit_fraction: float = 0.1
    """Steps before pruning starts, as a fraction of optim.max_steps (never fewer than optim.warmup_steps)."""
    tfinal_fraction: float = 0.3
    """Final steps with the ranks fixed (the pruned adapters fine-tuned), as a fraction of optim.max_steps."""
    reallocations: int = 50
    """How many times, at most, the ranks are re-allocated during the pruning phase (sets peft's deltaT)."""
    orth_reg_weight: float = 0.1
    """Weight of the orthogonality penalty on P and Q (the paper's γ = 0.1; peft's default is 0.5)."""
    lr_scale: float = 1.0
    """AdaLoRA's peak learning rate is optim.lr × this. Its update B·diag(E)·A starts from E = 0 and A, B ~ N(0, 0.02),
    so at LoRA's learning rate it moves far less in a short run: on tiny.en at 40 steps, lr 1e-3 left WER at 0.23
    where ×5 reached 0.06, as uniform LoRA does (entropy_allocation sets 5)."""

    def check(self) -> None:
        require(self.init_r_factor > 1, "init_r_factor", f"must be above 1 (there is nothing to prune), got {self.init_r_factor}")
        require(0 <= self.tinit_fraction < 1, "tinit_fraction", f"must be in [0, 1), got {self.tinit_fraction}")
        require(0 < self.tfinal_fraction < 1, "tfinal_fraction", f"must be in (0, 1), got {self.tfinal_fraction}")
        require(self.tinit_fraction + self.tfinal_fraction < 1, "tfinal_fraction",
                "tinit_fraction + tfinal_fraction must leave steps to prune in")
        require(self.reallocations >= 1, "reallocations", f"must be at least 1, got {self.reallocations}")
        require(self.orth_reg_weight >= 0, "orth_reg_weight", f"must be >= 0, got {self.orth_reg_weight}")
        require(self.lr_scale > 0, "lr_scale", f"must be positive, got {self.lr_scale}")


@dataclass
class QLoRAConfig:
    """One QLoRA training run."""

    model: str = "whisper-tiny.en"
    """Offline model asset name, local model directory, or hub id (e.g. openai/whisper-small)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data, and the encoder window."""
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    """Base weight precision and quantisation."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter rank, scale and placement."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser, schedule, batch and step budget."""
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    """Masking of training features (Whisper: log-mel masks; wav2vec2: its built-in latent masks)."""
    entropy: EntropyConfig = field(default_factory=EntropyConfig)
    """Entropy-aware LoRA: per-module ranks from activation entropy, and an entropy term in the loss."""
    adalora: AdaLoRASettings = field(default_factory=AdaLoRASettings)
    """AdaLoRA's schedule, regulariser and learning rate (only with lora.kind adalora)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Decoding batch, transcript length and how often to evaluate during training."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    save_adapter: bool = True
    """Save the adapter (or fully fine-tuned weights) as an artifact."""
    seed: int = 0
    """Seed of initialisation, data order and masks."""

    def check(self) -> None:
        check_precision_with_lora(self.precision, self.lora)
        require(self.lora.enabled or not self.entropy.enabled, "entropy.enabled", "rank allocation needs lora.enabled")
        require(not (self.entropy.enabled and self.lora.kind == "adalora"), "entropy.enabled",
                "entropy allocation and AdaLoRA both set the ranks; choose one")
        if self.lora.enabled and self.lora.kind == "adalora":
            # The schedule needs enough steps; checked here so a sweep's level is refused before any trial starts.
            adalora_schedule(self.optim.max_steps, self.optim.warmup_steps, self.adalora)
        assets.check_model_source(self.model, "model")
        assets.check_data_source(self.data.source, "data.source")
        assets.check_model_language(self.model, self.data.language, "model")
        model_config = assets.model_config_if_local(self.model)
        if model_config is not None:
            check_lora_against_model(self.lora, model_config)


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The untuned model as released: full precision, no adapter, Whisper's own 30 s window, no training."""
    return merge(config, {"precision": {"bits": 32}, "lora": {"enabled": False}, "data": {"encoder_window_s": 30.0},
                          "optim": {"max_steps": 0, "warmup_steps": 0}, "save_adapter": False})


# --------------------------------------------------------------------------- model and loss pieces


def allocate_entropy_ranks(cfg: QLoRAConfig, task: TrainingTask, model: torch.nn.Module, targets: list[str], train: list[dict],
                           dev: torch.device, dtype: torch.dtype) -> tuple[dict[str, int], dict[str, float]]:
    """Measure activation entropy on calibration batches (on rank 0, shared with every worker) and split the rank budget.

    Calibration batches are training batches as training sees them (SpecAugment included).
    """
    ent = cfg.entropy
    budget = ent.budget if ent.budget is not None else cfg.lora.r * len(targets)
    try:  # fail before measuring when no split can meet the budget
        allocate_ranks(dict.fromkeys(targets, 1.0), budget, ent.r_min, ent.r_max)
    except ValueError as exc:
        raise ConfigError(f"entropy.budget: {str(exc).removeprefix('allocate_ranks: ')}") from None
    entropies: dict[str, float] = {}
    if world()[0] == 0:
        buckets = length_buckets([len(u["audio"]) for u in train], cfg.optim.batch_size, shuffle=True, seed=cfg.seed)
        batches = [[train[i] for i in b] for b in buckets[: ent.calibration_batches]]
        gen = torch.Generator().manual_seed(cfg.seed)

        def forward(m: torch.nn.Module, utts: list[dict]) -> torch.Tensor:
            with autocast(cfg.optim, dev):
                return task.loss(m, utts, dev, dtype, gen)

        entropies = measure_entropy(model, targets, batches, forward, side=ent.side, order=ent.order)
    entropies = all_gather_objects(entropies)[0]
    return allocate_ranks(sharpen(entropies, ent.sharpness), budget, ent.r_min, ent.r_max), entropies


def adalora_schedule(steps: int, warmup: int, a: AdaLoRASettings) -> dict[str, int]:
    """peft's tinit, tfinal, deltaT and total_step for a budget of `steps` optimiser steps.

    Pruning (peft prunes at steps tinit+1 .. total_step−tfinal) starts after the learning-rate warm-up and
    after tinit_fraction of the steps, and ends tfinal_fraction of the steps before the end; deltaT spreads at
    most `reallocations` re-allocations over the pruning phase. Always leaves at least one pruning step.
    """
    if steps < 3:
        raise ConfigError(f"lora.kind: AdaLoRA needs at least 3 training steps (warm-up, pruning, final), got {steps}")
    tfinal = min(steps - 2, max(1, math.ceil(a.tfinal_fraction * steps)))
    tinit = min(steps - tfinal - 1, max(warmup, math.ceil(a.tinit_fraction * steps)))
    pruning = steps - tfinal - tinit
    return {"tinit": tinit, "tfinal": tfinal, "deltaT": max(1, pruning // a.reallocations), "total_step": steps}


def adalora_config(names: list[str], cfg: QLoRAConfig) -> Any:
    """peft AdaLoraConfig at the budget of uniform rank lora.r, with the schedule scaled to optim.max_steps.

    peft scales AdaLoRA's update by lora_alpha / init_r (its `ranknum` stays at init_r), LoRA's by alpha / r;
    lora_alpha is raised by init_r / r so each direction gets the same scale as in uniform LoRA of rank r.
    """
    from peft import AdaLoraConfig

    lora, a = cfg.lora, cfg.adalora
    init_r = max(lora.r + 1, math.ceil(a.init_r_factor * lora.r))
    return AdaLoraConfig(
        target_r=lora.r, init_r=init_r, lora_alpha=lora.alpha * init_r / lora.r, lora_dropout=lora.dropout,
        orth_reg_weight=a.orth_reg_weight, target_modules=names,
        **adalora_schedule(cfg.optim.max_steps, cfg.optim.warmup_steps, a),
    )


def adalora_state(model: torch.nn.Module) -> ExtraState:
    """AdaLoRA's own training state (importance scores and their moving averages, the rank pattern so far),
    which a resumed run needs to prune as the uninterrupted run would."""
    peft_model = unwrap(model)

    def get() -> dict[str, Any]:
        alloc, config = peft_model.base_model.rankallocator, peft_model.peft_config["default"]
        return {"ipt": alloc.ipt, "exp_avg_ipt": alloc.exp_avg_ipt, "exp_avg_unc": alloc.exp_avg_unc,
                "rank_pattern": config.rank_pattern}

    def put(state: dict[str, Any]) -> None:
        alloc, config = peft_model.base_model.rankallocator, peft_model.peft_config["default"]
        alloc.ipt, alloc.exp_avg_ipt, alloc.exp_avg_unc = state["ipt"], state["exp_avg_ipt"], state["exp_avg_unc"]
        config.rank_pattern = state["rank_pattern"]

    return get, put


def adalora_ranks(model: torch.nn.Module, targets: list[str]) -> dict[str, int]:
    """Rank each adapted module ended with: its unpruned singular values in AdaLoRA's rank pattern
    (keys are lora_E parameter names), else its full lora_E (a module never pruned)."""
    pattern = unwrap(model).peft_config["default"].rank_pattern or {}
    kept = {key.split(".lora_E")[0]: sum(bool(x) for x in mask) for key, mask in pattern.items()}
    ranks: dict[str, int] = {}
    for name, module in unwrap(model).named_modules():
        full = getattr(module, "lora_E", None)
        match = [t for t in targets if name.endswith(t)]
        if full is None or "default" not in full or not match:
            continue
        own = [k for k in kept if name.endswith(k) or k.endswith(match[0])]
        ranks[match[0]] = kept[own[0]] if own else int(full["default"].shape[0])
    return ranks


# --------------------------------------------------------------------------- set-up, training, evaluation, report


@dataclass
class Setup:
    """Everything `setup` builds for one run: data, model (wrapped for DDP when there are several workers), task."""

    cfg: QLoRAConfig
    dev: torch.device
    splits: Splits
    source: str
    model: torch.nn.Module
    """The model with its adapters (what is saved)."""
    wrapped: torch.nn.Module
    """`model`, or DDP around it (what is trained and evaluated)."""
    task: WhisperSeq2Seq | CTC
    targets: list[str]
    """Names of the modules that get adapters."""
    dtype: torch.dtype
    """dtype of the model's inputs (its convolution weights')."""
    window_s: float
    """The Whisper encoder's window (0 for wav2vec2)."""
    counts: dict[str, float]
    ranks: dict[str, int]
    """Entropy-allocated rank per module (empty unless entropy.enabled)."""
    calibration: dict[str, float]
    """Calibration entropy per module (empty unless entropy.enabled)."""


def setup(cfg: QLoRAConfig) -> Setup:
    """Load the data and the base model at its precision, shorten Whisper's window, allocate ranks, add adapters."""
    dev = device()
    seed_everything(cfg.seed)
    source = assets.resolve_model(cfg.model)
    mcfg = assets.load_model_config(source)
    family = family_of(mcfg)
    splits = load_splits(cfg.data)
    model = load_base_model(source, family, cfg.precision, dev)
    task: WhisperSeq2Seq | CTC
    if family == "whisper":
        window_s = splits.encoder_window_s
        shrink_whisper_encoder(model, window_positions(window_s))
        task = WhisperSeq2Seq(source, window_s, cfg.eval.max_new_tokens, language=cfg.data.language,
                              spec_augment=cfg.spec_augment)
    else:
        window_s = 0.0
        model.config.mask_time_prob = 0.05 if cfg.spec_augment.enabled else 0.0
        task = CTC(source)

    check_lora_against_model(cfg.lora, mcfg)
    targets = target_module_names(model, family, cfg.lora, stack_depths(mcfg, family))
    dtype = input_dtype(model)
    ranks: dict[str, int] = {}
    calibration: dict[str, float] = {}
    if cfg.entropy.enabled:
        ranks, calibration = allocate_entropy_ranks(cfg, task, model, targets, splits.train, dev, dtype)
    if cfg.lora.enabled and cfg.lora.kind == "adalora":
        from peft import get_peft_model

        model = get_peft_model(model, adalora_config(targets, cfg))
    elif cfg.lora.enabled:
        model = add_lora(model, targets, cfg.lora, rank_pattern=lora_rank_pattern(ranks))
    else:
        enable_full_finetuning(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return Setup(cfg, dev, splits, source, model, data_parallel(model, dev), task, targets, dtype, window_s,
                 param_counts(model), ranks, calibration)


def train(s: Setup) -> tuple[list[dict[str, float]], Stepper | None]:
    """Train for `optim.max_steps` steps; returns the per-step history and the stepper (None with 0 steps)."""
    cfg, steps = s.cfg, s.cfg.optim.max_steps
    if steps == 0:
        return [], None
    rank, size = world()
    adalora = cfg.lora.enabled and cfg.lora.kind == "adalora"
    optim = replace(cfg.optim, lr=cfg.optim.lr * cfg.adalora.lr_scale) if adalora else cfg.optim
    stepper = Stepper(optim, [p for p in s.model.parameters() if p.requires_grad], s.dev, s.wrapped)
    batches = epoch_batches([len(u["audio"]) for u in s.splits.train], cfg.optim.batch_size, cfg.seed, rank, size)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    ent = cfg.entropy
    # Forward hooks on the adapted modules, only when the entropy term or its logging needs their activations.
    collector = ActivationCollector(s.model, s.targets if ent.lambda_ != 0 or ent.log_every > 0 else [], side=ent.side)
    collector.attach()
    last_micro = cfg.optim.grad_accum - 1

    def micro_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        utts = [s.splits.train[i] for i in next(batches)]
        loss = s.task.loss(s.wrapped, utts, s.dev, s.dtype, gen)
        return add_entropy_term(loss, collector.activations, ent.lambda_, ent.order, ent.max_tokens), {}

    def after_backward(micro: int) -> dict[str, float]:
        logged = {}
        if ent.logs(stepper.steps_done + 1) and micro == last_micro:
            logged = entropy_metrics(collector.entropies(ent.order, ent.max_tokens))
        collector.clear()
        return logged

    def before_step(step: int) -> None:
        collector.active = ent.collects(step)  # activations are kept only on steps that use or log them

    def after_update(step: int) -> None:
        if adalora:  # prunes ranks by importance: needs the gradients
            s.model.base_model.update_and_allocate(step)

    ckpt = Checkpointer(optim.checkpoint_every, {"model": s.model}, total_steps=steps,
                        extra=adalora_state(s.model) if adalora else None)
    s.wrapped.train()
    fit(ckpt, stepper, micro_loss, streams={"train": batches}, generators={"augment": gen},
        validate=validator(s.task, s.wrapped, s.splits.val, cfg.eval.batch_size, s.dev, s.dtype),
        eval_every=cfg.eval.every, before_step=before_step,
        after_backward=after_backward, after_update=after_update)
    collector.detach()
    return ckpt.history, stepper


def measure(s: Setup, history: list[dict[str, float]], stepper: Stepper | None) -> Outcome:
    """The deployed size, the ranks the adapters ended with, and the rank-0 artifacts particular to QLoRA."""
    cfg = s.cfg
    files = assets.model_files_dir(s.source)
    size_parts = deployed_size_bytes(s.model, assets.stored_itemsize(files))
    metrics = {"encoder_window_s": s.window_s, "lora_targets": float(len(s.targets) if cfg.lora.enabled else 0)}
    ranks = s.ranks
    if cfg.lora.enabled and cfg.lora.kind == "adalora" and stepper:  # ranks AdaLoRA kept, from its own record
        ranks = adalora_ranks(s.model, s.targets)
    if ranks:
        metrics["lora_rank_total"] = float(sum(ranks.values()))
        metrics.update({f"lora_rank_{k}": v for k, v in rank_spread(ranks).items()})
    if s.calibration:
        metrics["calibration_entropy_mean"] = sum(s.calibration.values()) / len(s.calibration)
    json_files: dict[str, Any] = {"size_breakdown.json": size_parts}
    if ranks:
        json_files["rank_allocation.json"] = {n: {"entropy": s.calibration.get(n), "rank": ranks[n]} for n in s.targets
                                              if n in ranks}

    def save(out: Path) -> None:
        if ranks:
            spread = rank_spread(ranks)
            how = "AdaLoRA, after pruning" if cfg.lora.kind == "adalora" else f"entropy^{cfg.entropy.sharpness:g}"
            entropy_heatmap(ranks, out / "lora_ranks.png",
                            title=f"LoRA ranks ({how}; total {sum(ranks.values())}, min {spread['min']:g}, "
                                  f"max {spread['max']:g}, Gini {spread['gini']:.2f})")
        if s.calibration:
            entropy_heatmap(s.calibration, out / "calibration_entropy.png", title="activation entropy (nats), calibration")
        if cfg.save_adapter and stepper:
            unwrap(s.wrapped).save_pretrained(out / ("adapter" if cfg.lora.enabled else "model"))

    return Outcome(s.task, s.wrapped, s.dev, s.dtype, cfg.eval.batch_size, val=s.splits.val, test=s.splits.test,
                   natural=load_natural(cfg.data.source, cfg.data.eval_split, cfg.data.max_eval_items),
                   natural_val=load_natural_val(cfg.data),
                   size_bytes=size_parts["total"], original_bytes=assets.stored_bytes(files), counts=s.counts,
                   stepper=stepper, metrics=metrics, json_files=json_files, save=save)


# --------------------------------------------------------------------------- using the result: transcribe, export


def load_result(trial: Trial, dev: torch.device, *, merged: bool = False) -> tuple[QLoRAConfig, str, Family, torch.nn.Module]:
    """(config, base source, family, model) of a finished trial: the base at its trained precision with the
    adapter, or the fully fine-tuned weights; Whisper's encoder cut to the trained window. `merged`: the
    quantised layers dequantised (the weights the adapter was trained against) and the adapter merged in."""
    cfg = trial.parsed(parse_config)
    if cfg.optim.max_steps == 0 or not cfg.save_adapter:
        raise ArtifactError(f"{trial.path}: this trial saved no trained weights "
                            f"({'optim.max_steps is 0' if cfg.optim.max_steps == 0 else 'save_adapter is false'})")
    source = assets.resolve_model(cfg.model)
    family = family_of(assets.load_model_config(source))
    if not cfg.lora.enabled:
        from transformers import AutoModelForCTC, WhisperForConditionalGeneration

        cls = WhisperForConditionalGeneration if family == "whisper" else AutoModelForCTC
        model = cls.from_pretrained(trial.file("model", "save_adapter writes it"), dtype="auto").to(dev)
        return cfg, source, family, model.eval()
    from peft import PeftModel

    adapter = trial.file("adapter", "save_adapter writes it")
    model = load_base_model(source, family, cfg.precision, dev)
    if family == "whisper":
        shrink_whisper_encoder(model, window_positions(trial.window_s))
    if merged:
        dequantise_linears(model)
    model = PeftModel.from_pretrained(model, str(adapter))
    return cfg, source, family, (model.merge_and_unload() if merged else model).eval()


def recogniser(artifacts: Path, device: torch.device) -> Recogniser:
    """The trial's model as it was evaluated (quantised base + adapter), decoding with its own task."""
    trial = read_trial(artifacts)
    cfg, source, family, model = load_result(trial, device)
    task = (WhisperSeq2Seq(source, trial.window_s, cfg.eval.max_new_tokens, language=cfg.data.language)
            if family == "whisper" else CTC(source))
    return TaskRecogniser(task, model, device, input_dtype(model), trial.window_s, cfg.eval.batch_size)


def export(artifacts: Path, out_dir: Path, adapter_only: bool = False) -> str:
    """A standard transformers folder: the adapter merged into the dequantised base at fp16, with its processor
    (Whisper's features padded to the trained window); or, `adapter_only`, the peft adapter naming its base."""
    trial = read_trial(artifacts)
    cfg = trial.parsed(parse_config)
    out = prepare_out_dir(out_dir)
    base = published_name(cfg.model)
    window = trial.window_s
    if adapter_only:
        if not cfg.lora.enabled:
            raise ArtifactError(f"{trial.path}: --adapter-only: this trial fine-tuned every weight "
                                "(lora.enabled is false); export the whole model")
        copy_adapter(trial, out, base)
        write_manifest(out, trial, "qlora", "peft_adapter", base=base, precision=to_dict(cfg.precision),
                       encoder_window_s=window)
        note = f"; it was trained with Whisper's encoder cut to {window:g} s (50 positions a second)" if window else ""
        return (f"qlora: the peft LoRA adapter for {base} (trained on its {cfg.precision.bits}-bit base) in {out}{note}; "
                f"load with peft.PeftModel.from_pretrained(<the base model>, '{out}')")
    cfg, source, family, model = load_result(trial, torch.device("cpu"), merged=True)
    if family == "whisper":
        seconds = exported_window(window)
        widen_whisper_window(model.get_encoder(), model.config, seconds, assets.model_files_dir(source).as_posix())
        processor = whisper_processor(source, seconds)
        exported_generation(model.generation_config, cfg.eval.max_new_tokens, cfg.data.language)
    else:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(source)
    model.to(torch.float16).save_pretrained(out)
    processor.save_pretrained(out)
    what = "the fully fine-tuned model" if not cfg.lora.enabled else (
        f"the LoRA adapter merged into the {cfg.precision.bits}-bit base it was trained on (dequantised)")
    window_note = ""
    if family == "whisper" and seconds != window:
        window_note = (f"; encoder window widened from {window:g} s to {seconds} s, the window platform.transcribe "
                       "decodes at (whole seconds, at least the natural-voice window)")
    write_manifest(out, trial, "qlora", "transformers", base=base, dtype="float16")
    return (f"qlora: {what}, at fp16, with its processor, in {out}{window_note}; "
            f"load with transformers.pipeline('automatic-speech-recognition', model='{out}')")


# --------------------------------------------------------------------------- the method contract

CONFIG = QLoRAConfig
MAX_WORKERS: int | None = None  # data-parallel over any number of Ray Train workers (DDP)
parse_config, run, train_loop_per_worker, finish = entry_points(CONFIG, setup, train, measure)
# baseline_config (the untuned model's config) is defined with the config, above; recogniser and export
# (a finished trial's result, transcribing and exported) just above.

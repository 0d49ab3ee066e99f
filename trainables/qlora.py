"""QLoRA fine-tuning of a speech recogniser, as a Ray Train train loop.

The base model (Whisper, sequence-to-sequence; or wav2vec2, CTC) is frozen at 4-bit NF4/FP4
(optionally double-quantised), 8-bit, 16-bit or 32-bit precision, and LoRA adapters are trained on
the module kinds, stacks and layers the config names. `optim.max_steps = 0` evaluates the
untuned model. Run it in-process with `run(config)` or on Ray Train workers with
`train_loop_per_worker(config)`; either way it reports every metric of the MLflow contract.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from trainables import assets
from trainables.batching import (
    SpecAugmentConfig,
    WhisperFeatures,
    ctc_batch,
    epoch_batches,
    length_buckets,
    spec_augment,
    whisper_labels,
)
from trainables.config import ConfigError, build, require, to_dict
from trainables.data import DataConfig, load_speech
from trainables.entropy import (
    ActivationCollector,
    EntropyConfig,
    add_entropy_term,
    allocate_ranks,
    entropy_heatmap,
    entropy_metrics,
    lora_rank_pattern,
    measure_entropy,
)
from trainables.evaluation import evaluate, unwrap
from trainables.metrics import MB, deployed_size_bytes, param_counts, peak_host_mem_mb, peak_vram_mb
from trainables.models import (
    LoraConfig,
    PrecisionConfig,
    add_lora,
    check_lora_against_model,
    check_precision_with_lora,
    enable_full_finetuning,
    family_of,
    load_base_model,
    shrink_whisper_encoder,
    stack_depths,
    target_module_names,
    window_positions,
)
from trainables.training import (
    OptimConfig,
    Throughput,
    all_gather_objects,
    artifact_dir,
    autocast,
    device,
    grad_scaler,
    make_optimizer,
    reduce_max,
    report,
    seed_everything,
    warmup_cosine,
    world,
)


@dataclass
class QLoRAConfig:
    """One QLoRA training run."""

    model: str = "whisper-tiny.en"
    """Offline model asset name, local model directory, or hub id (e.g. openai/whisper-small)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data."""
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
    encoder_window_s: float = 0.0
    """Whisper encoder window in seconds; 0 = the longest utterance of the data, rounded up to 0.5 s; 30 = Whisper's own."""
    eval_every: int = 0
    """Evaluate on the validation split every this many steps (0 = only at the end)."""
    eval_batch_size: int = 16
    """Utterances per decoding batch."""
    max_new_tokens: int = 96
    """Longest transcript decoded, in tokens."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    save_adapter: bool = True
    """Save the adapter (or fully fine-tuned weights) as an artifact."""
    seed: int = 0
    """Seed of initialisation, data order and masks."""

    def check(self) -> None:
        require(0 <= self.encoder_window_s <= 30, "encoder_window_s", f"must be in [0, 30], got {self.encoder_window_s}")
        require(self.eval_every >= 0, "eval_every", "must be >= 0")
        require(self.eval_batch_size >= 1, "eval_batch_size", "must be at least 1")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        check_precision_with_lora(self.precision, self.lora)
        require(self.lora.enabled or not self.entropy.enabled, "entropy.enabled", "rank allocation needs lora.enabled")
        require(not (self.entropy.enabled and self.lora.kind == "adalora"), "entropy.enabled",
                "entropy allocation and AdaLoRA both set the ranks; choose one")
        assets.check_model_source(self.model, "model")
        assets.check_data_source(self.data.source, "data.source")
        model_config = assets.model_config_if_local(self.model)
        if model_config is not None:
            check_lora_against_model(self.lora, model_config)


def parse_config(config: dict[str, Any]) -> QLoRAConfig:
    return build(QLoRAConfig, config)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point."""
    run(parse_config(config))


class _Whisper:
    """Whisper-specific batching, loss and decoding."""

    def __init__(self, cfg: QLoRAConfig, source: str, window_s: float) -> None:
        from transformers import WhisperProcessor

        self.processor = WhisperProcessor.from_pretrained(source)
        self.features = WhisperFeatures(self.processor.feature_extractor, window_s)
        self.cfg = cfg

    def loss(self, model: torch.nn.Module, utts: list[dict], gen: torch.Generator, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
        feats, frames = self.features.batch(utts)
        feats = spec_augment(feats.clone(), frames, self.cfg.spec_augment, gen)
        start = model_config(model).decoder_start_token_id
        labels = whisper_labels(self.processor.tokenizer, [u["text"] for u in utts], start, self.cfg.max_new_tokens)
        return model(input_features=feats.to(dev, dtype), labels=labels.to(dev)).loss

    @torch.no_grad()
    def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        feats, _ = self.features.batch(utts)
        ids = model.generate(input_features=feats.to(dev, dtype), max_new_tokens=self.cfg.max_new_tokens)
        return [t.strip() for t in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class _CTC:
    """wav2vec2-style CTC batching, loss and greedy decoding."""

    def __init__(self, cfg: QLoRAConfig, source: str) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(source)
        self.cfg = cfg

    def loss(self, model: torch.nn.Module, utts: list[dict], gen: torch.Generator, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
        batch = ctc_batch(self.processor, utts)
        return model(input_values=batch["input_values"].to(dev, dtype), attention_mask=batch["attention_mask"].to(dev),
                     labels=batch["labels"].to(dev)).loss

    @torch.no_grad()
    def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        batch = ctc_batch(self.processor, utts)
        logits = model(input_values=batch["input_values"].to(dev, dtype), attention_mask=batch["attention_mask"].to(dev)).logits
        return [t.strip() for t in self.processor.batch_decode(logits.argmax(-1))]


def model_config(model: torch.nn.Module) -> Any:
    inner = model.module if hasattr(model, "module") else model
    return inner.config


def allocate_entropy_ranks(cfg: QLoRAConfig, task: Any, model: torch.nn.Module, targets: list[str], train: list[dict],
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
                return task.loss(m, utts, gen, dev, dtype)

        entropies = measure_entropy(model, targets, batches, forward, side=ent.side, order=ent.order)
    entropies = all_gather_objects(entropies)[0]
    return allocate_ranks(entropies, budget, ent.r_min, ent.r_max), entropies


def run(cfg: QLoRAConfig) -> dict[str, float]:
    """Train and evaluate; returns the final metrics (also reported to Ray Train when inside it)."""
    dev = device()
    rank, size = world()
    seed_everything(cfg.seed)
    source = assets.resolve_model(cfg.model)
    mcfg = assets.load_model_config(source)
    family = family_of(mcfg)

    train = load_speech(cfg.data.source, cfg.data.train_split, max_items=cfg.data.max_train_items,
                        hub_config=cfg.data.hub_config)
    val = load_speech(cfg.data.source, cfg.data.val_split, max_items=cfg.data.max_val_items, hub_config=cfg.data.hub_config)
    test = load_speech(cfg.data.source, cfg.data.eval_split, max_items=cfg.data.max_eval_items,
                       hub_config=cfg.data.hub_config)

    model = load_base_model(source, family, cfg.precision, dev)
    if family == "whisper":
        window_s = cfg.encoder_window_s or math.ceil(2 * max(len(u["audio"]) for u in train + val + test) / 16000) / 2
        shrink_whisper_encoder(model, window_positions(window_s))
        task: Any = _Whisper(cfg, source, window_s)
    else:
        window_s = 0.0
        model.config.mask_time_prob = 0.05 if cfg.spec_augment.enabled else 0.0
        task = _CTC(cfg, source)

    depths = stack_depths(mcfg, family)
    check_lora_against_model(cfg.lora, mcfg)
    targets = target_module_names(model, family, cfg.lora, depths)
    input_dtype = next(p for p in model.parameters() if p.is_floating_point() and p.dim() == 3).dtype  # conv weights
    ranks: dict[str, int] = {}
    calibration: dict[str, float] = {}
    if cfg.entropy.enabled:
        ranks, calibration = allocate_entropy_ranks(cfg, task, model, targets, train, dev, input_dtype)
    if cfg.lora.enabled:
        model = add_lora(model, targets, cfg.lora, rank_pattern=lora_rank_pattern(ranks), total_steps=cfg.optim.max_steps)
    else:
        enable_full_finetuning(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    counts = param_counts(model)

    trainable = [p for p in model.parameters() if p.requires_grad]
    wrapped: torch.nn.Module = model
    if size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    history: list[dict[str, float]] = []
    timer = Throughput()
    steps = cfg.optim.max_steps
    if steps > 0:
        optimizer = make_optimizer(cfg.optim, trainable, dev)
        schedule = warmup_cosine(optimizer, cfg.optim.warmup_steps, steps)
        scaler = grad_scaler(cfg.optim, dev)
        batches = epoch_batches([len(u["audio"]) for u in train], cfg.optim.batch_size, cfg.seed, rank, size)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
        hooked = targets if cfg.entropy.lambda_ != 0 or cfg.entropy.log_every > 0 else []
        collector = ActivationCollector(model, hooked, side=cfg.entropy.side).attach()
        wrapped.train()
        for step in range(1, steps + 1):
            loss_sum = 0.0
            logged: dict[str, float] = {}
            collector.active = cfg.entropy.collects(step)
            with timer.step(cfg.optim.batch_size * cfg.optim.grad_accum * size):
                for micro in range(cfg.optim.grad_accum):
                    utts = [train[i] for i in next(batches)]
                    sync = micro == cfg.optim.grad_accum - 1 or size == 1
                    ctx = wrapped.no_sync() if not sync else contextlib.nullcontext()
                    with ctx, autocast(cfg.optim, dev):
                        loss = add_entropy_term(task.loss(wrapped, utts, gen, dev, input_dtype), collector.activations,
                                                cfg.entropy.lambda_, cfg.entropy.order, cfg.entropy.max_tokens)
                        loss = loss / cfg.optim.grad_accum
                    with ctx:
                        scaler.scale(loss).backward()
                    loss_sum += float(loss.detach())
                    if cfg.entropy.logs(step) and micro == cfg.optim.grad_accum - 1:
                        logged = entropy_metrics(collector.entropies(cfg.entropy.order, cfg.entropy.max_tokens))
                    collector.clear()
                scaler.unscale_(optimizer)
                if cfg.optim.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                if cfg.lora.enabled and cfg.lora.kind == "adalora":  # prune ranks by importance, needs the gradients
                    model.base_model.update_and_allocate(step)
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
            point = {"step": step, "loss": loss_sum, "lr": schedule.get_last_lr()[0], **logged}
            history.append(point)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < steps:
                v = evaluate(task, wrapped, val, cfg.eval_batch_size, dev, input_dtype)
                report({**point, "val_wer": v["wer"], "val_cer": v["cer"]})
        collector.detach()

    v = evaluate(task, wrapped, val, cfg.eval_batch_size, dev, input_dtype)
    final = evaluate(task, wrapped, test, cfg.eval_batch_size, dev, input_dtype)
    files = assets.model_files_dir(source)
    stored_itemsize = assets.stored_itemsize(files)
    original = assets.stored_bytes(files)
    size_parts = deployed_size_bytes(model, stored_itemsize)
    metrics: dict[str, float] = {
        "step": steps,
        "loss": history[-1]["loss"] if history else float("nan"),
        "wer": final["wer"], "cer": final["cer"], "val_wer": v["wer"], "val_cer": v["cer"],
        "train_samples_per_s": timer.rate if steps > 0 else 0.0,
        "peak_vram_mb": reduce_max(peak_vram_mb()),
        "peak_host_mem_mb": reduce_max(peak_host_mem_mb()),
        "model_size_mb": size_parts["total"] / MB,
        "compression_ratio": original / size_parts["total"],
        "latency_ms_per_utt": final["latency_ms_per_utt"], "rtf": final["rtf"],
        "encoder_window_s": window_s, "lora_targets": float(len(targets) if cfg.lora.enabled else 0),
        **{k: float(x) for k, x in counts.items()},
    }
    if cfg.lora.enabled and cfg.lora.kind == "adalora" and steps > 0:  # ranks AdaLoRA kept, from its own record
        pattern = model.peft_config["default"].rank_pattern or {}
        metrics["lora_rank_total"] = float(sum(sum(bool(x) for x in mask) for mask in pattern.values()))
    if ranks:
        metrics["lora_rank_total"] = float(sum(ranks.values()))
        metrics["calibration_entropy_mean"] = sum(calibration.values()) / len(calibration)
    out = None
    if rank == 0:
        out = artifact_dir()
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "history.json").write_text(json.dumps(history))
        (out / "size_breakdown.json").write_text(json.dumps(size_parts, indent=2))
        if ranks:
            allocation = {n: {"entropy": calibration[n], "rank": ranks[n]} for n in targets}
            (out / "rank_allocation.json").write_text(json.dumps(allocation, indent=2))
            entropy_heatmap(ranks, out / "lora_ranks.png", title=f"LoRA ranks (total {sum(ranks.values())})")
            entropy_heatmap(calibration, out / "calibration_entropy.png", title="activation entropy (nats), calibration")
        with open(out / "hypotheses.jsonl", "w") as fh:
            for row in final["rows"]:
                fh.write(json.dumps(row) + "\n")
        if cfg.save_adapter and steps > 0:
            unwrap(wrapped).save_pretrained(out / ("adapter" if cfg.lora.enabled else "model"))
    report(metrics, out)
    return metrics


CONFIG = QLoRAConfig


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The untuned model as released: full precision, no adapter, Whisper's own 30 s window, no training."""
    from trainables.config import merge

    return merge(config, {"precision": {"bits": 32}, "lora": {"enabled": False}, "encoder_window_s": 30.0,
                          "optim": {"max_steps": 0, "warmup_steps": 0}, "save_adapter": False})

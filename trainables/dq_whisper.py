"""DQ-Whisper: joint distillation and quantisation-aware training of a smaller Whisper student.

A Whisper teacher is distilled into a student that either keeps a maximally spaced subset of the
teacher's own layers (as distil-whisper does: with 2 of 6 decoder layers, layers 0 and 5), or is a
smaller pretrained checkpoint with the teacher's tokenizer. The loss is

    (1 − α)·CE + α·(T²·KL(teacher ‖ student at temperature T) + hidden_weight·relative hidden-state MSE)

and with α = 0 it is exactly the cross-entropy, and the teacher is never loaded.

Teacher outputs are computed once per (teacher, data, split, items, window, top-k, ...) and cached
on disk (trainables.assets.cache.build_once): per utterance, the top-k logits under teacher forcing (fp16
values + int32 token ids) and every decoder hidden state (fp16). The KL is taken against the
teacher distribution truncated to its top-k tokens and renormalised there (p̂, zero elsewhere):
KL(p̂ ‖ q) = Σ_top-k p̂·(log p̂ − log q), with q the student's full softmax, so it is a true KL
between two distributions, and the student is also pushed to put its mass on the teacher's support.

Hidden states: the student's decoder layer outputs are matched to the teacher's (static: student
layer i ↔ teacher layer 2i+1, clipped; dynamic: each student layer to the teacher layer nearest in
MSE on this batch; dynamic_monotonic: the same with non-decreasing teacher indices, by dynamic
programming). When the widths differ (a pretrained student), a trained linear map (not deployed)
projects student states to the teacher's width.

Quantisation-aware training fake-quantises every linear weight of the student's encoder and
decoder layers (per output channel, symmetric, learnable clipping scale, straight-through rounding)
at `quant.bits`; the first encoder layer and the last decoder layer stay at `quant.edge_bits`;
the decoder's token embedding, which Whisper ties to its output projection, is quantised per token
at `quant.embed_bits` (8 by default; it is a third of whisper-base's weights); positional
embeddings, norms, convolutions and biases are not quantised (fp16 when exported). The export packs
the integer weights (int8 storage at 8 bits, b-bit packing below: 4-bit two per byte) with fp16
per-channel scales into one safetensors file whose size on disk is `model_size_mb`.

The fake quantisation and the packed export are in trainables.dq_whisper_quant.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from trainables import assets
from trainables.assets.cache import build_once, cache_root, input_key
from trainables.blocks import progress
from trainables.blocks.batching import SpecAugmentConfig, epoch_batches
from trainables.blocks.checkpoints import Checkpointer
from trainables.blocks.config import ConfigError, merge, require
from trainables.blocks.data import DataConfig, Splits, load_natural, load_natural_val, load_splits
from trainables.blocks.evaluation import EvalConfig, validator
from trainables.blocks.finish import Outcome
from trainables.blocks.inference import (
    ArtifactError,
    Recogniser,
    TaskRecogniser,
    Trial,
    copy_loader,
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
from trainables.blocks.metrics import param_counts
from trainables.blocks.models import PrecisionConfig, load_base_model, shrink_whisper_encoder, window_positions
from trainables.blocks.noise import noisy_copies
from trainables.blocks.tasks import WhisperSeq2Seq
from trainables.blocks.training import OptimConfig, Stepper, device, seed_everything
from trainables.dq_whisper_quant import QuantConfig, add_fake_quant, export_quantised
from trainables.loaders.dq_whisper import dequantised_state_dict, model_from_state

# --------------------------------------------------------------------------- config

Matching = Literal["none", "static", "dynamic", "dynamic_monotonic"]
EVAL_NOISE_SEED = 12345
"""Seed of the noisy test copy (wer_noisy): the same noise in every trial, so hypotheses pair up."""


@dataclass
class StudentConfig:
    """How the student is made."""

    source: str = "teacher_layers"
    """teacher_layers (a subset of the teacher's layers), or a model with the teacher's tokenizer."""
    encoder_layers: int = 0
    """teacher_layers: encoder layers kept, maximally spaced (0 = all of the teacher's)."""
    decoder_layers: int = 2
    """teacher_layers: decoder layers kept, maximally spaced, first and last included (0 = all)."""

    def check(self) -> None:
        require(self.encoder_layers >= 0, "encoder_layers", f"must be >= 0 (0 = all), got {self.encoder_layers}")
        require(self.decoder_layers >= 0, "decoder_layers", f"must be >= 0 (0 = all), got {self.decoder_layers}")
        if self.source != "teacher_layers":
            assets.check_model_source(self.source, "source")


@dataclass
class DistillConfig:
    """Distillation loss."""

    alpha: float = 0.5
    """Weight of the distillation terms; 1 − alpha weighs the cross-entropy (0 = plain fine-tuning)."""
    temperature: float = 2.0
    """Softmax temperature T of the KL term (scaled by T²)."""
    top_k: int = 32
    """Teacher logits cached per token; the KL is over this renormalised top-k support."""
    matching: Matching = "dynamic"
    """Decoder hidden-state matching: none, static (i ↔ 2i+1), dynamic, dynamic_monotonic."""
    hidden_weight: float = 1.0
    """Weight of the hidden-state relative MSE (MSE ÷ the teacher layer's mean square) inside the distillation term."""

    def check(self) -> None:
        require(0.0 <= self.alpha <= 1.0, "alpha", f"must be in [0, 1], got {self.alpha}")
        require(self.temperature > 0, "temperature", f"must be positive, got {self.temperature}")
        require(1 <= self.top_k <= 1024, "top_k", f"must be in [1, 1024], got {self.top_k}")
        require(self.hidden_weight >= 0, "hidden_weight", f"must be >= 0, got {self.hidden_weight}")


@dataclass
class DQWhisperConfig:
    """One distillation + quantisation-aware training run."""

    teacher: str = "whisper-base"
    """Teacher: offline model asset, local directory, or hub id (e.g. openai/whisper-small)."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """How the student is made."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Loss weights, temperature and hidden-state matching."""
    quant: QuantConfig = field(default_factory=QuantConfig)
    """Quantisation-aware training and export precision."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_train_items=128))
    """Training and evaluation data, and the encoder window."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, max_steps=32, warmup_steps=4, batch_size=4))
    """Optimiser, schedule, batch and step budget."""
    spec_augment: SpecAugmentConfig = field(default_factory=lambda: SpecAugmentConfig(enabled=False))
    """Masking of the student's training features (the teacher's cached outputs are on clean features)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Decoding batch, transcript length (also the longest trained on) and evaluation during training."""
    eval_noise: Literal["white", "pink", "babble"] = "white"
    """Noise of the second test set (wer_noisy): white, pink, or babble from the other test utterances."""
    eval_snr_db: float = 10.0
    """SNR of the second test set in dB (the same seeded noise in every trial, so hypotheses pair up)."""
    save_model: bool = True
    """Save the packed quantised student as an artifact."""
    seed: int = 0
    """Seed of initialisation and data order."""

    def check(self) -> None:
        require(math.isfinite(self.eval_snr_db) and -20 <= self.eval_snr_db <= 60, "eval_snr_db",
                f"must be in [-20, 60] dB, got {self.eval_snr_db}")
        assets.check_model_source(self.teacher, "teacher")
        assets.check_data_source(self.data.source, "data.source")
        assets.check_model_language(self.teacher, self.data.language, "teacher")
        config = assets.model_config_if_local(self.teacher)
        if config is not None:
            require(config.get("model_type") == "whisper", "teacher", f"must be a Whisper model, not {config.get('model_type')}")
            for stack in ("encoder", "decoder"):
                n = getattr(self.student, f"{stack}_layers")
                require(n <= config[f"{stack}_layers"], f"student.{stack}_layers",
                        f"{n} is more than the teacher's {config[f'{stack}_layers']}")


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The teacher as released: every layer kept, unquantised, no training."""
    return merge(config, {"student": {"source": "teacher_layers", "encoder_layers": 0, "decoder_layers": 0},
                          "quant": {"bits": 16}, "distill": {"alpha": 0.0}, "data": {"encoder_window_s": 30.0},
                          "optim": {"max_steps": 0, "warmup_steps": 0}, "save_model": False})


# --------------------------------------------------------------------------- student construction


def spaced_layers(n_teacher: int, n_student: int) -> list[int]:
    """`n_student` teacher layer indices, maximally spaced with the first and last included (0 = all)."""
    if n_student in (0, n_teacher):
        return list(range(n_teacher))
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def student_from_teacher(teacher: torch.nn.Module, encoder_layers: int, decoder_layers: int) -> torch.nn.Module:
    """A new Whisper whose layers are copies of the teacher's maximally spaced layers (embeddings, norms, convs copied)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tcfg = teacher.config
    keep = {"encoder": spaced_layers(tcfg.encoder_layers, encoder_layers),
            "decoder": spaced_layers(tcfg.decoder_layers, decoder_layers)}
    scfg = WhisperConfig(**{**tcfg.to_dict(), "encoder_layers": len(keep["encoder"]), "decoder_layers": len(keep["decoder"])})
    student = WhisperForConditionalGeneration(scfg).to(next(teacher.parameters()).dtype)
    student.generation_config = teacher.generation_config
    state = {}
    for name, tensor in teacher.state_dict().items():
        parts = name.split(".")
        if len(parts) > 3 and parts[2] == "layers" and parts[1] in keep:
            old = int(parts[3])
            if old not in keep[parts[1]]:
                continue
            parts[3] = str(keep[parts[1]].index(old))
        state[".".join(parts)] = tensor.clone()
    student.load_state_dict(state, strict=False)
    student.model.encoder.embed_positions.weight.data.copy_(teacher.model.encoder.embed_positions.weight.data)
    return student


# --------------------------------------------------------------------------- losses


def kd_kl(student_logits: torch.Tensor, top_vals: torch.Tensor, top_idx: torch.Tensor, mask: torch.Tensor,
          temperature: float) -> torch.Tensor:
    """T²·KL(p̂ ‖ q) per valid token, averaged: p̂ = teacher softmax over its top-k at T, q = student softmax at T."""
    t = temperature
    log_q = F.log_softmax(student_logits.float() / t, dim=-1).gather(-1, top_idx)
    log_p = F.log_softmax(top_vals.float() / t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return t * t * (kl * mask).sum() / mask.sum().clamp_min(1)


def layer_costs(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """(n_student, n_teacher) relative MSE between every student and teacher layer's states over valid tokens.

    Each MSE is divided by the teacher layer's mean square: Whisper's decoder states grow by orders of
    magnitude from layer to layer (whisper-base's last ones are in the hundreds), and a raw MSE made the
    hidden term dwarf the KL and the cross-entropy (30 against 5 measured on whisper-base)."""
    m = mask[..., None].float()
    n = m.sum().clamp_min(1) * student[0].shape[-1]
    power = [((t.detach() ** 2) * m).sum().div(n).clamp_min(1e-8) for t in teacher]
    return torch.stack([torch.stack([(((s - t) ** 2) * m).sum() / n / p for t, p in zip(teacher, power, strict=True)])
                        for s in student])


def match_layers(costs: torch.Tensor, mode: Matching) -> list[int]:
    """Teacher layer for each student layer: static 2i+1 (clipped), dynamic argmin, or monotone argmin by DP."""
    n_s, n_t = costs.shape
    if mode == "static":
        return [min(2 * i + 1, n_t - 1) for i in range(n_s)]
    c = costs.detach().cpu().double()
    if mode == "dynamic":
        return [int(j) for j in c.argmin(dim=1)]
    best = c[0].clone()  # best[j]: least total cost of layers 0..i with layer i matched to j
    back = []
    for i in range(1, n_s):
        prefix, arg = torch.cummin(best, dim=0)
        back.append(arg)
        best = c[i] + prefix
    j = int(best.argmin())
    out = [j]
    for arg in reversed(back):
        j = int(arg[j])
        out.append(j)
    return out[::-1]


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor,
                mode: Matching) -> tuple[torch.Tensor, list[int]]:
    """Mean relative MSE between each student layer's output and its matched teacher layer's."""
    costs = layer_costs(student, teacher, mask)
    match = match_layers(costs, mode)
    return torch.stack([costs[i, j] for i, j in enumerate(match)]).mean(), match


def combine(ce: torch.Tensor, kd: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """(1 − α)·CE + α·KD; exactly CE (the same tensor) when α = 0."""
    if alpha == 0 or kd is None:
        return ce
    return (1 - alpha) * ce + alpha * kd


# --------------------------------------------------------------------------- batching, decoding, the teacher's cache


def teacher_cache(cfg: DQWhisperConfig, teacher_source: str, train: list[dict], window_s: float,
                  dev: torch.device) -> Path:
    """Teacher top-k logits and decoder hidden states of every training utterance, built once on disk."""
    inputs = {"teacher": teacher_source, "data": cfg.data.source, "hub_config": cfg.data.hub_config,
              "split": cfg.data.train_split, "max_items": cfg.data.max_train_items, "window_s": window_s,
              "top_k": cfg.distill.top_k, "max_new_tokens": cfg.eval.max_new_tokens, "n": len(train),
              "language": cfg.data.language, "version": 2}  # 2: a multilingual teacher's labels name the language
    target = cache_root() / "teacher-outputs" / f"{Path(teacher_source).name}-{input_key(inputs)}"

    def build_cache(out: Path) -> None:
        teacher = load_base_model(teacher_source, "whisper", PrecisionConfig(bits=32), dev).eval()
        shrink_whisper_encoder(teacher, window_positions(window_s))
        task = WhisperSeq2Seq(teacher_source, window_s, cfg.eval.max_new_tokens, language=cfg.data.language)
        index = {}
        for start in progress.tracked(range(0, len(train), 8), "teacher outputs (once)"):
            utts = train[start : start + 8]
            feats, _ = task.features.batch(utts)
            labels = task.labels(teacher, [u["text"] for u in utts], task.languages(utts))
            with torch.no_grad():
                o = teacher(input_features=feats.to(dev), labels=labels.to(dev), output_hidden_states=True)
            vals, idx = o.logits.float().topk(cfg.distill.top_k, dim=-1)
            hidden = torch.stack(o.decoder_hidden_states[1:], dim=1)  # (batch, layers, tokens, d)
            for b, u in enumerate(utts):
                n = int((labels[b] != -100).sum())
                name = f"{len(index):06d}.npz"
                np.savez(out / name, vals=vals[b, :n].cpu().half().numpy(), idx=idx[b, :n].cpu().int().numpy(),
                         hidden=hidden[b, :, :n].cpu().half().numpy())
                index[u["id"]] = name
        (out / "index.json").write_text(json.dumps(index))

    return build_once(target, build_cache, inputs)


def load_teacher_batch(cache: Path, index: dict[str, str], utts: list[dict], width: int,
                       dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded (batch, width, k) top-k values/ids and (batch, layers, width, d) hidden states."""
    rows = [np.load(cache / index[u["id"]]) for u in utts]
    k, (n_l, _, d) = rows[0]["vals"].shape[1], rows[0]["hidden"].shape
    vals = torch.zeros(len(rows), width, k)
    idx = torch.zeros(len(rows), width, k, dtype=torch.long)
    hidden = torch.zeros(len(rows), n_l, width, d)
    for b, r in enumerate(rows):
        n = r["vals"].shape[0]
        vals[b, :n] = torch.from_numpy(r["vals"].astype(np.float32))
        idx[b, :n] = torch.from_numpy(r["idx"].astype(np.int64))
        hidden[b, :, :n] = torch.from_numpy(r["hidden"].astype(np.float32))
    return vals.to(dev), idx.to(dev), hidden.to(dev)


def _check_same_tokenizer(teacher_source: str, student_source: str) -> None:
    from transformers import WhisperTokenizer

    a = WhisperTokenizer.from_pretrained(teacher_source).get_vocab()
    b = WhisperTokenizer.from_pretrained(student_source).get_vocab()
    if a != b:
        raise ConfigError(f"student.source: its tokenizer differs from the teacher's ({len(b)} vs {len(a)} tokens); "
                          "logit distillation needs a shared vocabulary (use teacher_layers or a same-tokenizer model)")


def build_student(cfg: DQWhisperConfig, teacher_source: str, dev: torch.device) -> torch.nn.Module:
    if cfg.student.source == "teacher_layers":
        teacher = load_base_model(teacher_source, "whisper", PrecisionConfig(bits=32), dev)
        student = student_from_teacher(teacher, cfg.student.encoder_layers, cfg.student.decoder_layers)
        del teacher
    else:
        source = assets.resolve_model(cfg.student.source)
        _check_same_tokenizer(teacher_source, source)
        student = load_base_model(source, "whisper", PrecisionConfig(bits=32), dev)
    return student.to(dev)


# --------------------------------------------------------------------------- set-up, training, evaluation, report


@dataclass
class Setup:
    """Everything `setup` builds for one run: data, the fake-quantised student, the teacher's cached outputs."""

    cfg: DQWhisperConfig
    dev: torch.device
    splits: Splits
    teacher_source: str
    student: torch.nn.Module
    task: WhisperSeq2Seq
    bits: dict[str, int]
    """Quantised module name -> bits."""
    counts: dict[str, float]
    cache: Path | None
    """The teacher's outputs on the training split (None when α = 0 or nothing is trained)."""
    index: dict[str, str]
    """Utterance id -> its file in `cache`."""
    projection: torch.nn.Module | None
    """Trained map from the student's hidden width to the teacher's, when they differ (not deployed)."""


def setup(cfg: DQWhisperConfig) -> Setup:
    """Load the data, build the student from the teacher, fake-quantise it, and (for α > 0) cache the teacher's outputs."""
    dev = device()
    seed_everything(cfg.seed)
    teacher_source = assets.resolve_model(cfg.teacher)
    splits = load_splits(cfg.data)
    window_s = splits.encoder_window_s
    student = build_student(cfg, teacher_source, dev)
    shrink_whisper_encoder(student, window_positions(window_s))
    for p in student.parameters():
        p.requires_grad_(True)
    student.model.encoder.embed_positions.weight.requires_grad_(False)  # Whisper's fixed sinusoidal table
    bits = add_fake_quant(student, cfg.quant)
    task = WhisperSeq2Seq(teacher_source, window_s, cfg.eval.max_new_tokens, language=cfg.data.language,
                          spec_augment=cfg.spec_augment)
    cache, index, projection = None, {}, None
    if cfg.distill.alpha > 0 and cfg.optim.max_steps > 0:
        cache = teacher_cache(cfg, teacher_source, splits.train, window_s, dev)
        index = json.loads((cache / "index.json").read_text())
        t_width = assets.load_model_config(teacher_source)["d_model"]
        if t_width != student.config.d_model:
            projection = torch.nn.Linear(student.config.d_model, t_width).to(dev)
    return Setup(cfg, dev, splits, teacher_source, student, task, bits, param_counts(student), cache, index, projection)


def train(s: Setup) -> tuple[list[dict[str, float]], Stepper | None]:
    """Train for `optim.max_steps` steps; returns the per-step history and the stepper (None with 0 steps)."""
    cfg, steps, dist = s.cfg, s.cfg.optim.max_steps, s.cfg.distill
    if steps == 0:
        return [], None
    params = [p for p in s.student.parameters() if p.requires_grad] + (list(s.projection.parameters()) if s.projection else [])
    stepper = Stepper(cfg.optim, params, s.dev, s.student)
    batches = epoch_batches([len(u["audio"]) for u in s.splits.train], cfg.optim.batch_size, cfg.seed, 0, 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    use_teacher = s.cache is not None
    nan = float("nan")

    def micro_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        utts = [s.splits.train[i] for i in next(batches)]
        feats = s.task.inputs(utts, gen)  # SpecAugment-masked
        labels = s.task.labels(s.student, [u["text"] for u in utts])
        out = s.student(input_features=feats.to(s.dev), labels=labels.to(s.dev), output_hidden_states=use_teacher)
        if not use_teacher:  # no distillation term was computed
            return out.loss, {"ce_loss": float(out.loss.detach()), "kd_loss": nan, "kl": nan, "hidden_loss": nan}
        mask = (labels != -100).to(s.dev)
        vals, idx, t_hidden = load_teacher_batch(s.cache, s.index, utts, labels.shape[1], s.dev)
        kl = kd_kl(out.logits, vals, idx, mask, dist.temperature)
        kd, parts = kl, {"ce_loss": float(out.loss.detach()), "kl": float(kl.detach()), "hidden_loss": 0.0}
        if dist.matching != "none" and dist.hidden_weight > 0:
            s_h = [s.projection(h) if s.projection else h for h in out.decoder_hidden_states[1:]]
            hl, _ = hidden_loss(s_h, list(t_hidden.unbind(1)), mask, dist.matching)
            kd = kd + dist.hidden_weight * hl
            parts["hidden_loss"] = float(hl.detach())
        parts["kd_loss"] = float(kd.detach())
        return combine(out.loss, kd, dist.alpha), parts

    modules = {"student": s.student, **({"projection": s.projection} if s.projection else {})}
    ckpt = Checkpointer(cfg.optim.checkpoint_every, modules, total_steps=steps)
    s.student.train()
    fit(ckpt, stepper, micro_loss, streams={"train": batches}, generators={"augment": gen}, eval_every=cfg.eval.every,
        validate=validator(s.task, s.student, s.splits.val, cfg.eval.batch_size, s.dev, torch.float32))
    return ckpt.history, stepper


def measure(s: Setup, history: list[dict[str, float]], stepper: Stepper | None) -> Outcome:
    """Scored on the clean test split (the headline) and a noisy copy of it; the deployed size is the packed
    student's file, written once here and moved into the artifacts."""
    cfg = s.cfg
    packed = Path(tempfile.mkdtemp(prefix="dq-whisper-student-")) / "model.safetensors"
    parts = export_quantised(s.student, packed)
    last = history[-1] if history else {}
    metrics = {
        **{k: last.get(k, float("nan")) for k in ("ce_loss", "kd_loss", "kl", "hidden_loss")},
        "encoder_window_s": s.splits.encoder_window_s, "quantised_layers": float(len(s.bits)),
        "student_encoder_layers": float(s.student.config.encoder_layers),
        "student_decoder_layers": float(s.student.config.decoder_layers),
    }

    def save(out: Path) -> None:
        if cfg.save_model:
            (out / "student").mkdir()
            shutil.move(packed, out / "student" / "model.safetensors")
        shutil.rmtree(packed.parent, ignore_errors=True)

    noisy_test = noisy_copies(s.splits.test, cfg.eval_noise, cfg.eval_snr_db, EVAL_NOISE_SEED)
    return Outcome(s.task, s.student, s.dev, torch.float32, cfg.eval.batch_size, val=s.splits.val, test=s.splits.test,
                   test_name="clean", also={"noisy": noisy_test}, size_bytes=parts["file"],
                   natural=load_natural(cfg.data.source, cfg.data.eval_split, cfg.data.max_eval_items),
                   natural_val=load_natural_val(cfg.data),
                   original_bytes=assets.stored_bytes(assets.model_files_dir(s.teacher_source)), counts=s.counts,
                   stepper=stepper, metrics=metrics, json_files={"size_breakdown.json": parts}, save=save)


# --------------------------------------------------------------------------- using the result: transcribe, export


def student_config(cfg: DQWhisperConfig, teacher_source: str, state: dict[str, torch.Tensor]) -> Any:
    """The Whisper config of an exported student: its source's, with the layer counts and encoder window its
    weights have."""
    from transformers import WhisperConfig

    source = teacher_source if cfg.student.source == "teacher_layers" else assets.resolve_model(cfg.student.source)
    layers = {stack: len({k.split(".")[3] for k in state if k.startswith(f"model.{stack}.layers.")})
              for stack in ("encoder", "decoder")}
    return WhisperConfig.from_pretrained(source, encoder_layers=layers["encoder"], decoder_layers=layers["decoder"],
                                         max_source_positions=state["model.encoder.embed_positions.weight"].shape[0])


def load_result(trial: Trial, dev: torch.device) -> tuple[DQWhisperConfig, str, torch.nn.Module]:
    """(config, teacher source, model) of a finished trial: the student as exported (its packed file, dequantised
    by the loader shipped with exports), with its source's generation config."""
    from transformers import GenerationConfig

    cfg = trial.parsed(parse_config)
    if not cfg.save_model:
        raise ArtifactError(f"{trial.path}: this trial saved no student (save_model is false)")
    packed = trial.file("student/model.safetensors", "the packed quantised student")
    teacher_source = assets.resolve_model(cfg.teacher)
    state = dequantised_state_dict(packed)
    model = model_from_state(state, student_config(cfg, teacher_source, state))
    model.generation_config = GenerationConfig.from_pretrained(teacher_source)
    return cfg, teacher_source, model.to(dev)


def recogniser(artifacts: Path, device: torch.device) -> Recogniser:
    """The trial's student as deployed: its packed weights, dequantised."""
    trial = read_trial(artifacts)
    cfg, teacher_source, model = load_result(trial, device)
    task = WhisperSeq2Seq(teacher_source, trial.window_s, cfg.eval.max_new_tokens, language=cfg.data.language)
    return TaskRecogniser(task, model, device, torch.float32, trial.window_s, cfg.eval.batch_size)


def export(artifacts: Path, out_dir: Path, adapter_only: bool = False) -> str:
    """The student at its quantised precision (the packed file as measured by `model_size_mb`), its Whisper
    config, generation config and processor, and load_quantised.py (trainables/loaders/dq_whisper.py),
    which loads it into a transformers Whisper model."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    trial = read_trial(artifacts)
    if adapter_only:
        raise ArtifactError(f"{trial.path}: --adapter-only: dq_whisper trains the whole student, it has no adapter")
    out = prepare_out_dir(out_dir)
    cfg, teacher_source, model = load_result(trial, torch.device("cpu"))
    seconds = exported_window(trial.window_s)
    packed = trial.file("student/model.safetensors")
    with safe_open(str(packed), framework="pt") as fh:
        meta = fh.metadata() or {}
    bits = sorted({int(json.loads(v)["bits"]) for v in meta.values() if "bits" in json.loads(v)})
    if model.config.max_source_positions == 50 * seconds:
        shutil.copy(packed, out / "model.safetensors")
    else:  # widen the window: the packed file with a longer fp16 position table
        widen_whisper_window(model.get_encoder(), model.config, seconds, assets.model_files_dir(teacher_source).as_posix())
        with safe_open(str(packed), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        tensors["model.encoder.embed_positions.weight"] = model.model.encoder.embed_positions.weight.detach().half()
        save_file(tensors, str(out / "model.safetensors"), metadata=meta)
    model.config.save_pretrained(out)
    exported_generation(model.generation_config, cfg.eval.max_new_tokens, cfg.data.language)
    model.generation_config.save_pretrained(out)
    whisper_processor(teacher_source, seconds).save_pretrained(out)
    copy_loader("dq_whisper", out, "load_quantised.py")
    write_manifest(out, trial, "dq_whisper", "packed_quantised_whisper", loader="load_quantised.py", bits=bits,
                   teacher=published_name(cfg.teacher), encoder_window_s=seconds)
    size = (out / "model.safetensors").stat().st_size / 2**20
    return (f"dq_whisper: the quantised student ({'/'.join(map(str, bits)) or '16'}-bit weights packed, {size:.1f} MB), "
            f"its config, generation config and processor, and load_quantised.py (model, processor = load(folder): "
            f"a transformers Whisper model, weights dequantised in memory), in {out}")


# --------------------------------------------------------------------------- the method contract

CONFIG = DQWhisperConfig
MAX_WORKERS: int | None = 1  # one Ray Train worker per trial: the dynamic layer matching and the export are written for one process
parse_config, run, train_loop_per_worker, finish = entry_points(CONFIG, setup, train, measure)
# baseline_config (the untuned model's config) is defined with the config, above; recogniser and export
# (a finished trial's result, transcribing and exported) just above.

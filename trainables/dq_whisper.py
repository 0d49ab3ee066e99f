"""DQ-Whisper: joint distillation and quantisation-aware training of a smaller Whisper student.

A Whisper teacher is distilled into a student that either keeps a maximally spaced subset of the
teacher's own layers (as distil-whisper does: with 2 of 6 decoder layers, layers 0 and 5), or is a
smaller pretrained checkpoint with the teacher's tokenizer. The loss is

    (1 − α)·CE + α·(T²·KL(teacher ‖ student at temperature T) + hidden_weight·relative hidden-state MSE)

and with α = 0 it is exactly the cross-entropy, and the teacher is never loaded.

Teacher outputs are computed once per (teacher, data, split, items, window, top-k, ...) and cached
on disk (trainables.cache.build_once): per utterance, the top-k logits under teacher forcing (fp16
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

Shared pieces come from batching, training, metrics and qlora (its `evaluate`).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from trainables import assets
from trainables.batching import SpecAugmentConfig, WhisperFeatures, epoch_batches, spec_augment, whisper_labels
from trainables.cache import build_once, cache_root, input_key
from trainables.config import ConfigError, build, merge, require, to_dict
from trainables.data import DataConfig, load_speech
from trainables.evaluation import evaluate
from trainables.metrics import MB, param_counts, peak_host_mem_mb, peak_vram_mb
from trainables.models import PrecisionConfig, load_base_model, shrink_whisper_encoder, window_positions
from trainables.noise import noisy_copies
from trainables.training import (
    OptimConfig,
    Throughput,
    artifact_dir,
    autocast,
    device,
    make_optimizer,
    reduce_max,
    report,
    seed_everything,
    warmup_cosine,
    world,
)

Matching = Literal["none", "static", "dynamic", "dynamic_monotonic"]
QUANT_BITS = (2, 3, 4, 8, 16)
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
class QuantConfig:
    """Quantisation-aware training of the student's linear weights."""

    bits: int = 4
    """Weight bits: 2, 3, 4 or 8 (fake-quantised while training, packed when exported); 16 = off."""
    edge_bits: int = 8
    """Bits of the first encoder layer and the last decoder layer (never fewer than `bits`)."""
    embed_bits: int = 8
    """Bits of the token embedding, which is also the (tied) output projection, one scale per token;
    16 = fp16. Whisper's embedding is a third of whisper-base, so it bounds the compression. Applies
    only when `bits` < 16."""
    learn_scale: bool = True
    """Train the per-channel clipping scales (LSQ/PACT-style); false = fixed absmax scales."""

    def check(self) -> None:
        for name in ("bits", "edge_bits", "embed_bits"):
            value = getattr(self, name)
            require(value in QUANT_BITS, name, f"{value} is not supported (use 2, 3, 4, 8 or 16)")


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
    """Training and evaluation data."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, max_steps=32, warmup_steps=4, batch_size=4))
    """Optimiser, schedule, batch and step budget."""
    spec_augment: SpecAugmentConfig = field(default_factory=lambda: SpecAugmentConfig(enabled=False))
    """Masking of the student's training features (the teacher's cached outputs are on clean features)."""
    encoder_window_s: float = 0.0
    """Encoder window in seconds; 0 = the longest utterance of the data, rounded up to 0.5 s; 30 = Whisper's own."""
    eval_batch_size: int = 16
    """Utterances per decoding batch."""
    eval_noise: Literal["white", "pink", "babble"] = "white"
    """Noise of the second test set (wer_noisy): white, pink, or babble from the other test utterances."""
    eval_snr_db: float = 10.0
    """SNR of the second test set in dB (the same seeded noise in every trial, so hypotheses pair up)."""
    max_new_tokens: int = 96
    """Longest transcript decoded (and trained on), in tokens."""
    save_model: bool = True
    """Save the packed quantised student as an artifact."""
    seed: int = 0
    """Seed of initialisation and data order."""

    def check(self) -> None:
        require(0 <= self.encoder_window_s <= 30, "encoder_window_s", f"must be in [0, 30], got {self.encoder_window_s}")
        require(self.eval_batch_size >= 1, "eval_batch_size", "must be at least 1")
        require(self.eval_noise in ("white", "pink", "babble"), "eval_noise",
                f"{self.eval_noise!r} is not one of white, pink, babble")
        require(math.isfinite(self.eval_snr_db) and -20 <= self.eval_snr_db <= 60, "eval_snr_db",
                f"must be in [-20, 60] dB, got {self.eval_snr_db}")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        assets.check_model_source(self.teacher, "teacher")
        assets.check_data_source(self.data.source, "data.source")
        config = assets.model_config_if_local(self.teacher)
        if config is not None:
            require(config.get("model_type") == "whisper", "teacher", f"must be a Whisper model, not {config.get('model_type')}")
            for stack in ("encoder", "decoder"):
                n = getattr(self.student, f"{stack}_layers")
                require(n <= config[f"{stack}_layers"], f"student.{stack}_layers",
                        f"{n} is more than the teacher's {config[f'{stack}_layers']}")


def parse_config(config: dict[str, Any]) -> DQWhisperConfig:
    return build(DQWhisperConfig, config)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point."""
    run(parse_config(config))


CONFIG = DQWhisperConfig


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The teacher as released: every layer kept, unquantised, no training."""
    return merge(config, {"student": {"source": "teacher_layers", "encoder_layers": 0, "decoder_layers": 0},
                          "quant": {"bits": 16}, "distill": {"alpha": 0.0}, "encoder_window_s": 30.0,
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


# --------------------------------------------------------------------------- fake quantisation


def fake_quant(weight: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """s·round(clamp(w/s, −Q, Q)) per row: rounding passes gradients straight through, clipping stops
    them (PACT), and s gets the LSQ gradient."""
    s = scale.clamp_min(1e-8)[:, None]
    v = (weight / s).clamp(-qmax, qmax)
    v = v + (torch.round(v) - v).detach()
    return v * s


class RowQuantised(torch.nn.Module):
    """A weight matrix fake-quantised per row (symmetric, b bits, learnable scale starting at absmax(row)/Q).

    What a quantised linear and the quantised token embedding share: the weight (the original
    Parameter, not a copy), its scales, the integer codes the export stores, and the quantised weight,
    which outside autograd (decoding) is computed once per weight/scale update: generation runs the
    decoder once per token, and re-quantising every matrix at every token (the 26M-entry embedding
    twice, through the tied head) made evaluation several times slower.
    """

    def __init__(self, weight: torch.nn.Parameter, bits: int, learn_scale: bool) -> None:
        super().__init__()
        self.weight = weight
        self.bits = bits
        self.out_features = weight.shape[0]
        init = weight.detach().abs().amax(dim=1).clamp_min(1e-8) / self.qmax
        self.scale = torch.nn.Parameter(init.clone(), requires_grad=learn_scale)
        self._frozen: tuple[tuple, torch.Tensor] | None = None

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def quantised_weight(self) -> torch.Tensor:
        if torch.is_grad_enabled() and (self.weight.requires_grad or self.scale.requires_grad):
            self._frozen = None
            return fake_quant(self.weight, self.scale, self.qmax)
        key = (self.weight._version, self.scale._version, self.weight.data_ptr(), self.weight.dtype)
        if self._frozen is None or self._frozen[0] != key:
            with torch.no_grad():
                self._frozen = (key, fake_quant(self.weight, self.scale, self.qmax))
        return self._frozen[1]

    def integer_weight(self) -> torch.Tensor:
        """The integers in [−Q, Q] that the quantised weight is the scale times (what the export stores)."""
        s = self.scale.detach().clamp_min(1e-8)[:, None]
        return torch.round((self.weight.detach() / s).clamp(-self.qmax, self.qmax)).to(torch.int8)


class FakeQuantLinear(RowQuantised):
    """A linear layer whose weight is fake-quantised per output channel."""

    def __init__(self, linear: torch.nn.Linear, bits: int, learn_scale: bool) -> None:
        super().__init__(linear.weight, bits, learn_scale)
        self.bias = linear.bias
        self.in_features = linear.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantised_weight().to(x.dtype), self.bias)


class FakeQuantEmbedding(RowQuantised):
    """The decoder's token embedding fake-quantised per token row.

    Whisper ties its output projection to this matrix, so the projection is replaced by a
    `TiedQuantHead` that reads the same quantised weight: one matrix is trained, exported and deployed.
    """

    def __init__(self, embedding: torch.nn.Embedding, bits: int, learn_scale: bool) -> None:
        super().__init__(embedding.weight, bits, learn_scale)
        self.padding_idx = embedding.padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.quantised_weight(), self.padding_idx)


class TiedQuantHead(torch.nn.Module):
    """Output projection tied to a `FakeQuantEmbedding` (logits = h · Eᵀ with E quantised); holds no weight of its own."""

    def __init__(self, embedding: FakeQuantEmbedding) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.embedding.quantised_weight().to(x.dtype))


def layer_bits(model: torch.nn.Module, quant: QuantConfig) -> dict[str, int]:
    """Bits of every quantised linear (name → bits): the layers' linears, edges at max(bits, edge_bits)."""
    if quant.bits >= 16:
        return {}
    n_enc, n_dec = model.config.encoder_layers, model.config.decoder_layers
    out = {}
    for name, mod in model.named_modules():
        parts = name.split(".")
        if not isinstance(mod, torch.nn.Linear) or len(parts) < 4 or parts[2] != "layers":
            continue
        edge = (parts[1] == "encoder" and int(parts[3]) == 0) or (parts[1] == "decoder" and int(parts[3]) == n_dec - 1)
        edge = edge or (parts[1] == "encoder" and n_enc == 0)
        bits = max(quant.bits, quant.edge_bits) if edge else quant.bits
        if bits < 16:
            out[name] = bits
    return out


def add_fake_quant(model: torch.nn.Module, quant: QuantConfig) -> dict[str, int]:
    """Replace the selected linears by FakeQuantLinear, and the token embedding (with its tied output
    projection) by FakeQuantEmbedding at `quant.embed_bits`, in place; returns name → bits."""
    bits = layer_bits(model, quant)
    for name, b in bits.items():
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, child, FakeQuantLinear(getattr(parent, child), b, quant.learn_scale))
    if quant.bits < 16 and quant.embed_bits < 16:
        decoder = model.model.decoder
        tied = model.proj_out.weight is decoder.embed_tokens.weight
        decoder.embed_tokens = FakeQuantEmbedding(decoder.embed_tokens, quant.embed_bits, quant.learn_scale)
        if tied:
            model.proj_out = TiedQuantHead(decoder.embed_tokens)
        bits["model.decoder.embed_tokens"] = quant.embed_bits
    return bits


# --------------------------------------------------------------------------- export


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers < 2^bits into a uint8 stream, `bits` bits each (little-endian bit order)."""
    flat = values.reshape(-1).astype(np.uint8)
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    return (planes.astype(np.uint8) << np.arange(bits, dtype=np.uint8)).sum(axis=1).astype(np.uint8)


def export_quantised(model: torch.nn.Module, path: Path) -> dict[str, int]:
    """Write the student as deployed to one safetensors file; returns byte counts by part and the file size.

    A b-bit linear or token embedding stores `name.qweight` (int8 at 8 bits; else b-bit packed uint8
    of q + Q) and `name.scale` (fp16, one per output channel or token); an output projection tied to
    the embedding is only a `tied_to` entry in the metadata; every other tensor is stored once in fp16.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    parts = {"packed": 0, "scales": 0, "fp16": 0}
    quantised = {n: m for n, m in model.named_modules() if isinstance(m, RowQuantised)}
    skip = {f"{n}.{p}" for n in quantised for p in ("weight", "scale")}
    seen: set[int] = set()
    owner = {id(m): n for n, m in quantised.items()}
    for head_name, head in model.named_modules():
        if isinstance(head, TiedQuantHead):
            meta[head_name] = json.dumps({"tied_to": owner[id(head.embedding)]})
    for name, mod in quantised.items():
        q = mod.integer_weight()
        if mod.bits == 8:
            data = q.contiguous()
        else:
            data = torch.from_numpy(pack_bits((q.numpy().astype(np.int16) + mod.qmax).astype(np.uint8), mod.bits))
        tensors[f"{name}.qweight"] = data
        tensors[f"{name}.scale"] = mod.scale.detach().to(torch.float16).contiguous()
        meta[name] = json.dumps({"bits": mod.bits, "shape": list(mod.weight.shape)})
        parts["packed"] += data.numel() * data.element_size()
        parts["scales"] += 2 * mod.out_features
        seen.add(id(mod.weight))
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if name in skip or id(p) in seen or not p.is_floating_point():
            continue
        seen.add(id(p))  # tied tensors (proj_out ↔ embed_tokens) are stored once
        tensors[name] = p.detach().to(torch.float16).contiguous().clone()
        parts["fp16"] += 2 * p.numel()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    parts["file"] = path.stat().st_size
    with open(path, "rb") as fh:
        parts["header"] = 8 + struct.unpack("<Q", fh.read(8))[0]
    return parts


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


# --------------------------------------------------------------------------- teacher cache


class _Task:
    """Whisper batching, labels, decoding (multilingual models told the language), for student and teacher."""

    def __init__(self, source: str, window_s: float, max_new_tokens: int) -> None:
        from transformers import WhisperProcessor

        self.processor = WhisperProcessor.from_pretrained(source)
        self.features = WhisperFeatures(self.processor.feature_extractor, window_s)
        self.max_new_tokens = max_new_tokens

    def labels(self, model: torch.nn.Module, utts: list[dict]) -> torch.Tensor:
        return whisper_labels(self.processor.tokenizer, [u["text"] for u in utts], model.config.decoder_start_token_id,
                              self.max_new_tokens)

    @torch.no_grad()
    def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        feats, _ = self.features.batch(utts)
        kwargs: dict[str, Any] = {}
        if getattr(model.generation_config, "is_multilingual", False):
            kwargs = {"language": "en", "task": "transcribe"}
        ids = model.generate(input_features=feats.to(dev, dtype), max_new_tokens=self.max_new_tokens, **kwargs)
        return [t.strip() for t in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def teacher_cache(cfg: DQWhisperConfig, teacher_source: str, train: list[dict], window_s: float,
                  dev: torch.device) -> Path:
    """Teacher top-k logits and decoder hidden states of every training utterance, built once on disk."""
    inputs = {"teacher": teacher_source, "data": cfg.data.source, "hub_config": cfg.data.hub_config,
              "split": cfg.data.train_split, "max_items": cfg.data.max_train_items, "window_s": window_s,
              "top_k": cfg.distill.top_k, "max_new_tokens": cfg.max_new_tokens, "n": len(train), "version": 1}
    target = cache_root() / "teacher-outputs" / f"{Path(teacher_source).name}-{input_key(inputs)}"

    def build_cache(out: Path) -> None:
        from tqdm import tqdm

        teacher = load_base_model(teacher_source, "whisper", PrecisionConfig(bits=32), dev).eval()
        shrink_whisper_encoder(teacher, window_positions(window_s))
        task = _Task(teacher_source, window_s, cfg.max_new_tokens)
        index = {}
        for start in tqdm(range(0, len(train), 8), desc="teacher outputs (once)"):
            utts = train[start : start + 8]
            feats, _ = task.features.batch(utts)
            labels = task.labels(teacher, utts)
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


# --------------------------------------------------------------------------- run


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


def run(cfg: DQWhisperConfig) -> dict[str, float]:
    """Distil, quantise-aware train, export and evaluate; returns the final metrics (reported to Ray Train too)."""
    dev = device()
    rank, size = world()
    if size > 1:
        raise ConfigError("resources.num_workers: dq_whisper trains on one worker per trial")
    seed_everything(cfg.seed)
    teacher_source = assets.resolve_model(cfg.teacher)
    d = cfg.data
    train = load_speech(d.source, d.train_split, max_items=d.max_train_items, hub_config=d.hub_config)
    val = load_speech(d.source, d.val_split, max_items=d.max_val_items, hub_config=d.hub_config)
    test = load_speech(d.source, d.eval_split, max_items=d.max_eval_items, hub_config=d.hub_config)
    window_s = cfg.encoder_window_s or math.ceil(2 * max(len(u["audio"]) for u in train + val + test) / 16000) / 2

    student = build_student(cfg, teacher_source, dev)
    shrink_whisper_encoder(student, window_positions(window_s))
    for p in student.parameters():
        p.requires_grad_(True)
    student.model.encoder.embed_positions.weight.requires_grad_(False)  # Whisper's fixed sinusoidal table
    bits = add_fake_quant(student, cfg.quant)
    task = _Task(teacher_source, window_s, cfg.max_new_tokens)
    dist = cfg.distill
    use_teacher = dist.alpha > 0 and cfg.optim.max_steps > 0
    cache, index, proj = None, {}, None
    if use_teacher:
        cache = teacher_cache(cfg, teacher_source, train, window_s, dev)
        index = json.loads((cache / "index.json").read_text())
        t_width = assets.load_model_config(teacher_source)["d_model"]
        if t_width != student.config.d_model:
            proj = torch.nn.Linear(student.config.d_model, t_width).to(dev)
    counts = param_counts(student)

    history: list[dict[str, float]] = []
    timer = Throughput()
    steps = cfg.optim.max_steps
    if steps > 0:
        params = [p for p in student.parameters() if p.requires_grad] + (list(proj.parameters()) if proj else [])
        optimizer = make_optimizer(cfg.optim, params, dev)
        schedule = warmup_cosine(optimizer, cfg.optim.warmup_steps, steps)
        batches = epoch_batches([len(u["audio"]) for u in train], cfg.optim.batch_size, cfg.seed, rank, size)
        gen = torch.Generator().manual_seed(cfg.seed)
        student.train()
        for step in range(1, steps + 1):
            sums = {"loss": 0.0, "ce_loss": 0.0, "kd_loss": 0.0, "kl": 0.0, "hidden_loss": 0.0}
            with timer.step(cfg.optim.batch_size * cfg.optim.grad_accum):
                for _ in range(cfg.optim.grad_accum):
                    utts = [train[i] for i in next(batches)]
                    feats, frames = task.features.batch(utts)
                    feats = spec_augment(feats.clone(), frames, cfg.spec_augment, gen)
                    labels = task.labels(student, utts)
                    with autocast(cfg.optim, dev):
                        out = student(input_features=feats.to(dev), labels=labels.to(dev), output_hidden_states=use_teacher)
                        ce, kd = out.loss, None
                        if use_teacher:
                            mask = (labels != -100).to(dev)
                            vals, idx, t_hidden = load_teacher_batch(cache, index, utts, labels.shape[1], dev)
                            kl = kd_kl(out.logits, vals, idx, mask, dist.temperature)
                            kd = kl
                            sums["kl"] += float(kl.detach())
                            if dist.matching != "none" and dist.hidden_weight > 0:
                                s_h = [proj(h) if proj else h for h in out.decoder_hidden_states[1:]]
                                hl, _ = hidden_loss(s_h, list(t_hidden.unbind(1)), mask, dist.matching)
                                kd = kd + dist.hidden_weight * hl
                                sums["hidden_loss"] += float(hl.detach())
                            sums["kd_loss"] += float(kd.detach())
                        loss = combine(ce, kd, dist.alpha) / cfg.optim.grad_accum
                    loss.backward()
                    sums["loss"] += float(loss.detach())
                    sums["ce_loss"] += float(ce.detach())
                if cfg.optim.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
            n = cfg.optim.grad_accum
            point = {"step": step, "lr": schedule.get_last_lr()[0], "loss": sums["loss"],
                     **{k: v / n for k, v in sums.items() if k != "loss"}}
            if not use_teacher:  # no distillation term was computed
                point.update(kd_loss=float("nan"), kl=float("nan"), hidden_loss=float("nan"))
            history.append(point)

    student.eval()
    v = evaluate(task, student, val, cfg.eval_batch_size, dev, torch.float32)
    final = evaluate(task, student, test, cfg.eval_batch_size, dev, torch.float32)
    noisy_test = noisy_copies(test, cfg.eval_noise, cfg.eval_snr_db, EVAL_NOISE_SEED)
    noisy = evaluate(task, student, noisy_test, cfg.eval_batch_size, dev, torch.float32)
    out_dir = artifact_dir()
    parts = export_quantised(student, out_dir / "student" / "model.safetensors")
    original = assets.stored_bytes(assets.model_files_dir(teacher_source))
    last = history[-1] if history else {}
    metrics: dict[str, float] = {
        "step": steps, "loss": last.get("loss", float("nan")),
        "ce_loss": last.get("ce_loss", float("nan")), "kd_loss": last.get("kd_loss", float("nan")),
        "kl": last.get("kl", float("nan")), "hidden_loss": last.get("hidden_loss", float("nan")),
        "wer": final["wer"], "cer": final["cer"], "wer_clean": final["wer"], "cer_clean": final["cer"],
        "wer_noisy": noisy["wer"], "cer_noisy": noisy["cer"], "val_wer": v["wer"], "val_cer": v["cer"],
        "train_samples_per_s": timer.rate if steps > 0 else 0.0,
        "peak_vram_mb": reduce_max(peak_vram_mb()), "peak_host_mem_mb": reduce_max(peak_host_mem_mb()),
        "model_size_mb": parts["file"] / MB, "compression_ratio": original / parts["file"],
        "latency_ms_per_utt": final["latency_ms_per_utt"], "rtf": final["rtf"], "encoder_window_s": window_s,
        "quantised_layers": float(len(bits)), "student_encoder_layers": float(student.config.encoder_layers),
        "student_decoder_layers": float(student.config.decoder_layers),
        **{k: float(x) for k, x in counts.items()},
    }
    (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "history.json").write_text(json.dumps(history))
    (out_dir / "size_breakdown.json").write_text(json.dumps(parts, indent=2))
    for name, rows in (("hypotheses.jsonl", final["rows"]), ("hypotheses_noisy.jsonl", noisy["rows"])):
        with open(out_dir / name, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    if not cfg.save_model:
        (out_dir / "student" / "model.safetensors").unlink()
    report(metrics, out_dir)
    return metrics

"""Quantisation-aware training by fake quantisation, and the packed export of what it trained.

Every linear weight of a Whisper model's encoder and decoder layers is fake-quantised per output
channel (symmetric, b bits, a learnable clipping scale, straight-through rounding); the first encoder
layer and the last decoder layer may keep more bits (`edge_bits`); the decoder's token embedding,
which Whisper ties to its output projection, is quantised per token (`embed_bits`) and the projection
reads the same quantised matrix. The export packs the integer weights (int8 storage at 8 bits,
b-bit packing below: 4-bit two per byte) with fp16 per-channel scales into one safetensors file;
every other tensor (positional embeddings, norms, convolutions, biases) is stored once in fp16.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainables.blocks.config import require
from trainables.loaders.dq_whisper import unpack_bits  # noqa: F401  (reading back is the export loader's job)

QUANT_BITS = (2, 3, 4, 8, 16)


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
        # The scale is learned as its logarithm, so an optimiser step moves it by a fraction of itself at every
        # bit width. Learned directly, Adam's steps (about lr in size, whatever the gradient) were 45% of a typical
        # 8-bit scale at lr 3e-4 on whisper-base's decoder (absmax / 127 ~ 7e-4), 2.5% at 4 bits, 0.4% at 2 bits.
        self.log_scale = torch.nn.Parameter(init.log(), requires_grad=learn_scale)
        self._frozen: tuple[tuple, torch.Tensor] | None = None

    @property
    def scale(self) -> torch.Tensor:
        """The per-row step size s (what the export stores and the quantised weight is a multiple of)."""
        return self.log_scale.exp()

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def quantised_weight(self) -> torch.Tensor:
        if torch.is_grad_enabled() and (self.weight.requires_grad or self.log_scale.requires_grad):
            self._frozen = None
            return fake_quant(self.weight, self.scale, self.qmax)
        key = (self.weight._version, self.log_scale._version, self.weight.data_ptr(), self.weight.dtype)
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
    skip = {f"{n}.{p}" for n in quantised for p in ("weight", "log_scale")}
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

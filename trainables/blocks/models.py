"""Loading ASR models with a quantised base and LoRA adapters placed by module kind, stack and layer.

Two ASR families are supported: Whisper (sequence-to-sequence) and wav2vec2 (CTC); causal LMs (the LLM
audio adaptor's language model) load through the same quantised path. The base model is
loaded in 4-bit (NF4/FP4, optionally double-quantised), 8-bit (LLM.int8) or a float precision
through transformers' bitsandbytes integration; adapters come from peft with B initialised at zero.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from trainables.blocks.config import ConfigError, require

Family = Literal["whisper", "wav2vec2", "causal_lm"]

# Module kinds a user names, and the module names they stand for in each family.
MODULE_KINDS: dict[str, dict[str, str]] = {
    "whisper": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj", "fc1": "fc1", "fc2": "fc2"},
    "wav2vec2": {
        "q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj",
        "fc1": "feed_forward.intermediate_dense", "fc2": "feed_forward.output_dense",
    },
}
ALL_KINDS = ["q", "k", "v", "out", "fc1", "fc2"]
# Layer stacks of each family and the module prefix of their layers.
STACKS: dict[str, dict[str, str]] = {
    "whisper": {"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"},
    "wav2vec2": {"encoder": "wav2vec2.encoder.layers"},
}
# Output heads never quantised (Whisper's is tied to the token embedding).
HEADS = {"whisper": ["proj_out"], "wav2vec2": ["lm_head"], "causal_lm": ["lm_head"]}


@dataclass
class PrecisionConfig:
    """How the base model's weights are held."""

    bits: int = 4
    """Base weight precision: 4 (bitsandbytes NF4/FP4), 8 (LLM.int8), 16 (bf16/fp16) or 32 (fp32)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type (only with bits=4)."""
    double_quant: bool = True
    """Quantise the 4-bit absmax constants too (QLoRA's double quantisation; only with bits=4)."""
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """dtype of matmuls and non-quantised weights; auto = float32 on CPU, bfloat16 (or fp16) on CUDA."""

    def check(self) -> None:
        require(self.bits in (4, 8, 16, 32), "bits", f"{self.bits} is not supported (use 4, 8, 16 or 32)")


@dataclass
class LoraConfig:
    """LoRA adapters and where they go."""

    enabled: bool = True
    """False = full fine-tuning of every weight (the baseline; needs bits 16 or 32)."""
    kind: Literal["lora", "adalora"] = "lora"
    """lora: fixed rank r everywhere; adalora (the qlora method only, settings in its `adalora` section): peft's
    AdaLoRA, which starts above r and prunes to an average rank of r by importance during training (the same
    total budget as uniform rank r)."""
    r: int = 8
    """Adapter rank."""
    alpha: float = 16.0
    """Scaling numerator: the update is (alpha / r)·B·A."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    modules: list[str] = field(default_factory=lambda: list(ALL_KINDS))
    """Module kinds to adapt: q, k, v, out (attention projections), fc1, fc2 (feed-forward)."""
    stacks: list[str] = field(default_factory=lambda: ["encoder", "decoder"])
    """Which stacks to adapt: encoder and/or decoder; a stack the model lacks (wav2vec2's decoder) is skipped."""
    layers: str | list[int] = "all"
    """all, top_half, bottom_half, or a list of layer indices within each adapted stack."""
    cross_attention: bool = True
    """Whisper: adapt the decoder's cross-attention projections too."""

    def check(self) -> None:
        require(self.r >= 1, "r", f"rank must be at least 1, got {self.r}")
        require(self.alpha > 0, "alpha", f"must be positive, got {self.alpha}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(bool(self.modules), "modules", "name at least one module kind")
        for i, kind in enumerate(self.modules):
            require(kind in ALL_KINDS, f"modules[{i}]", f"unknown module {kind!r} (known: {', '.join(ALL_KINDS)})")
        require(bool(self.stacks), "stacks", "name at least one of encoder, decoder")
        for i, stack in enumerate(self.stacks):
            require(stack in ("encoder", "decoder"), f"stacks[{i}]", f"unknown stack {stack!r} (encoder, decoder)")
        if isinstance(self.layers, str):
            require(self.layers in ("all", "top_half", "bottom_half"), "layers",
                    f"{self.layers!r} is not all, top_half, bottom_half or a list of indices")
        else:
            require(bool(self.layers), "layers", "the list of layer indices is empty")
            for i, idx in enumerate(self.layers):
                require(idx >= 0, f"layers[{i}]", f"layer index must be non-negative, got {idx}")


def check_precision_with_lora(precision: PrecisionConfig, lora: LoraConfig, where: str = "") -> None:
    """Full fine-tuning cannot update quantised weights."""
    if not lora.enabled and precision.bits in (4, 8):
        raise ConfigError(f"{where}lora.enabled: full fine-tuning needs precision.bits 16 or 32, not {precision.bits}")


def family_of(model_config: dict) -> Family:
    kind = model_config.get("model_type", "")
    if kind == "whisper":
        return "whisper"
    if kind in ("wav2vec2", "hubert", "wavlm", "data2vec-audio"):
        return "wav2vec2"
    raise ConfigError(f"model: model_type {kind!r} is not supported (whisper or a wav2vec2-style CTC model)")


def stack_depths(model_config: dict, family: Family) -> dict[str, int]:
    if family == "whisper":
        return {"encoder": model_config["encoder_layers"], "decoder": model_config["decoder_layers"]}
    return {"encoder": model_config["num_hidden_layers"]}


def select_layers(spec: str | list[int], depth: int, where: str) -> list[int]:
    if spec == "all":
        return list(range(depth))
    if spec == "top_half":
        return list(range(depth // 2, depth))
    if spec == "bottom_half":
        return list(range(depth // 2))
    for idx in spec:
        if idx >= depth:
            raise ConfigError(f"{where}lora.layers: layer {idx} does not exist (the stack has {depth} layers)")
    return sorted(set(spec))


def check_lora_against_model(lora: LoraConfig, model_config: dict, where: str = "") -> None:
    """Checks that need the model's shape: stacks that exist, layer indices in range."""
    family = family_of(model_config)
    depths = stack_depths(model_config, family)
    present = [s for s in lora.stacks if s in depths]
    if not present:
        raise ConfigError(f"{where}lora.stacks: a {family} model has no {' or '.join(lora.stacks)} (it has {', '.join(depths)})")
    for stack in present:
        select_layers(lora.layers, depths[stack], where)


def target_module_names(model: torch.nn.Module, family: Family, lora: LoraConfig, depths: dict[str, int]) -> list[str]:
    """Full names of the linear modules the placement selects, in model order."""
    kinds = [MODULE_KINDS[family][k] for k in lora.modules]
    patterns = []
    for stack in [s for s in lora.stacks if s in depths]:
        layers = select_layers(lora.layers, depths[stack], "")
        prefix = re.escape(STACKS[family][stack])
        attn = "self_attn" if family == "whisper" else "attention"
        if family == "whisper" and stack == "decoder" and lora.cross_attention:
            attn = "(?:self_attn|encoder_attn)"
        for kind in kinds:
            where = rf"{attn}\.{re.escape(kind)}" if kind.endswith("_proj") else re.escape(kind)
            layer_alt = "|".join(map(str, layers))
            patterns.append(rf"{prefix}\.(?:{layer_alt})\.{where}")
    regex = re.compile("|".join(f"(?:{p})" for p in patterns))
    names = [n for n, m in model.named_modules() if regex.fullmatch(n) and _is_linear(m)]
    if not names:
        raise ConfigError("lora: the placement selects no layer of this model")
    return names


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def resolve_compute_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class _OncePerMessage(logging.Filter):
    """Lets each distinct message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg) % record.args if record.args else str(record.msg)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def warn_once(logger: logging.Logger) -> None:
    """Make `logger` say each message once per process (bitsandbytes repeats one warning per forward pass:
    over 1,300 console lines in a 40-step int8 trial)."""
    if not any(isinstance(f, _OncePerMessage) for f in logger.filters):
        logger.addFilter(_OncePerMessage())


def load_base_model(source: str, family: Family, precision: PrecisionConfig, device: torch.device) -> torch.nn.Module:
    """Load the pretrained model with its base weights at the requested precision, frozen."""
    from transformers import AutoModelForCausalLM, AutoModelForCTC, BitsAndBytesConfig, WhisperForConditionalGeneration

    compute = resolve_compute_dtype(precision.compute_dtype, device)
    cls = {"whisper": WhisperForConditionalGeneration, "wav2vec2": AutoModelForCTC, "causal_lm": AutoModelForCausalLM}[family]
    kwargs: dict = {}
    if precision.bits == 4:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=precision.quant_type,
            bnb_4bit_use_double_quant=precision.double_quant,
            bnb_4bit_compute_dtype=compute,
            llm_int8_skip_modules=HEADS[family],
        )
        kwargs["dtype"] = compute
    elif precision.bits == 8:
        warn_once(logging.getLogger("bitsandbytes.autograd._functions"))  # it warns on every int8 matmul
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=HEADS[family])
        kwargs["dtype"] = torch.float16 if device.type == "cuda" else torch.float32
    elif precision.bits == 16:
        kwargs["dtype"] = compute if compute != torch.float32 else torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
    if precision.bits in (4, 8):
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else "cpu"}
    model = cls.from_pretrained(source, **kwargs)
    if precision.bits == 4:
        keep_4bit_layout_trainable(model)
    if precision.bits not in (4, 8):
        model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def keep_4bit_layout_trainable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, the first eval-mode forward of a Linear4bit converts its weight, for good, to
    an inference-only layout; a training step after that (after a mid-training evaluation, or after
    entropy calibration) fails inside bitsandbytes. Training here alternates the two, so the conversion
    is switched off.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def shrink_whisper_encoder(model: torch.nn.Module, n_positions: int) -> None:
    """Make Whisper's encoder take windows of `n_positions` frames (50 per second) instead of 1500.

    The encoder adds a fixed sinusoidal table to every position of its 30-second window and
    rejects any other length; keeping only the table's first `n_positions` rows lets short
    utterances be encoded without 30 s of padding, which is most of the compute.
    """
    encoder = model.get_encoder()
    old = encoder.embed_positions
    if n_positions > old.num_embeddings:
        raise ConfigError(f"encoder_window_s: longer than the model's {old.num_embeddings // 50} s window")
    if n_positions == old.num_embeddings:
        return
    new = torch.nn.Embedding(n_positions, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    new.weight.data.copy_(old.weight.data[:n_positions])
    new.weight.requires_grad_(False)
    encoder.embed_positions = new
    encoder.config.max_source_positions = n_positions
    model.config.max_source_positions = n_positions


def whisper_position_table(source: str) -> torch.Tensor:
    """The encoder's full sinusoidal position table (30 s, 1500 rows) from a Whisper checkpoint's files."""
    from pathlib import Path

    from safetensors import safe_open

    for f in sorted(Path(source).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            key = next((k for k in fh.keys() if k.endswith("encoder.embed_positions.weight")), None)
            if key is not None:
                return fh.get_tensor(key)
    raise ConfigError(f"{source}: no encoder.embed_positions.weight (not a Whisper checkpoint's folder)")


def set_whisper_window(encoder: torch.nn.Module, config: Any, n_positions: int, table: torch.Tensor) -> None:
    """Give a Whisper encoder a window of `n_positions` frames, its rows from the full position `table` (the
    rows it has are kept), and record it in `config`; a no-op when it has that window already."""
    old = encoder.embed_positions
    if old.num_embeddings == n_positions:
        return
    if n_positions > table.shape[0]:
        raise ConfigError(f"encoder window: {n_positions} positions is more than the model's {table.shape[0]}")
    if table.shape[1] != old.embedding_dim:
        # A model narrower than the checkpoint whose table was read (a dq_whisper student distilled from a wider
        # teacher): Whisper's encoder positions are fixed sinusoids, so its own table is that formula at its width.
        from transformers.models.whisper.modeling_whisper import sinusoids

        table = sinusoids(table.shape[0], old.embedding_dim)
    new = torch.nn.Embedding(n_positions, old.embedding_dim, dtype=old.weight.dtype, device=old.weight.device)
    new.weight.data.copy_(table[:n_positions].to(old.weight.dtype))
    kept = min(n_positions, old.num_embeddings)
    new.weight.data[:kept].copy_(old.weight.data[:kept])
    new.requires_grad_(False)
    encoder.embed_positions = new
    encoder.config.max_source_positions = n_positions
    config.max_source_positions = n_positions


def window_positions(seconds: float) -> int:
    """Encoder positions (50 per second) covering `seconds`, at least 1."""
    return max(1, math.ceil(seconds * 50))


def add_lora(model: torch.nn.Module, names: list[str], lora: LoraConfig,
             rank_pattern: dict[str, int] | None = None) -> torch.nn.Module:
    """Wrap `model` with peft LoRA adapters on exactly the `names` modules (B starts at zero).

    `rank_pattern` (peft's form, e.g. from `entropy.lora_rank_pattern`) overrides `lora.r` per module.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    if lora.kind != "lora":  # AdaLoRA needs its pruning schedule in the loop: qlora builds it (qlora.adalora_config)
        raise ConfigError(f"lora.kind: {lora.kind!r} is trained by the qlora method only; use lora here")

    config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=names,
        bias="none", init_lora_weights=True, rank_pattern=rank_pattern or {},
    )
    return get_peft_model(model, config)


def enable_full_finetuning(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model's audio inputs must have: that of its convolution weights (the first 3-D parameter)."""
    return next(p for p in model.parameters() if p.is_floating_point() and p.dim() == 3).dtype

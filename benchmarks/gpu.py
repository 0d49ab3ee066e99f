"""The GPU measurement: every method's training step on models of realistic size, in one process.

    python benchmarks/gpu.py [--steps 20] [--warmup 3] [--batch 16] [--cases qlora_nf4,qlora_bf16,...]
    python benchmarks/gpu.py --tiny      # the same path with tiny models on the CPU (what the tests run)

No Ray, MLflow, Optuna, data set or hub: each model is built from a config of the size the gpu presets use
(Whisper small; wav2vec2 base as DQLoRA's student; a Qwen3-0.6B-sized LLM for the adaptor) with random weights,
written once to a temporary folder, and loaded from there through the project's own loaders
(`models.load_base_model`: an NF4 + double-quantised base through bitsandbytes, or a bf16 one), adapted with the
same LoRA, and trained with the project's optimiser step (`training.Stepper`: autocast, fp16 loss scaling,
clipping, AdamW or bitsandbytes' paged 8-bit AdamW). Random weights cost the same time and memory as trained ones.

Each method's loss is its own (the functions its trainable calls): cross-entropy for qlora; CTC plus the
distance to cached teacher states for dqlora; cross-entropy, top-k KL and matched hidden states of a
fake-quantised student for dq_whisper; the adaptor and LLM for llm_adaptor; the decoder on text-to-latent
states for whistle. Inputs are random tensors of the real shapes (a 30 s window, 48-token transcripts), made on
the GPU: the step is measured, not the CPU feature pipeline or the disk caches that feed it in a sweep.

Per case: the model's resident weights, peak VRAM from before loading to the last step, samples/s over the timed
steps (after `--warmup` untimed ones), and joules per step from NVML's energy counter. Prints one table, the
ratios that answer the questions (NF4 against bf16 base, paged 8-bit against AdamW, fp16 with loss scaling
against bf16), and one JSON line (`RESULT {...}`). Without CUDA it refuses in one line, unless `--tiny`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched: every model is built here
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notices, once per model

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables.blocks import models  # noqa: E402
from trainables.blocks.models import LoraConfig, PrecisionConfig  # noqa: E402
from trainables.blocks.training import OptimConfig, Stepper  # noqa: E402

MB = 2**20


@dataclass(frozen=True)
class Sizes:
    """Model shapes and batch of one run (`full`: what the gpu presets train; `tiny`: a CPU smoke run)."""

    whisper: dict
    wav2vec2: dict
    llm: dict
    window_s: float
    batch: int
    label_tokens: int
    vocab_cap: int
    """Label ids are drawn below this (below the models' special tokens)."""
    lora_r: int


FULL = Sizes(
    whisper=dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=51865,
                 num_mel_bins=80, max_source_positions=1500, max_target_positions=448),
    wav2vec2=dict(vocab_size=32),  # transformers' defaults are wav2vec2 base's shape (95M parameters)
    llm=dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
             num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
             max_position_embeddings=4096),
    window_s=30.0, batch=16, label_tokens=48, vocab_cap=50000, lora_r=16,
)
TINY = Sizes(
    whisper=dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=512, num_mel_bins=80, max_source_positions=1500,
                 max_target_positions=64, decoder_start_token_id=1, pad_token_id=0, eos_token_id=0,
                 bos_token_id=0),
    wav2vec2=dict(vocab_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    llm=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, max_position_embeddings=512),
    window_s=2.0, batch=2, label_tokens=8, vocab_cap=500, lora_r=4,
)


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    base: str
    """nf4 (4-bit NF4, double-quantised), bf16, or fake-quant (dq_whisper's 4-bit quantisation-aware student)."""
    autocast: str
    optimizer: str
    question: str


CASES = [
    Case("qlora_nf4", "qlora", "nf4", "bf16", "adamw", "the QLoRA base"),
    Case("qlora_bf16", "qlora", "bf16", "bf16", "adamw", "the same LoRA on a bf16 base"),
    Case("qlora_nf4_paged8", "qlora", "nf4", "bf16", "paged_adamw_8bit", "the gpu presets' optimiser"),
    Case("qlora_nf4_fp16", "qlora", "nf4", "fp16", "adamw", "fp16 with loss scaling (GPUs without bf16)"),
    Case("dqlora_nf4", "dqlora", "nf4", "bf16", "paged_adamw_8bit", "CTC + KD to cached teacher states"),
    Case("dq_whisper_fq4", "dq_whisper", "fake-quant", "bf16", "adamw", "4-bit QAT student + KD"),
    Case("llm_adaptor_nf4", "llm_adaptor", "nf4", "bf16", "adamw", "adaptor + QLoRA LLM"),
    Case("llm_adaptor_bf16", "llm_adaptor", "bf16", "bf16", "adamw", "adaptor + LoRA on a bf16 LLM"),
    Case("whistle_nf4", "whistle", "nf4", "bf16", "adamw", "decoder LoRA on text-to-latent states"),
]
CUDA_ONLY = {"paged_adamw_8bit"}


# --------------------------------------------------------------------------- models from configs, on disk once


def write_models(sizes: Sizes, out: Path, dev: torch.device) -> dict[str, Path]:
    """Random-weight Whisper, wav2vec2-CTC and Qwen3-style LLM folders (bf16 safetensors) under `out`."""
    from transformers import (
        Qwen3Config,
        Qwen3ForCausalLM,
        Wav2Vec2Config,
        Wav2Vec2ForCTC,
        WhisperConfig,
        WhisperForConditionalGeneration,
    )

    made = {}
    for name, cls, config in (("whisper", WhisperForConditionalGeneration, WhisperConfig(**sizes.whisper)),
                              ("wav2vec2", Wav2Vec2ForCTC, Wav2Vec2Config(**sizes.wav2vec2)),
                              ("llm", Qwen3ForCausalLM, Qwen3Config(**sizes.llm))):
        torch.manual_seed(0)
        with dev:  # initialising 0.6B parameters is quicker on the GPU
            model = cls(config).to(torch.bfloat16)
        model.save_pretrained(out / name)
        made[name] = out / name
        del model
    return made


# --------------------------------------------------------------------------- one method's step per case

Built = tuple[torch.nn.Module, list, Callable[[int], tuple[torch.Tensor, dict[str, float]]]]
"""(the trained model, its parameters or parameter groups, the loss of micro-batch i)."""


def _precision(case: Case) -> PrecisionConfig:
    # fp16 autocast stands for a GPU without bf16, where the project computes the 4-bit layers in fp16 too.
    compute = "float16" if case.autocast == "fp16" else "auto"
    return PrecisionConfig(bits=4 if case.base == "nf4" else 16, compute_dtype=compute)


def _labels(sizes: Sizes, dev: torch.device) -> torch.Tensor:
    return torch.randint(0, sizes.vocab_cap, (sizes.batch, sizes.label_tokens), device=dev)


def _features(sizes: Sizes, model: torch.nn.Module, dev: torch.device) -> torch.Tensor:
    frames = 2 * models.window_positions(sizes.window_s)  # log-mel frames: 100 a second
    return torch.randn(sizes.batch, sizes.whisper["num_mel_bins"], frames, device=dev, dtype=models.input_dtype(model))


def _whisper_with_lora(path: Path, sizes: Sizes, case: Case, dev: torch.device, stacks: list[str]) -> torch.nn.Module:
    model = models.load_base_model(str(path), "whisper", _precision(case), dev)
    models.shrink_whisper_encoder(model, models.window_positions(sizes.window_s))
    depths = models.stack_depths(model.config.to_dict(), "whisper")
    lora = LoraConfig(r=sizes.lora_r, alpha=2.0 * sizes.lora_r, stacks=stacks)
    return models.add_lora(model, models.target_module_names(model, "whisper", lora, depths), lora)


def build_qlora(paths: dict[str, Path], sizes: Sizes, case: Case, dev: torch.device) -> Built:
    model = _whisper_with_lora(paths["whisper"], sizes, case, dev, ["encoder", "decoder"])
    feats, labels = _features(sizes, model, dev), _labels(sizes, dev)

    def loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        return model(input_features=feats, labels=labels).loss, {}

    return model, [p for p in model.parameters() if p.requires_grad], loss


def build_dqlora(paths: dict[str, Path], sizes: Sizes, case: Case, dev: torch.device) -> Built:
    """wav2vec2-base student in NF4 with encoder LoRA; KD to Whisper-small teacher states read from the cache."""
    from trainables.dqlora import aligned_lengths, kd_distance

    base = models.load_base_model(str(paths["wav2vec2"]), "wav2vec2", _precision(case), dev)
    base.config.mask_time_prob = 0.0  # as dqlora.build_student: the noise is the augmentation
    depths = models.stack_depths(base.config.to_dict(), "wav2vec2")
    lora = LoraConfig(r=sizes.lora_r, alpha=2.0 * sizes.lora_r, stacks=["encoder"])
    model = models.add_lora(base, models.target_module_names(base, "wav2vec2", lora, depths), lora)
    head = model.get_base_model().lm_head  # the CTC head trains from scratch, as in dqlora
    head.requires_grad_(True)
    teacher_dim = sizes.whisper["d_model"]
    projection = torch.nn.Linear(base.config.hidden_size, teacher_dim).to(dev)
    samples = int(sizes.window_s * 16_000)
    audio = torch.randn(sizes.batch, samples, device=dev, dtype=models.input_dtype(model))
    frames = int(base._get_feat_extract_output_lengths(torch.tensor(samples)))
    teacher = torch.randn(sizes.batch, models.window_positions(sizes.window_s), teacher_dim, device=dev,
                          dtype=torch.float16)  # the cache holds float16 states
    chars = torch.randint(1, sizes.wav2vec2["vocab_size"], (sizes.batch, frames // 3), device=dev)

    def loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(input_values=audio, labels=chars, output_hidden_states=True)
        lengths = aligned_lengths([frames] * sizes.batch, [teacher.shape[1]] * sizes.batch)
        kd = kd_distance(projection(out.hidden_states[-1].float()), teacher, lengths, "mse")
        return out.loss + 0.3 * kd, {"kd_loss": float(kd.detach())}

    adapters = [p for p in model.parameters() if p.requires_grad]
    return model, [{"params": adapters}, {"params": list(projection.parameters())}], loss


def build_dq_whisper(paths: dict[str, Path], sizes: Sizes, case: Case, dev: torch.device) -> Built:
    """A student of the teacher's encoder and 2 of its decoder layers, fake-quantised to 4 bits and trained whole,
    on cross-entropy plus top-32 KL and dynamically matched decoder states (the teacher's, as cached)."""
    from trainables.dq_whisper import combine, hidden_loss, kd_kl, student_from_teacher
    from trainables.dq_whisper_quant import QuantConfig, add_fake_quant

    teacher = models.load_base_model(str(paths["whisper"]), "whisper", PrecisionConfig(bits=32), dev)
    student = student_from_teacher(teacher, 0, 2).to(dev)
    teacher_layers = teacher.config.decoder_layers
    del teacher
    models.shrink_whisper_encoder(student, models.window_positions(sizes.window_s))
    student.requires_grad_(True)
    student.model.encoder.embed_positions.weight.requires_grad_(False)
    add_fake_quant(student, QuantConfig(bits=4))
    feats, labels = _features(sizes, student, dev), _labels(sizes, dev)
    k, d = 32, student.config.d_model
    top_vals = torch.randn(sizes.batch, sizes.label_tokens, k, device=dev)
    top_idx = torch.randint(0, sizes.vocab_cap, (sizes.batch, sizes.label_tokens, k), device=dev)
    t_hidden = torch.randn(sizes.batch, teacher_layers, sizes.label_tokens, d, device=dev)
    mask = torch.ones(sizes.batch, sizes.label_tokens, dtype=torch.bool, device=dev)

    def loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        out = student(input_features=feats, labels=labels, output_hidden_states=True)
        kl = kd_kl(out.logits, top_vals, top_idx, mask, 2.0)
        hl, _ = hidden_loss(list(out.decoder_hidden_states[1:]), list(t_hidden.unbind(1)), mask, "dynamic")
        return combine(out.loss, kl + hl, 0.5), {"kl": float(kl.detach())}

    return student, [p for p in student.parameters() if p.requires_grad], loss


def build_llm_adaptor(paths: dict[str, Path], sizes: Sizes, case: Case, dev: torch.device) -> Built:
    """An MLP adaptor (frames stacked by 5) from Whisper-small encoder states into an LLM with LoRA (qlora: NF4)."""
    from trainables.llm_adaptor import LLMConfig, LLMLoraConfig, load_llm
    from trainables.loaders.llm_adaptor import Adaptor, AudioLLM

    cfg = LLMConfig(model=str(paths["llm"]), adapt="qlora" if case.base == "nf4" else "lora",
                    lora=LLMLoraConfig(r=sizes.lora_r, alpha=2.0 * sizes.lora_r))
    llm = load_llm(cfg, str(paths["llm"]), dev)
    adaptor = Adaptor(sizes.whisper["d_model"], llm.get_input_embeddings().embedding_dim, kind="mlp").to(dev)
    model = AudioLLM(None, adaptor, llm, prefix_ids=list(range(2, 14)), suffix_ids=list(range(20, 26)), eos_id=1,
                     pad_id=0)
    states = torch.randn(sizes.batch, models.window_positions(sizes.window_s), sizes.whisper["d_model"], device=dev)
    targets = _labels(sizes, dev).tolist()

    def loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        return model.loss(states, targets), {}

    return model, [p for p in model.parameters() if p.requires_grad], loss


def build_whistle(paths: dict[str, Path], sizes: Sizes, case: Case, dev: torch.device) -> Built:
    """Decoder LoRA (NF4 base) on states the frozen text-to-latent encoder makes from target text (the tle mode)."""
    from trainables.whistle import TextToLatent, TLEConfig

    model = _whisper_with_lora(paths["whisper"], sizes, case, dev, ["decoder"])
    frames = models.window_positions(sizes.window_s)
    tle_cfg = TLEConfig(width=512, layers=4, heads=8, latent_dim=64, conv_width=384)  # the gpu preset's TLE
    tle = TextToLatent(tle_cfg, sizes.whisper["vocab_size"], sizes.whisper["d_model"], frames).to(dev).eval()
    tle.requires_grad_(False)
    ids = torch.randint(0, sizes.vocab_cap, (sizes.batch, sizes.label_tokens), device=dev)
    mask = torch.ones_like(ids, dtype=torch.bool)
    speech = torch.randint(frames // 4, frames + 1, (sizes.batch,))
    labels = _labels(sizes, dev)
    gen = torch.Generator().manual_seed(0)

    def loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            states = tle(ids, mask, speech, gen)[0]
        return model(encoder_outputs=(states,), labels=labels).loss, {}

    return model, [p for p in model.parameters() if p.requires_grad], loss


BUILDERS: dict[str, Callable[[dict[str, Path], Sizes, Case, torch.device], Built]] = {
    "qlora": build_qlora, "dqlora": build_dqlora, "dq_whisper": build_dq_whisper,
    "llm_adaptor": build_llm_adaptor, "whistle": build_whistle,
}


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    case: str
    method: str
    base: str
    autocast: str
    optimizer: str
    trainable_m: float
    weights_mb: float
    peak_vram_mb: float
    samples_per_s: float
    j_per_step: float
    loss_first: float
    loss_last: float
    error: str = ""


def _mb(dev: torch.device, peak: bool = False) -> float:
    if dev.type != "cuda":
        return float("nan")
    return (torch.cuda.max_memory_allocated(dev) if peak else torch.cuda.memory_allocated(dev)) / MB


def measure(case: Case, paths: dict[str, Path], sizes: Sizes, dev: torch.device, steps: int, warmup: int) -> Row:
    """Build the case's model, run `warmup` then `steps` optimiser steps, and read time, memory and energy."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    before = _mb(dev)
    torch.manual_seed(0)
    model, params, micro_loss = BUILDERS[case.method](paths, sizes, case, dev)
    weights = _mb(dev) - before
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    cfg = OptimConfig(name=case.optimizer, lr=1e-4, max_steps=warmup + steps, warmup_steps=0,
                      batch_size=sizes.batch, autocast=case.autocast)
    stepper = Stepper(cfg, params, dev, model)
    model.train()
    losses = [stepper.step(micro_loss)["loss"] for _ in range(warmup)]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    joules0 = stepper.energy_j
    t0 = time.perf_counter()
    losses += [stepper.step(micro_loss)["loss"] for _ in range(steps)]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    joules = stepper.energy_j
    per_step = (joules - joules0) / steps if joules is not None and joules0 is not None else float("nan")
    row = Row(case.name, case.method, case.base, case.autocast, case.optimizer,
              sum(p.numel() for p in flat) / 1e6, weights, _mb(dev, peak=True) - before,
              sizes.batch * steps / seconds, per_step, losses[0], losses[-1])
    del model, params, micro_loss, stepper, flat
    return row


def ratios(rows: list[Row]) -> dict[str, float]:
    """The comparisons the table is for, where both of a pair ran."""
    by = {r.case: r for r in rows if not r.error}
    out = {}

    def pair(key: str, a: str, b: str, field: str) -> None:
        if a in by and b in by and getattr(by[b], field) > 0:
            out[key] = getattr(by[a], field) / getattr(by[b], field)

    pair("qlora_peak_vram_nf4_over_bf16", "qlora_nf4", "qlora_bf16", "peak_vram_mb")
    pair("qlora_weights_nf4_over_bf16", "qlora_nf4", "qlora_bf16", "weights_mb")
    pair("qlora_speed_nf4_over_bf16", "qlora_nf4", "qlora_bf16", "samples_per_s")
    pair("qlora_peak_vram_paged8_over_adamw", "qlora_nf4_paged8", "qlora_nf4", "peak_vram_mb")
    pair("qlora_speed_fp16_over_bf16", "qlora_nf4_fp16", "qlora_nf4", "samples_per_s")
    pair("llm_peak_vram_nf4_over_bf16", "llm_adaptor_nf4", "llm_adaptor_bf16", "peak_vram_mb")
    pair("llm_weights_nf4_over_bf16", "llm_adaptor_nf4", "llm_adaptor_bf16", "weights_mb")
    pair("llm_speed_nf4_over_bf16", "llm_adaptor_nf4", "llm_adaptor_bf16", "samples_per_s")
    return out


def table(rows: list[Row]) -> str:
    head = ("case", "base", "autocast", "optimiser", "trainable M", "weights MB", "peak VRAM MB", "samples/s",
            "J/step", "loss first→last")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.error:
            lines.append(f"| {r.case} | {r.base} | {r.autocast} | {r.optimizer} | failed: {r.error} |")
            continue
        lines.append(f"| {r.case} | {r.base} | {r.autocast} | {r.optimizer} | {r.trainable_m:.2f} | {r.weights_mb:.0f} "
                     f"| {r.peak_vram_mb:.0f} | {r.samples_per_s:.1f} | {r.j_per_step:.1f} "
                     f"| {r.loss_first:.2f}→{r.loss_last:.2f} |")
    return "\n".join(lines)


def device_line(dev: torch.device) -> str:
    import bitsandbytes
    import peft
    import transformers

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return (f"{name}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"bitsandbytes {bitsandbytes.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny models; runs on the CPU (a check of the path, not a measurement)")
    p.add_argument("--steps", type=int, default=None, help="timed optimiser steps per case (default 20; tiny 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; tiny 1)")
    p.add_argument("--batch", type=int, default=None, help="utterances per step (default 16; tiny 2)")
    p.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated case names")
    args = p.parse_args(argv)
    known = {c.name: c for c in CASES}
    wanted = [s for s in args.cases.split(",") if s]
    unknown = [s for s in wanted if s not in known]
    if unknown:
        print(f"gpu.py: --cases: unknown {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    if not torch.cuda.is_available() and not args.tiny:
        print("gpu.py: no CUDA device here; this benchmark measures a GPU (--tiny checks its path on the CPU)",
              file=sys.stderr)
        return 2
    sizes = TINY if args.tiny else FULL
    if args.batch:
        sizes = Sizes(**{**asdict(sizes), "batch": args.batch})
    steps = args.steps or (2 if args.tiny else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    dev = torch.device("cuda", 0) if torch.cuda.is_available() and not args.tiny else torch.device("cpu")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per case otherwise
    print(f"device: {device_line(dev)}", flush=True)
    rows: list[Row] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        t0 = time.perf_counter()
        paths = write_models(sizes, Path(tmp), dev)
        print(f"models built from configs in {time.perf_counter() - t0:.1f} s", flush=True)
        for name in wanted:
            case = known[name]
            if case.optimizer in CUDA_ONLY and dev.type != "cuda":
                case = Case(case.name, case.method, case.base, case.autocast, "adamw", case.question)
            if case.autocast == "fp16" and dev.type != "cuda":
                case = Case(case.name, case.method, case.base, "off", case.optimizer, case.question)
            t0 = time.perf_counter()
            try:
                row = measure(case, paths, sizes, dev, steps, warmup)
            except Exception as exc:  # one case failing must not lose the others' numbers
                nan = float("nan")
                row = Row(case.name, case.method, case.base, case.autocast, case.optimizer, nan, nan, nan, nan, nan,
                          nan, nan, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            rows.append(row)
            state = row.error or f"{row.samples_per_s:.1f} samples/s, peak {row.peak_vram_mb:.0f} MB"
            print(f"  {case.name}: {state} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print()
    print(table(rows))
    found = ratios(rows)
    for key, value in found.items():
        print(f"{key}: {value:.2f}")
    def clean(v: object) -> object:
        return None if isinstance(v, float) and math.isnan(v) else v

    print("RESULT " + json.dumps({
        "device": device_line(dev), "tiny": args.tiny, "batch": sizes.batch, "window_s": sizes.window_s,
        "steps": steps, "warmup": warmup, "wall_s": round(time.perf_counter() - t_start, 1),
        "rows": [{k: clean(v) for k, v in asdict(r).items()} for r in rows],
        "ratios": {k: clean(v) for k, v in found.items()},
    }))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

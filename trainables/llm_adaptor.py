"""LLM audio adaptor: a frozen speech encoder's states, downsampled and projected by a trained adaptor into a
causal LLM's input embedding space, so that the LLM writes the transcript.

A sequence is a prompt (the LLM's chat template where it has one, else a plain instruction) with the audio's
adaptor outputs in the user's turn, then the transcript and the end token; only the transcript and end token
carry loss. Training has two phases, either of which may be zero steps:

1. `contrastive`: InfoNCE between the mean of the adaptor's outputs over an utterance's audio and the mean of
   the LLM's input embeddings of its transcript, with the batch's other utterances as negatives (symmetric:
   audio→text and text→audio, temperature τ). No LLM forward pass is needed, so a step is cheap; it points
   the adaptor's outputs at the right region of the LLM's embedding space before cross-entropy starts.
2. `ce`: cross-entropy on the transcript through the LLM (frozen, or adapted with LoRA, or with QLoRA: a
   4-bit base through the shared model loading, plus LoRA).

The encoder stays frozen, so its states are computed once per data set and read from a disk cache by every
trial and epoch (`trainables.blocks.speech_encoders`); evaluation runs the real encoder on audio, so latency and RTF
are measured end to end. The model pieces (encoder wrapper, downsampling, adaptor kinds, the prompt around
the audio, greedy decoding) are in `trainables/loaders/llm_adaptor.py`, the standalone loader that exported
results ship with; this file holds the method: its config, its loss, set-up, the two phases and the report.

Adaptor kinds: `linear`; `mlp` (Linear, ReLU, Linear: SLAM-ASR's projector); `swiglu` (a gated unit, the shape
Ultravox uses); `transformer` (projection, N Transformer layers, projection, LayerNorm). Downsampling: stack k
consecutive states, or a strided 1-D convolution of stride k.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from trainables import assets
from trainables.blocks import inference, models
from trainables.blocks.batching import epoch_batches
from trainables.blocks.checkpoints import Checkpointer
from trainables.blocks.config import ConfigError, merge, require, to_dict
from trainables.blocks.data import DataConfig, Splits, load_natural, load_natural_val, load_splits
from trainables.blocks.evaluation import EvalConfig, validator
from trainables.blocks.finish import Outcome
from trainables.blocks.inference import ArtifactError, Recogniser, Trial
from trainables.blocks.launch import entry_points
from trainables.blocks.loop import fit
from trainables.blocks.metrics import MB, deployed_size_bytes, param_counts
from trainables.blocks.models import PrecisionConfig
from trainables.blocks.speech_encoders import check_encoder_source, encoder_states, load_speech_encoder, rows
from trainables.blocks.training import OptimConfig, Stepper, device, seed_everything
from trainables.loaders.llm_adaptor import Adaptor, AudioLLM, SpeechEncoder, decode

AUDIO_MARK = "<<audio>>"
"""Where the audio goes in the rendered prompt; the text is split there before tokenising, so it never reaches
the tokenizer."""
LLM_FAMILIES_REFUSED = ("whisper", "wav2vec2", "hubert", "wavlm")

# --------------------------------------------------------------------------- config


@dataclass
class EncoderConfig:
    """The speech encoder, always frozen (its states are cached once per data set)."""

    model: str = "whisper-tiny.en"
    """Offline Whisper asset, local model folder or hub id: Whisper (its encoder), wav2vec2, HuBERT or WavLM."""

    def check(self) -> None:
        check_encoder_source(self.model, "model")


@dataclass
class AdaptorConfig:
    """Downsampling and projection from encoder states to LLM input embeddings."""

    kind: Literal["linear", "mlp", "swiglu", "transformer"] = "mlp"
    """linear; mlp (Linear, ReLU, Linear); swiglu (LayerNorm, SiLU-gated unit, Linear); transformer (projection,
    `layers` Transformer layers, projection, LayerNorm)."""
    downsample: Literal["stack", "conv"] = "stack"
    """stack: concatenate k consecutive states; conv: a 1-D convolution of kernel and stride k."""
    k: int = 5
    """Downsampling factor: k encoder states (20 ms each) become one LLM position."""
    width: int = 1024
    """Hidden width of mlp, swiglu and transformer."""
    layers: int = 2
    """Transformer layers (transformer only)."""
    heads: int = 8
    """Attention heads (transformer only); must divide width."""
    dropout: float = 0.0
    """Dropout inside the transformer adaptor."""

    def check(self) -> None:
        require(self.k >= 1, "k", f"must be at least 1, got {self.k}")
        require(self.width >= 1, "width", f"must be at least 1, got {self.width}")
        require(self.layers >= 1, "layers", f"must be at least 1, got {self.layers}")
        require(self.heads >= 1 and self.width % self.heads == 0, "heads", f"must divide width {self.width}, got {self.heads}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class LLMLoraConfig:
    """LoRA on the LLM's linear layers (llm.adapt lora or qlora)."""

    r: int = 16
    """Adapter rank."""
    alpha: float = 32.0
    """Scaling numerator: the update is (alpha / r)·B·A."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                        "down_proj"])
    """Names of the linear layers to adapt (a Llama/Qwen naming by default)."""

    def check(self) -> None:
        require(self.r >= 1, "r", f"rank must be at least 1, got {self.r}")
        require(self.alpha > 0, "alpha", f"must be positive, got {self.alpha}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(bool(self.modules), "modules", "name at least one linear layer")


@dataclass
class LLMConfig:
    """The causal language model that writes the transcript."""

    model: str = "smollm2-135m-instruct"
    """Offline asset, local model folder or hub id of any causal LM transformers loads (remote code is never run)."""
    adapt: Literal["frozen", "lora", "qlora"] = "frozen"
    """frozen; lora (LoRA on a float base); qlora (LoRA on a 4-bit NF4 base, the shared QLoRA loading)."""
    lora: LLMLoraConfig = field(default_factory=LLMLoraConfig)
    """Adapters (lora and qlora only)."""
    prompt: str = "Transcribe the audio."
    """The instruction before the audio in the user's turn."""
    chat_template: bool = True
    """Use the tokenizer's chat template where it has one; else the prompt, the audio and 'Transcript:'."""

    def check(self) -> None:
        assets.check_model_source(self.model, "model")
        config = assets.model_config_if_local(self.model)
        if config is not None:
            require(config.get("model_type") not in LLM_FAMILIES_REFUSED, "model",
                    f"must be a causal language model, not {config.get('model_type')}")


@dataclass
class ContrastiveConfig:
    """Phase 1: contrastive alignment of the adaptor's outputs with the LLM's embeddings of the transcript."""

    steps: int = 300
    """InfoNCE steps before cross-entropy (0 = cross-entropy only)."""
    lr: float = 1e-3
    """Peak learning rate (warm-up, then cosine decay over the phase)."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    batch_size: int = 32
    """Utterances per step: each one's transcript is the positive, the batch's others the negatives."""
    temperature: float = 0.07
    """τ: cosine similarities are divided by it."""

    def check(self) -> None:
        require(self.steps >= 0, "steps", f"must be >= 0, got {self.steps}")
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(0 <= self.warmup_steps <= max(self.steps, 0), "warmup_steps", "must be in [0, steps]")
        require(self.batch_size >= 2, "batch_size", f"needs at least 2 (one positive, one negative), got {self.batch_size}")
        require(self.temperature > 0, "temperature", f"must be positive, got {self.temperature}")


@dataclass
class DecodeConfig:
    """Greedy decoding (the transcript length limit is eval.max_new_tokens)."""

    repetition_penalty: float = 1.2
    """Divides the score of tokens already generated (1 = off)."""
    no_repeat_ngram_size: int = 4
    """Never repeat an n-gram of this size (0 = off)."""

    def check(self) -> None:
        require(self.repetition_penalty >= 1, "repetition_penalty", f"must be >= 1, got {self.repetition_penalty}")
        require(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0")


@dataclass
class LLMAdaptorConfig:
    """One LLM-adaptor run: a frozen encoder, an adaptor trained in two phases, a frozen or adapted LLM."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The frozen speech encoder."""
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    """Downsampling and projection."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The language model and how it is adapted."""
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    """Phase 1 (InfoNCE)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, max_steps=250, warmup_steps=10, batch_size=8))
    """Phase 2 (cross-entropy): optimiser, schedule, batch and step budget."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_train_items=1000, max_eval_items=100))
    """Speech to train and evaluate on, and the encoder window."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(batch_size=16, max_new_tokens=48))
    """Decoding batch, transcript length (also the longest trained on) and evaluation during phase 2."""
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    """Greedy decoding's repetition controls."""
    save_adaptor: bool = True
    """Save the adaptor (and the LLM's adapter, if any) as artifacts."""
    seed: int = 0
    """Seed of the adaptor's initialisation and the batch order."""

    def check(self) -> None:
        if self.llm.adapt == "qlora" and self.optim.max_steps == 0:
            raise ConfigError("llm.adapt: qlora trains LoRA in the cross-entropy phase; optim.max_steps is 0")
        assets.check_data_source(self.data.source, "data.source")


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The untrained adaptor (its random initialisation) in front of the frozen LLM: what training starts from."""
    return merge(config, {"contrastive": {"steps": 0, "warmup_steps": 0}, "optim": {"max_steps": 0, "warmup_steps": 0},
                          "llm": {"adapt": "frozen"}, "save_adaptor": False})


# --------------------------------------------------------------------------- losses and the prompt


def info_nce(audio: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of (audio, text) pairs: row i's positive is column i, the others are negatives.

    Both sides are L2-normalised, so the similarity matrix is cosine similarity divided by the temperature."""
    logits = F.normalize(audio, dim=-1) @ F.normalize(text, dim=-1).T / temperature
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def retrieval_top1(audio: torch.Tensor, text: torch.Tensor) -> float:
    """Fraction of utterances whose own transcript is the most similar of the batch's (audio→text)."""
    sims = F.normalize(audio, dim=-1) @ F.normalize(text, dim=-1).T
    return float((sims.argmax(dim=1) == torch.arange(len(sims), device=sims.device)).float().mean())


def masked_mean(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """(b, t, d) -> (b, d): the mean over each row's first `lengths[i]` positions."""
    on = torch.arange(x.shape[1], device=x.device)[None, :] < torch.tensor(lengths, device=x.device)[:, None]
    return (x * on[..., None]).sum(1) / on.sum(1, keepdim=True).clamp(min=1)


def prompt_ids(tokenizer: Any, prompt: str, chat_template: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the audio: the chat template's user turn (prompt, then the audio) up to the
    assistant's reply, or, without a template, the BOS token, the prompt, the audio and 'Transcript:'."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"{prompt}\n{AUDIO_MARK}"}],
                                             add_generation_prompt=True, tokenize=False)
        bos: list[int] = []
    else:
        text = f"{prompt}\n{AUDIO_MARK}\nTranscript:"
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    before, after = text.split(AUDIO_MARK)
    ids = tokenizer(before, add_special_tokens=False).input_ids, tokenizer(after, add_special_tokens=False).input_ids
    return bos + ids[0], ids[1]


def transcript_ids(tokenizer: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Each transcript's token ids (no special tokens), cut to `max_tokens` (the end token is added later)."""
    return [tokenizer(t.strip(), add_special_tokens=False).input_ids[:max_tokens] for t in texts]


# --------------------------------------------------------------------------- set-up, the two phases, the report


def load_llm(cfg: LLMConfig, source: str, dev: torch.device) -> torch.nn.Module:
    """The LLM, frozen, in float (fp32 on CPU, bf16/fp16 on CUDA) or, for qlora, 4-bit NF4; with LoRA when adapted."""
    bits = 4 if cfg.adapt == "qlora" else 16 if dev.type == "cuda" else 32
    llm = models.load_base_model(source, "causal_lm", PrecisionConfig(bits=bits), dev)
    if cfg.adapt == "frozen":
        return llm
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [m for m in cfg.lora.modules if m not in present]
    if missing:
        raise ConfigError(f"llm.lora.modules: {', '.join(missing)} not in {cfg.model} (its layers include "
                          f"{', '.join(sorted(n for n in present if n.endswith('proj'))[:8])})")
    return get_peft_model(llm, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                          target_modules=cfg.lora.modules, bias="none"))


def split_states(encoder: SpeechEncoder, source: str, window_s: float, data: DataConfig, split: str,
                 utts: list[dict], dev: torch.device) -> np.ndarray:
    """The frozen encoder's states of a split, from the disk cache (computed on first use)."""
    max_items = {"train": data.max_train_items, "val": data.max_val_items, "test": data.max_eval_items}[split]
    name = {"train": data.train_split, "val": data.val_split, "test": data.eval_split}[split]
    key = {"data": {"source": data.source, "hub_config": data.hub_config, "split": name, "max_items": max_items}}
    return encoder_states(source, window_s, lambda: [u["audio"] for u in utts], key, dev, f"adaptor-{split}",
                          encoder=encoder)


class AdaptorTask:
    """Decoding from audio through the real encoder, for `evaluation.evaluate` and the recogniser."""

    def __init__(self, tokenizer: Any, max_new_tokens: int, decoding: DecodeConfig) -> None:
        self.tokenizer, self.max_new_tokens, self.decoding = tokenizer, max_new_tokens, decoding

    def transcribe(self, model: AudioLLM, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        states = model.encoder([u["audio"] for u in utts])
        ids = model.generate_ids(states, self.max_new_tokens, self.decoding.repetition_penalty,
                                 self.decoding.no_repeat_ngram_size)
        return decode(self.tokenizer, ids)


@dataclass
class Setup:
    """Everything `setup` builds: the data and its cached encoder states, the model, the prompt and the targets."""

    cfg: LLMAdaptorConfig
    dev: torch.device
    encoder_source: str
    llm_source: str
    splits: Splits
    window_s: float
    model: AudioLLM
    tokenizer: Any
    task: AdaptorTask
    train_states: np.ndarray
    """(n, window frames, encoder hidden) float16, a memory map of the disk cache."""
    test_states: np.ndarray
    valid: dict[str, list[int]]
    """Adaptor positions that cover each utterance's audio, per split (the rest encode padding)."""
    targets: list[list[int]]
    """Transcript token ids of the training split."""


def setup(cfg: LLMAdaptorConfig) -> Setup:
    """Load the data, the encoder's cached states, the LLM (adapted as configured) and a fresh adaptor."""
    from transformers import AutoTokenizer

    dev = device()
    seed_everything(cfg.seed)
    encoder_source, llm_source = assets.resolve_model(cfg.encoder.model), assets.resolve_model(cfg.llm.model)
    splits = load_splits(cfg.data)
    window_s = splits.encoder_window_s
    encoder = load_speech_encoder(encoder_source, window_s, dev)
    trains = cfg.contrastive.steps > 0 or cfg.optim.max_steps > 0
    train_states = split_states(encoder, encoder_source, window_s, cfg.data, "train", splits.train, dev) if trains else np.zeros(0)
    test_states = split_states(encoder, encoder_source, window_s, cfg.data, "test", splits.test, dev)

    tokenizer = AutoTokenizer.from_pretrained(llm_source)
    llm = load_llm(cfg.llm, llm_source, dev)
    a = cfg.adaptor
    torch.manual_seed(cfg.seed)  # the adaptor's initialisation must not depend on what loading and caching drew before
    adaptor = Adaptor(encoder.hidden_size, llm.get_input_embeddings().embedding_dim, kind=a.kind,
                      downsample=a.downsample, k=a.k, width=a.width, layers=a.layers, heads=a.heads,
                      dropout=a.dropout).to(dev)
    prefix, suffix = prompt_ids(tokenizer, cfg.llm.prompt, cfg.llm.chat_template)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    model = AudioLLM(encoder, adaptor, llm, prefix, suffix, eos, pad)
    valid = {name: [adaptor.positions(encoder.valid_frames(u["audio"])) for u in utts]
             for name, utts in (("train", splits.train), ("test", splits.test))}
    targets = transcript_ids(tokenizer, [u["text"] for u in splits.train], cfg.eval.max_new_tokens)
    task = AdaptorTask(tokenizer, cfg.eval.max_new_tokens, cfg.decode)
    return Setup(cfg, dev, encoder_source, llm_source, splits, window_s, model, tokenizer, task, train_states,
                 test_states, valid, targets)


def text_embeddings(s: Setup, targets: list[list[int]]) -> torch.Tensor:
    """(b, llm hidden): the mean of the LLM's input embeddings of each transcript's tokens."""
    table = s.model.llm.get_input_embeddings()
    with torch.no_grad():
        return torch.stack([table(torch.tensor(t or [s.model.eos_id], device=s.dev)).float().mean(0) for t in targets])


def contrastive_batch(s: Setup, states: np.ndarray, idx: list[int], valid: list[int], targets: list[list[int]],
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled adaptor outputs, pooled transcript embeddings) of utterances `idx`."""
    audio = masked_mean(s.model.adaptor(rows(states, idx, s.dev)), [valid[i] for i in idx])
    return audio, text_embeddings(s, [targets[i] for i in idx])


def train(s: Setup) -> tuple[list[dict[str, float]], dict[str, Stepper | None]]:
    """Phase 1 (InfoNCE on the adaptor), then phase 2 (cross-entropy through the LLM). The history numbers steps
    across both phases: phase 2's first step follows phase 1's last."""
    cfg, c = s.cfg, s.cfg.contrastive
    steppers: dict[str, Stepper | None] = {"contrastive": None, "ce": None}
    lengths = [len(u["audio"]) for u in s.splits.train]
    trainable = [p for p in s.model.parameters() if p.requires_grad]
    ckpt = Checkpointer(cfg.optim.checkpoint_every, {"model": s.model}, total_steps=c.steps + cfg.optim.max_steps)
    if c.steps > 0:
        phase = OptimConfig(lr=c.lr, max_steps=c.steps, warmup_steps=c.warmup_steps, batch_size=c.batch_size,
                            max_grad_norm=cfg.optim.max_grad_norm, autocast=cfg.optim.autocast)
        stepper = steppers["contrastive"] = Stepper(phase, list(s.model.adaptor.parameters()), s.dev)
        batches = epoch_batches(lengths, c.batch_size, cfg.seed, 0, 1)

        def contrastive_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
            audio, text = contrastive_batch(s, s.train_states, next(batches), s.valid["train"], s.targets)
            return info_nce(audio.float(), text, c.temperature), {"retrieval_top1": retrieval_top1(audio.detach(), text)}

        s.model.adaptor.train()
        fit(ckpt, stepper, contrastive_loss, streams={"contrastive": batches},
            names={"loss": "contrastive_loss", "lr": "contrastive_lr"})
    if cfg.optim.max_steps > 0:
        stepper = steppers["ce"] = Stepper(cfg.optim, trainable, s.dev, s.model)
        batches = epoch_batches(lengths, cfg.optim.batch_size, cfg.seed + 1, 0, 1)

        def ce_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
            idx = next(batches)
            return s.model.loss(rows(s.train_states, idx, s.dev), [s.targets[i] for i in idx]), {}

        s.model.adaptor.train()
        s.model.llm.train(cfg.llm.adapt != "frozen")  # LoRA dropout on; a frozen LLM stays deterministic
        fit(ckpt, stepper, ce_loss, first=c.steps + 1, streams={"ce": batches}, eval_every=cfg.eval.every,
            validate=validator(s.task, s.model, s.splits.val, cfg.eval.batch_size, s.dev, torch.float32))
    return ckpt.history, steppers


@torch.no_grad()
def alignment(s: Setup) -> dict[str, float]:
    """InfoNCE loss and audio→text top-1 retrieval on the test split, within batches of eval.batch_size."""
    s.model.adaptor.eval()
    targets = transcript_ids(s.tokenizer, [u["text"] for u in s.splits.test], s.cfg.eval.max_new_tokens)
    n, b = len(s.splits.test), s.cfg.eval.batch_size
    # In-batch retrieval needs at least one negative: a last batch of one utterance is left out.
    batches = [idx for start in range(0, n, b) if len(idx := list(range(start, min(start + b, n)))) >= 2]
    losses, hits = [], []
    for idx in batches:
        audio, text = contrastive_batch(s, s.test_states, idx, s.valid["test"], targets)
        losses.append(float(info_nce(audio.float(), text, s.cfg.contrastive.temperature)) * len(idx))
        hits.append(retrieval_top1(audio, text) * len(idx))
    counted = sum(len(idx) for idx in batches)
    return {"contrastive_loss": sum(losses) / max(1, counted), "retrieval_top1": sum(hits) / max(1, counted)}


def measure(s: Setup, history: list[dict[str, float]], steppers: dict[str, Stepper | None]) -> Outcome:
    """The alignment the contrastive phase reached, the sizes of encoder, LLM and adaptor as deployed, and the
    adaptor (and the LLM's LoRA) to save."""
    cfg, model = s.cfg, s.model
    model.eval()
    aligned = alignment(s)
    # Sizes: the encoder and the LLM as their checkpoints store them (the LLM's 4-bit layers as packed),
    # the adaptor and LoRA as trained (fp32). The reference is the encoder and LLM as loaded, before adaptation.
    encoder_bytes = sum(p.numel() for p in model.encoder.parameters()) * assets.stored_itemsize(
        assets.model_files_dir(s.encoder_source))
    llm_itemsize = assets.stored_itemsize(assets.model_files_dir(s.llm_source))
    llm_parts = deployed_size_bytes(model.llm, llm_itemsize)
    adaptor_params = sum(p.numel() for p in model.adaptor.parameters())
    ce, con = steppers["ce"], steppers["contrastive"]
    nan = float("nan")
    metrics = {
        **aligned,
        "contrastive_train_loss": next((p["contrastive_loss"] for p in reversed(history) if "contrastive_loss" in p), nan),
        "contrastive_samples_per_s": con.samples_per_s if con else 0.0,
        "adaptor_params": float(adaptor_params), "adaptor_size_mb": 4 * adaptor_params / MB,
        "audio_positions": float(model.adaptor.positions(model.encoder.frames)),
        "encoder_window_s": s.window_s,
    }

    def save(out: Path) -> None:
        if cfg.save_adaptor and (ce or con):
            save_adaptor(model, s.window_s, cfg, out)
            if cfg.llm.adapt != "frozen":
                model.llm.save_pretrained(out / "llm_adapter")

    return Outcome(s.task, model, s.dev, torch.float32, cfg.eval.batch_size, val=s.splits.val, test=s.splits.test,
                   natural=load_natural(cfg.data.source, cfg.data.eval_split, cfg.data.max_eval_items),
                   natural_val=load_natural_val(cfg.data),
                   size_bytes=encoder_bytes + llm_parts["total"] + 4 * adaptor_params,
                   original_bytes=encoder_bytes + assets.stored_bytes(assets.model_files_dir(s.llm_source)),
                   counts=param_counts(model), stepper=ce, other_steppers=(con,), metrics=metrics,
                   json_files={"size_breakdown.json": {**llm_parts, "encoder": encoder_bytes,
                                                       "adaptor": 4 * adaptor_params}}, save=save)


def save_adaptor(model: AudioLLM, window_s: float, cfg: LLMAdaptorConfig, out: Path) -> None:
    """adaptor.safetensors and audio_llm.json: what the loader needs besides the encoder and the LLM."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.adaptor.state_dict().items()}, str(out / "adaptor.safetensors"))
    info = {"adaptor": model.adaptor.shape, "prefix_ids": model.prefix_ids, "suffix_ids": model.suffix_ids,
            "eos_id": model.eos_id, "pad_id": model.pad_id, "window_s": window_s,
            "decoding": {"max_new_tokens": cfg.eval.max_new_tokens, **to_dict(cfg.decode)}}
    (out / "audio_llm.json").write_text(json.dumps(info, indent=2))


# --------------------------------------------------------------------------- using the result


def load_result(trial: Trial, dev: torch.device, *, merged: bool = False) -> tuple[LLMAdaptorConfig, AudioLLM, Any]:
    """(config, model, tokenizer) of a finished trial: the encoder at the trained window, the trained adaptor, the
    LLM with its adapter (merged in, on a dequantised base, when `merged`)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    cfg = trial.parsed(parse_config)
    if not (trial.path / "adaptor.safetensors").exists():
        raise ArtifactError(f"{trial.path}: no adaptor.safetensors (this trial trained nothing, or save_adaptor was false)")
    info = json.loads(trial.file("audio_llm.json").read_text())
    encoder = load_speech_encoder(assets.resolve_model(cfg.encoder.model), info["window_s"], dev)
    llm_source = assets.resolve_model(cfg.llm.model)
    # The base as it was trained against (4-bit for qlora); dequantised before merging, so the merged weights
    # are the ones that were evaluated.
    llm = load_llm(LLMConfig(model=cfg.llm.model, adapt="frozen"), llm_source, dev) if cfg.llm.adapt != "qlora" else \
        models.load_base_model(llm_source, "causal_lm", PrecisionConfig(bits=4), dev)
    if cfg.llm.adapt != "frozen":
        from peft import PeftModel

        if merged:
            inference.dequantise_linears(llm)
        llm = PeftModel.from_pretrained(llm, str(trial.file("llm_adapter", "llm.adapt lora/qlora writes it")))
        llm = llm.merge_and_unload() if merged else llm
    adaptor = Adaptor(**info["adaptor"])
    adaptor.load_state_dict(load_file(str(trial.path / "adaptor.safetensors")))
    model = AudioLLM(encoder, adaptor.to(dev), llm, info["prefix_ids"], info["suffix_ids"], info["eos_id"], info["pad_id"])
    return cfg, model.eval(), AutoTokenizer.from_pretrained(llm_source)


def recogniser(artifacts: Path, device: torch.device) -> Recogniser:
    """The encoder, adaptor and LLM as they were evaluated, decoding audio cut into the trained window."""
    trial = inference.read_trial(artifacts)
    cfg, model, tokenizer = load_result(trial, device)
    task = AdaptorTask(tokenizer, cfg.eval.max_new_tokens, cfg.decode)
    return inference.TaskRecogniser(task, model, device, torch.float32, model.encoder.n_samples / 16_000,
                                    cfg.eval.batch_size)


def export(artifacts: Path, out_dir: Path, adapter_only: bool = False) -> str:
    """A folder the standalone loader (trainables/loaders/llm_adaptor.py, copied in as load_audio_llm.py) reads:
    encoder/, llm/ (LoRA merged, fp16), adaptor.safetensors, audio_llm.json; or, `adapter_only`, the adaptor and
    the LLM's LoRA adapter alone, naming the encoder and LLM they belong to."""
    trial = inference.read_trial(artifacts)
    cfg = trial.parsed(parse_config)
    out = inference.prepare_out_dir(out_dir)
    encoder_name, llm_name = inference.published_name(cfg.encoder.model), inference.published_name(cfg.llm.model)
    if adapter_only:
        trial.file("adaptor.safetensors", "save_adaptor writes it")
        for name in ("adaptor.safetensors", "audio_llm.json"):
            (out / name).write_bytes((trial.path / name).read_bytes())
        if cfg.llm.adapt != "frozen":
            shutil.copytree(trial.path / "llm_adapter", out / "llm_adapter")
        inference.write_manifest(out, trial, "llm_adaptor", "adaptor", encoder=encoder_name, llm=llm_name)
        return (f"llm_adaptor: the {cfg.adaptor.kind} adaptor (k={cfg.adaptor.k}) between {encoder_name} and {llm_name}"
                f"{' and the LLM LoRA adapter' if cfg.llm.adapt != 'frozen' else ''} in {out}")
    _, model, tokenizer = load_result(trial, torch.device("cpu"), merged=True)
    save_encoder(model.encoder, assets.resolve_model(cfg.encoder.model), out / "encoder")
    model.llm.to(torch.float16).save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    for name in ("adaptor.safetensors", "audio_llm.json"):
        (out / name).write_bytes((trial.path / name).read_bytes())
    inference.copy_loader("llm_adaptor", out, "load_audio_llm.py")
    inference.write_manifest(out, trial, "llm_adaptor", "audio_llm", encoder=encoder_name, llm=llm_name)
    return (f"llm_adaptor: {encoder_name} -> {cfg.adaptor.kind} adaptor -> {llm_name}"
            f"{' (LoRA merged)' if cfg.llm.adapt != 'frozen' else ''} in {out}; load with "
            f"load_audio_llm.load('{out}').transcribe([audio_16khz, ...])")


def save_encoder(encoder: SpeechEncoder, source: str, out: Path) -> None:
    """The encoder as a model folder the loader reads: a Whisper encoder keeps its trained window (its position
    table cut to it, `max_source_positions` saying so), with the feature extractor padding to that window."""
    from transformers import AutoFeatureExtractor

    encoder.encoder.save_pretrained(out)
    fe = AutoFeatureExtractor.from_pretrained(source)
    if encoder.kind == "whisper":
        fe.n_samples, fe.nb_max_frames = encoder.n_samples, encoder.n_samples // fe.hop_length
    fe.save_pretrained(out)


# --------------------------------------------------------------------------- the method contract

CONFIG = LLMAdaptorConfig
MAX_WORKERS: int | None = 1  # one Ray Train worker per trial: the adaptor is small and reads one cache of states
parse_config, run, train_loop_per_worker, finish = entry_points(CONFIG, setup, train, measure)
# baseline_config (the untrained adaptor's config) is defined with the config, above.

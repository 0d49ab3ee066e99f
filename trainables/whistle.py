"""WhisTLE: text-only domain adaptation of Whisper through a text-to-latent encoder (TLE).

A team moving a recogniser into a new domain often has the domain's text and little of its speech.
WhisTLE (arXiv 2509.10452) works in two phases:

1. On paired speech and text of any domain (`data`, the source), train the TLE, a small VAE from text
   to states shaped like Whisper's encoder output, with the loss

       MSE(TLE(text), encoder(audio)) + β · Σ_d max(0, KL_d − free_bits)

   where KL_d is the batch-mean KL divergence of latent dimension d from N(0, 1), and β is constant or
   annealed. The frozen encoder's states are computed once per data set and cached on disk; the trained
   TLE is cached by its config and data, so every phase-2 trial of a sweep that shares them reuses it.
2. Tune Whisper's decoder (LoRA on it, or all of it) with cross-entropy on the target domain's text
   alone, the TLE's states standing in for the encoder's. At inference the real encoder is back, so
   adaptation costs nothing at run time.

The TLE: a Transformer over the ASR tokenizer's tokens; a global latent z ~ N(μ, σ²) from the mean of
its states (log σ² clamped); the token states projected to the encoder's width and stretched over the
number of frames the text would take to say, then a learned "no more speech" state for the rest of the
encoder window (Whisper's encoder sees a fixed window: what the decoder reads past the speech is the
encoding of padding); learned positional embeddings; residual 1-D convolution blocks modulated by z
(FiLM). How many frames a text takes comes from a length model fitted on the paired data: least squares
of speech frames on the text's characters and words. Speaking time is close to linear in the number of
phonemes, which characters and words track well, and a linear fit needs no training loop and cannot
overfit a few hundred utterances (its held-out error is reported as `length_rel_error`).

Adaptation modes (`mode`), so that one ablation compares them on the same data: `none` (the untuned
model), `text_lm` (the decoder tuned on the target text with the encoder's states of silence: a
language-model-only baseline), `tts` (the target text spoken by espeak-ng with the corpus's training
voices, tuned as paired data, the real encoder's states cached once), `tle`, and `tts+tle` (each batch
half TTS, half TLE). `source_ratio` interleaves steps on the source domain's paired audio so that it is
not forgotten; `wer_source` measures how much it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from trainables import assets
from trainables.assets.cache import build_once, cache_root, input_key
from trainables.assets.corpus import CORPORA
from trainables.blocks import inference, models
from trainables.blocks.audio import SAMPLE_RATE
from trainables.blocks.batching import epoch_batches, whisper_labels
from trainables.blocks.checkpoints import Checkpointer
from trainables.blocks.config import ConfigError, merge, require, to_dict
from trainables.blocks.data import DataConfig, Splits, load_natural, load_speech, load_splits, load_texts
from trainables.blocks.evaluation import EvalConfig, validator
from trainables.blocks.finish import Outcome
from trainables.blocks.inference import ArtifactError, Recogniser, Trial
from trainables.blocks.launch import entry_points
from trainables.blocks.loop import fit
from trainables.blocks.metrics import MB, deployed_size_bytes, param_counts
from trainables.blocks.models import LoraConfig, PrecisionConfig
from trainables.blocks.speech_encoders import encoder_states, load_speech_encoder
from trainables.blocks.tasks import WhisperSeq2Seq
from trainables.blocks.training import OptimConfig, Stepper, device, seed_everything

Mode = Literal["none", "text_lm", "tts", "tle", "tts+tle"]
SAMPLES_PER_FRAME = SAMPLE_RATE // 50
"""Whisper's encoder gives one state per 20 ms (two 10 ms log-mel frames)."""

# --------------------------------------------------------------------------- config


@dataclass
class TargetConfig:
    """The target domain: its text (for adaptation) and its speech (for evaluation only)."""

    text: str = "espeak-clinical"
    """A plain-text file, one sentence per line; or an offline corpus or hub data set whose train-split
    transcripts (never its audio) are the target text."""
    max_sentences: int | None = None
    """Use at most this many target sentences (None = all)."""
    eval_source: str = "espeak-clinical"
    """Target-domain speech to evaluate on: an offline corpus, a local folder of audio + transcripts, or a hub data set."""
    hub_config: str | None = None
    """Hub data set configuration of eval_source, e.g. en_us for google/fleurs."""
    eval_split: str = "test"
    """Split of eval_source for `wer`."""
    max_eval_items: int | None = 100
    """Target utterances evaluated."""

    def check(self) -> None:
        require(self.max_sentences is None or self.max_sentences >= 1, "max_sentences",
                f"must be at least 1 or null, got {self.max_sentences}")
        require(self.max_eval_items is None or self.max_eval_items >= 1, "max_eval_items",
                f"must be at least 1 or null, got {self.max_eval_items}")
        try:
            if _names_hub_dataset(self.text):  # its transcripts are read when the run starts
                assets.check_data_source(self.text, "text")
            else:
                load_texts(self.text, max_items=1, field="text")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        assets.check_data_source(self.eval_source, "eval_source")


@dataclass
class TLEConfig:
    """The text-to-latent encoder and its phase-1 training (shared by every trial with the same values)."""

    width: int = 256
    """Width of the text Transformer."""
    layers: int = 2
    """Text Transformer layers."""
    heads: int = 4
    """Attention heads of the text Transformer."""
    latent_dim: int = 32
    """Dimensions of the global latent z."""
    conv_blocks: int = 3
    """Residual FiLM-modulated 1-D convolution blocks over the frames."""
    conv_width: int = 128
    """Channels inside each convolution block (a bottleneck: the frames are `d_model` wide)."""
    kernel: int = 5
    """Convolution kernel size, in frames (odd)."""
    max_tokens: int = 96
    """Longest text, in tokenizer tokens (longer ones are cut)."""
    logvar_clamp: float = 8.0
    """log σ² is clamped to [-logvar_clamp, logvar_clamp]."""
    steps: int = 400
    """Phase-1 optimiser steps."""
    lr: float = 1e-3
    """Phase-1 peak learning rate (warm-up over 5% of the steps, then cosine)."""
    batch_size: int = 16
    """Phase-1 utterances per step."""
    beta: float = 0.01
    """Weight β of the KL term (the final value when annealed)."""
    beta_start: float = 0.0
    """β at the first step of an annealed schedule."""
    beta_schedule: Literal["constant", "linear", "cyclical"] = "linear"
    """constant (β throughout); linear (beta_start to beta over anneal_steps, then beta); cyclical
    (cycles of anneal_steps: linear over each cycle's first half, beta for its second half)."""
    anneal_steps: int = 200
    """Length of the linear warm-up, or of one cycle."""
    free_bits: float = 0.0
    """Nats per latent dimension the KL is not charged for: KL_d becomes max(0, KL_d − free_bits)."""
    seed: int = 0
    """Seed of the TLE's initialisation, batches and samples (a trial's own seed does not retrain it)."""

    def check(self) -> None:
        for name in ("width", "layers", "heads", "latent_dim", "conv_blocks", "conv_width", "max_tokens", "steps",
                     "batch_size", "anneal_steps"):
            require(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")
        require(self.width % self.heads == 0, "heads", f"must divide width {self.width}, got {self.heads}")
        require(self.kernel % 2 == 1, "kernel", f"must be odd (the frames keep their number), got {self.kernel}")
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.logvar_clamp > 0, "logvar_clamp", f"must be positive, got {self.logvar_clamp}")
        for name in ("beta", "beta_start", "free_bits"):
            value = getattr(self, name)
            require(math.isfinite(value) and value >= 0, name, f"must be >= 0, got {value}")

    def beta_at(self, step: int) -> float:
        """β at phase-1 step `step` (counted from 0)."""
        if self.beta_schedule == "constant":
            return self.beta
        position = step % self.anneal_steps if self.beta_schedule == "cyclical" else step
        ramp = self.anneal_steps / 2 if self.beta_schedule == "cyclical" else self.anneal_steps
        return self.beta_start + (self.beta - self.beta_start) * min(1.0, position / ramp)


@dataclass
class WhisTLEConfig:
    """One WhisTLE run: phase 1 (the TLE, cached) and phase 2 (the decoder, per trial)."""

    model: str = "whisper-tiny.en"
    """Whisper to adapt: offline asset, local directory or hub id (gpu: openai/whisper-small)."""
    mode: Mode = "tle"
    """none, text_lm, tts, tle or tts+tle (see the module's docstring)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_train_items=1000, max_val_items=100))
    """The source domain's paired speech: trains the TLE (train split), checks its length model
    (validation) and measures forgetting (test: wer_source). Also the encoder window."""
    target: TargetConfig = field(default_factory=TargetConfig)
    """The target domain's text and evaluation speech."""
    tle: TLEConfig = field(default_factory=TLEConfig)
    """The text-to-latent encoder and its phase-1 training."""
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32.0, stacks=["decoder"]))
    """Adapters on the decoder (the encoder stays frozen); enabled: false tunes the whole decoder."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, max_steps=100, warmup_steps=10, batch_size=16))
    """Phase 2: optimiser, schedule, batch and step budget."""
    source_ratio: float = 0.0
    """Fraction of phase-2 steps spent on the source domain's paired audio (0 = target text only)."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(max_new_tokens=64))
    """Decoding batch, transcript length and evaluation during phase 2."""
    save_adapter: bool = True
    """Save the decoder adapter (or the tuned decoder) and the TLE as artifacts."""
    seed: int = 0
    """Seed of phase 2: adapter initialisation, batch order, TLE samples."""

    def check(self) -> None:
        require("encoder" not in self.lora.stacks, "lora.stacks", "WhisTLE tunes the decoder only; use [decoder]")
        require(self.lora.kind == "lora", "lora.kind", "AdaLoRA's rank pruning runs in the qlora method only "
                "(lora.kind adalora there); this method trains fixed-rank LoRA")
        require(0 <= self.source_ratio < 1, "source_ratio", f"must be in [0, 1), got {self.source_ratio}")
        require(self.data.natural_val_items == 0, "data.natural_val_items", "WhisTLE is judged on its target domain "
                "(target.eval_source), not on data.source's natural voice; leave it 0 and select on val_wer")
        assets.check_model_source(self.model, "model")
        assets.check_data_source(self.data.source, "data.source")
        assets.check_model_language(self.model, self.data.language, "model")
        model_config = assets.model_config_if_local(self.model)
        if model_config is not None:
            require(model_config.get("model_type") == "whisper", "model", f"must be a Whisper model, not {model_config.get('model_type')}")
            models.check_lora_against_model(self.lora, model_config)


def _names_hub_dataset(text: str) -> bool:
    """Whether target.text names a hub data set rather than a text file or an offline corpus."""
    path = Path(text).expanduser()
    filename = path.suffix.lower() in (".txt", ".text", ".lst", ".tsv", ".csv") or text.startswith(("/", ".", "~"))
    return not (path.exists() or filename or text in CORPORA)


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The untuned model as released (Whisper's own 30 s window) on the target domain's speech: no TLE, no
    training. (Mode `none` is the untuned model at the trials' window, the like-for-like control.)"""
    return merge(config, {"mode": "none", "data": {"encoder_window_s": 30.0}, "optim": {"max_steps": 0, "warmup_steps": 0},
                          "save_adapter": False})


# --------------------------------------------------------------------------- the text-to-latent encoder


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(N(μ, σ²) ‖ N(0, 1)) of each latent dimension, in nats: ½(μ² + σ² − 1 − log σ²)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(0)


def vae_loss(pred: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float,
             free_bits: float) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE + β·Σ_d max(0, KL_d − free_bits); with β = 0 exactly the MSE (the KL is not even added)."""
    mse = F.mse_loss(pred.float(), target.float())
    kl = kl_per_dim(mu.float(), logvar.float())
    parts = {"mse": float(mse.detach()), "kl": float(kl.sum().detach())}
    if beta == 0:
        return mse, parts
    return mse + beta * (kl - free_bits).clamp_min(0).sum(), parts


class FiLMConvBlock(torch.nn.Module):
    """x + W_out(GELU(conv(W_in(LN(x)·(1 + γ(z)) + β(z))))): a residual convolution over frames, modulated by z."""

    def __init__(self, d_model: int, width: int, kernel: int, latent_dim: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(d_model)
        self.film = torch.nn.Linear(latent_dim, 2 * d_model)
        self.inp = torch.nn.Linear(d_model, width)
        self.conv = torch.nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.out = torch.nn.Linear(width, d_model)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, shift = self.film(z)[:, None, :].chunk(2, dim=-1)
        h = self.inp(self.norm(x) * (1 + gamma) + shift)
        h = F.gelu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        return x + self.out(h)


class TextToLatent(torch.nn.Module):
    """Text tokens -> (batch, frames, d_model) states shaped like Whisper's encoder output, via a global latent z."""

    def __init__(self, cfg: TLEConfig, vocab_size: int, d_model: int, frames: int) -> None:
        super().__init__()
        self.cfg, self.frames = cfg, frames
        self.embed = torch.nn.Embedding(vocab_size, cfg.width)
        self.token_pos = torch.nn.Embedding(cfg.max_tokens, cfg.width)
        layer = torch.nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.1, batch_first=True,
                                                 norm_first=True)
        self.text = torch.nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.text_norm = torch.nn.LayerNorm(cfg.width)
        self.to_latent = torch.nn.Linear(cfg.width, 2 * cfg.latent_dim)
        self.to_frames = torch.nn.Linear(cfg.width, d_model)
        self.after_speech = torch.nn.Parameter(torch.zeros(d_model))
        self.frame_pos = torch.nn.Embedding(frames, d_model)
        self.blocks = torch.nn.ModuleList(FiLMConvBlock(d_model, cfg.conv_width, cfg.kernel, cfg.latent_dim)
                                          for _ in range(cfg.conv_blocks))
        self.out = torch.nn.Linear(d_model, d_model)
        # The length model: speech frames ≈ a·characters + b·words + c (fitted by least squares, not trained).
        self.register_buffer("length_coef", torch.zeros(3))

    def predict_frames(self, texts: list[str]) -> torch.Tensor:
        """Speech frames each text is predicted to take, between 1 and the window's frames."""
        features = torch.tensor([text_features(t) for t in texts], dtype=torch.float64)
        return (features @ self.length_coef.double()).round().clamp(1, self.frames).long()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, speech_frames: torch.Tensor,
                generator: torch.Generator | None = None, sample: bool = True,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(states, μ, log σ²) for token ids (batch, tokens) with their mask; z is sampled (or μ when not `sample`)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.text(self.embed(ids) + self.token_pos(positions), src_key_padding_mask=~mask)
        h = self.text_norm(h)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        mu, logvar = self.to_latent(pooled).chunk(2, dim=-1)
        logvar = logvar.clamp(-self.cfg.logvar_clamp, self.cfg.logvar_clamp)
        z = mu
        if sample:
            noise = torch.randn(mu.shape, generator=generator, device="cpu").to(mu.device, mu.dtype)
            z = mu + (0.5 * logvar).exp() * noise
        tokens = self.to_frames(h)
        rows = []
        for b in range(ids.shape[0]):  # stretch each text's own tokens over its own speech frames
            n, frames = int(mask[b].sum()), int(speech_frames[b])
            speech = F.interpolate(tokens[b, :n].T[None], size=frames, mode="linear", align_corners=False)[0].T
            rows.append(torch.cat([speech, self.after_speech.expand(self.frames - frames, -1)]))
        x = torch.stack(rows) + self.frame_pos.weight[None]
        for block in self.blocks:
            x = block(x, z)
        return self.out(x), mu, logvar


def text_features(text: str) -> list[float]:
    """[characters, words, 1]: what the length model regresses speech frames on."""
    return [float(len(text)), float(len(text.split())), 1.0]


def fit_length_model(texts: list[str], frames: list[int]) -> torch.Tensor:
    """Least-squares coefficients of speech frames on `text_features`."""
    x = np.array([text_features(t) for t in texts])
    coef, *_ = np.linalg.lstsq(x, np.array(frames, dtype=np.float64), rcond=None)
    return torch.tensor(coef, dtype=torch.float32)


def speech_frames(utt: dict, window_frames: int) -> int:
    """Encoder states that cover an utterance's audio (one per 20 ms), at most the window's."""
    return min(math.ceil(len(utt["audio"]) / SAMPLES_PER_FRAME), window_frames)


def tokenize(tokenizer: Any, texts: list[str], max_tokens: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of the texts for the TLE: the ASR tokenizer's tokens without special tokens, padded with 0."""
    rows = [tokenizer(" " + t.strip(), add_special_tokens=False).input_ids[:max_tokens] or [0] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
    return ids.to(dev), mask.to(dev)


# --------------------------------------------------------------------------- the TLE, trained once per config and data (cached)


def train_tle(cfg: TLEConfig, tokenizer: Any, d_model: int, window_s: float, train: list[dict], val: list[dict],
              states: np.ndarray, val_states: np.ndarray, dev: torch.device) -> tuple[TextToLatent, dict[str, Any]]:
    """Phase 1: fit the length model, then train the TLE on (text, encoder states) pairs; returns it and its record.

    It runs inside whichever trial first needs this TLE and is cached for every other: its loop keeps no
    checkpoint of its own (a trial restarted meanwhile trains it again, from the same seed)."""
    frames = models.window_positions(window_s)
    torch.manual_seed(cfg.seed)
    tle = TextToLatent(cfg, len(tokenizer), d_model, frames).to(dev)
    tle.length_coef.copy_(fit_length_model([u["text"] for u in train], [speech_frames(u, frames) for u in train]))
    truth = torch.tensor([speech_frames(u, frames) for u in val], dtype=torch.float64)
    length_rel_error = float(((tle.predict_frames([u["text"] for u in val]) - truth).abs() / truth).mean())

    optim = OptimConfig(lr=cfg.lr, max_steps=cfg.steps, warmup_steps=max(1, cfg.steps // 20), batch_size=cfg.batch_size,
                        autocast="off")
    stepper = Stepper(optim, [p for p in tle.parameters() if p.requires_grad], dev, tle)
    batches = epoch_batches([len(u["text"]) for u in train], cfg.batch_size, cfg.seed, 0, 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    beta = 0.0

    def anneal(step: int) -> None:
        nonlocal beta
        beta = cfg.beta_at(step - 1)  # the schedule counts steps from 0

    def micro_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = next(batches)
        utts = [train[i] for i in idx]
        ids, mask = tokenize(tokenizer, [u["text"] for u in utts], cfg.max_tokens, dev)
        lengths = torch.tensor([speech_frames(u, frames) for u in utts])
        pred, mu, logvar = tle(ids, mask, lengths, gen)
        target = torch.from_numpy(np.asarray(states[idx], dtype=np.float32)).to(dev)
        loss, parts = vae_loss(pred, target, mu, logvar, beta, cfg.free_bits)
        return loss, {**parts, "beta": beta}

    ckpt = Checkpointer(0, {"tle": tle}, total_steps=cfg.steps)
    tle.train()
    fit(ckpt, stepper, micro_loss, before_step=anneal, progress_bar="TLE phase 1 (once per config)")
    history = ckpt.history
    tle.eval()
    val_mse, kl_d = tle_fit(tle, tokenizer, val, val_states, cfg, dev)
    record = {"length_rel_error": length_rel_error, "mse": val_mse, "kl": float(kl_d.sum()),
              "kl_active_dims": int((kl_d > max(cfg.free_bits, 0.01)).sum()), "history": history,
              "train_samples_per_s": stepper.samples_per_s}
    return tle, record


@torch.no_grad()
def tle_fit(tle: TextToLatent, tokenizer: Any, val: list[dict], val_states: np.ndarray, cfg: TLEConfig,
            dev: torch.device) -> tuple[float, torch.Tensor]:
    """MSE (z = μ) against the real encoder on held-out utterances, and each latent dimension's mean KL."""
    frames = tle.frames
    errors, kls = [], []
    for start in range(0, len(val), cfg.batch_size):
        utts = val[start : start + cfg.batch_size]
        ids, mask = tokenize(tokenizer, [u["text"] for u in utts], cfg.max_tokens, dev)
        pred, mu, logvar = tle(ids, mask, torch.tensor([speech_frames(u, frames) for u in utts]), sample=False)
        target = torch.from_numpy(np.asarray(val_states[start : start + len(utts)], dtype=np.float32)).to(dev)
        errors.append(F.mse_loss(pred, target, reduction="sum").item() / target[0].numel())
        kls.append(kl_per_dim(mu, logvar) * len(utts))
    return sum(errors) / len(val), torch.stack(kls).sum(0).cpu() / len(val)


def cached_tle(cfg: TLEConfig, source: str, tokenizer: Any, d_model: int, window_s: float, data: DataConfig,
               splits: Splits, dev: torch.device) -> tuple[TextToLatent, dict[str, Any]]:
    """The phase-1 TLE for this config, data and encoder: trained once, then read from the cache by every trial."""
    frames = models.window_positions(window_s)
    data_key = {"source": data.source, "hub_config": data.hub_config, "max_train_items": data.max_train_items,
                "max_val_items": data.max_val_items}
    inputs = {"tle": to_dict(cfg), "model": source, "window_s": window_s, "data": data_key,
              "n_train": len(splits.train), "n_val": len(splits.val), "version": 1}
    target = cache_root() / "tle" / f"tle-{input_key(inputs)}"

    def build(out: Path) -> None:
        states = encoder_states(source, window_s, lambda: [u["audio"] for u in splits.train],
                                {"data": data_key, "split": "train"}, dev, "source-train")
        val_states = encoder_states(source, window_s, lambda: [u["audio"] for u in splits.val],
                                    {"data": data_key, "split": "validation"}, dev, "source-validation")
        tle, record = train_tle(cfg, tokenizer, d_model, window_s, splits.train, splits.val, states, val_states, dev)
        torch.save(tle.state_dict(), out / "tle.pt")
        (out / "record.json").write_text(json.dumps(record))

    build_once(target, build, inputs)
    tle = TextToLatent(cfg, len(tokenizer), d_model, frames)
    tle.load_state_dict(torch.load(target / "tle.pt", map_location="cpu", weights_only=True))
    return tle.to(dev).eval().requires_grad_(False), json.loads((target / "record.json").read_text())


# --------------------------------------------------------------------------- set-up, training, evaluation, report


@dataclass
class Setup:
    """Everything `setup` builds: the source splits, the target text and speech, the model, and what stands in
    for the encoder in phase 2 (TLE, cached TTS states, the states of silence)."""

    cfg: WhisTLEConfig
    dev: torch.device
    source: str
    splits: Splits
    """The source domain's paired speech (its test split gives wer_source)."""
    target_texts: list[str]
    target_eval: list[dict]
    window_s: float
    model: torch.nn.Module
    task: WhisperSeq2Seq
    targets: list[str]
    counts: dict[str, float]
    tle: TextToLatent | None
    tle_record: dict[str, Any]
    tts_states: np.ndarray | None
    """The real encoder's states of the target text spoken by espeak-ng (tts modes)."""
    silence: torch.Tensor | None
    """The encoder's states of silence, (1, frames, d_model) (text_lm)."""
    source_states: np.ndarray | None
    """The encoder's states of the source training audio (source_ratio > 0)."""


def _window(cfg: WhisTLEConfig, splits: Splits, target_eval: list[dict]) -> float:
    """The encoder window: as configured, or the longest source or target utterance rounded up to 0.5 s."""
    if cfg.data.encoder_window_s:
        return cfg.data.encoder_window_s
    longest_s = max(len(u["audio"]) for u in target_eval) / SAMPLE_RATE
    return max(splits.encoder_window_s, math.ceil(2 * longest_s) / 2)


def setup(cfg: WhisTLEConfig) -> Setup:
    """Load both domains, the model, its decoder adapter, and (once per cache key) the TLE, TTS or silence states."""
    dev = device()
    seed_everything(cfg.seed)
    source = assets.resolve_model(cfg.model)
    splits = load_splits(cfg.data)
    t = cfg.target
    target_eval = load_speech(t.eval_source, t.eval_split, max_items=t.max_eval_items, hub_config=t.hub_config)
    target_texts = load_texts(t.text, max_items=t.max_sentences, field="target.text", hub_config=t.hub_config)
    window_s = _window(cfg, splits, target_eval)
    task = WhisperSeq2Seq(source, window_s, cfg.eval.max_new_tokens, language=cfg.data.language)
    model = models.load_base_model(source, "whisper", PrecisionConfig(bits=32), dev)
    models.shrink_whisper_encoder(model, models.window_positions(window_s))
    d_model = model.config.d_model

    trains = cfg.mode != "none" and cfg.optim.max_steps > 0
    tle, record, tts, silence, source_states = None, {}, None, None, None
    if trains and cfg.mode in ("tle", "tts+tle"):
        tle, record = cached_tle(cfg.tle, source, task.tokenizer, d_model, window_s, cfg.data, splits, dev)
    if trains and cfg.mode in ("tts", "tts+tle"):
        key = {"texts": input_key({"texts": target_texts}), "tts": "espeak-ng train voices", "seed": 0}
        tts = encoder_states(source, window_s, lambda: speak_texts(target_texts, window_s), key, dev, "target-tts")
    if trains and cfg.mode == "text_lm":
        silence = load_speech_encoder(source, window_s, dev)([np.zeros(SAMPLE_RATE, dtype=np.float32)])
    if trains and cfg.source_ratio > 0:
        key = {"data": {"source": cfg.data.source, "hub_config": cfg.data.hub_config, "max_train_items": cfg.data.max_train_items,
                        "max_val_items": cfg.data.max_val_items}, "split": "train"}
        source_states = encoder_states(source, window_s, lambda: [u["audio"] for u in splits.train], key, dev,
                                       "source-train")

    depths = models.stack_depths(assets.load_model_config(source), "whisper")
    targets = models.target_module_names(model, "whisper", cfg.lora, depths)
    if trains and cfg.lora.enabled:
        model = models.add_lora(model, targets, cfg.lora)
    else:  # untrained: nothing; else the whole decoder (its token embedding is also the output projection)
        model.requires_grad_(False)
        if trains:
            model.model.decoder.requires_grad_(True)
    return Setup(cfg, dev, source, splits, target_texts, target_eval, window_s, model, task, targets,
                 param_counts(model), tle, record,
                 tts, silence, source_states)


def speak_texts(texts: list[str], window_s: float) -> list[np.ndarray]:
    """The target text spoken by espeak-ng with the corpora's training voices, each fitted into the window."""
    from trainables.assets.corpus import speak

    return speak(texts, seed=0, max_duration_s=window_s)


def as_whisper_writes(text: str) -> str:
    """`text` as Whisper writes a sentence: a capital first letter and closing punctuation, added where missing.

    The decoder learns where a target sentence ends from text alone. Tuned on lowercase, unpunctuated text, it
    learns to stop after the last word; back on the real encoder, it still writes the full stop the released
    model writes there, and after a full stop it has never been taught to stop, so it says the sentence again
    (79 of 100 natural-voice hypotheses of a text_lm trial did). Scoring normalises case and punctuation, so
    only where the decoder stops changes."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def train(s: Setup) -> tuple[list[dict[str, float]], Stepper | None]:
    """Phase 2: tune the decoder on the target text (and, at `source_ratio`, the source's paired audio)."""
    cfg, steps = s.cfg, s.cfg.optim.max_steps
    if cfg.mode == "none" or steps == 0:
        return [], None
    stepper = Stepper(cfg.optim, [p for p in s.model.parameters() if p.requires_grad], s.dev, s.model)
    tokenizer = s.task.tokenizer
    start_id = s.model.config.decoder_start_token_id
    target_labels = [as_whisper_writes(t) for t in s.target_texts]  # the labels only: the TLE reads the text as given
    target_batches = epoch_batches([len(t) for t in s.target_texts], cfg.optim.batch_size, cfg.seed, 0, 1)
    source_batches = epoch_batches([len(u["text"]) for u in s.splits.train], cfg.optim.batch_size, cfg.seed, 0, 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    on_source = False

    def stand_in(texts: list[str], idx: list[int]) -> torch.Tensor:
        """What the decoder cross-attends to for target texts, by mode (never the encoder on real target audio)."""
        if cfg.mode == "text_lm":
            return s.silence.expand(len(texts), -1, -1)
        half = len(texts) // 2 if cfg.mode == "tts+tle" else len(texts) if cfg.mode == "tts" else 0
        parts = []
        if half:
            parts.append(torch.from_numpy(np.asarray(s.tts_states[idx[:half]], dtype=np.float32)).to(s.dev))
        if half < len(texts):
            with torch.no_grad():
                ids, mask = tokenize(tokenizer, texts[half:], cfg.tle.max_tokens, s.dev)
                parts.append(s.tle(ids, mask, s.tle.predict_frames(texts[half:]), gen)[0])
        return torch.cat(parts)

    def micro_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        if on_source:
            idx = next(source_batches)
            texts = [s.splits.train[i]["text"] for i in idx]
            states = torch.from_numpy(np.asarray(s.source_states[idx], dtype=np.float32)).to(s.dev)
        else:
            idx = next(target_batches)
            states = stand_in([s.target_texts[i] for i in idx], idx)
            texts = [target_labels[i] for i in idx]
        labels = whisper_labels(tokenizer, texts, start_id, cfg.eval.max_new_tokens).to(s.dev)
        loss = s.model(encoder_outputs=(states,), labels=labels).loss
        return loss, {"source_loss" if on_source else "target_loss": float(loss.detach())}

    def pick_stream(step: int) -> None:
        # Source steps are spread evenly: step k is one when ⌊k·r⌋ moves on.
        nonlocal on_source
        on_source = math.floor(step * cfg.source_ratio) > math.floor((step - 1) * cfg.source_ratio)

    ckpt = Checkpointer(cfg.optim.checkpoint_every, {"model": s.model}, total_steps=steps)
    s.model.train()
    # Validation is the source's speech: the target domain lends no audio to decisions.
    fit(ckpt, stepper, micro_loss, streams={"target": target_batches, "source": source_batches},
        generators={"tle": gen}, before_step=pick_stream, eval_every=cfg.eval.every,
        validate=validator(s.task, s.model, s.splits.val, cfg.eval.batch_size, s.dev, torch.float32))
    return ckpt.history, stepper


def measure(s: Setup, history: list[dict[str, float]], stepper: Stepper | None) -> Outcome:
    """Scored with the real encoder on the target domain's speech (the headline) and the source's test split;
    the TLE's phase-1 record and curve beside phase 2's; the adapter and the TLE to save."""
    cfg = s.cfg
    s.model.eval()
    files = assets.model_files_dir(s.source)
    size_parts = deployed_size_bytes(s.model, assets.stored_itemsize(files))
    tle_params = sum(p.numel() for p in s.tle.parameters()) if s.tle is not None else 0
    nan = float("nan")
    metrics = {
        **{k: float(s.tle_record.get(k, nan)) for k in ("mse", "kl", "kl_active_dims", "length_rel_error")},
        "tle_params": float(tle_params), "tle_size_mb": 4 * tle_params / MB,
        "target_sentences": float(len(s.target_texts)), "encoder_window_s": s.window_s,
        "lora_targets": float(len(s.targets) if cfg.lora.enabled and stepper else 0),
    }
    # Phase 1's curve (shared by every trial that reuses the TLE) beside phase 2's, under its own names.
    phase1 = [{"step": p["step"], **{f"tle_{k}": v for k, v in p.items() if k != "step"}}
              for p in s.tle_record.get("history", [])]

    def save(out: Path) -> None:
        if cfg.save_adapter and stepper:
            s.model.save_pretrained(out / ("adapter" if cfg.lora.enabled else "model"))
        if cfg.save_adapter and s.tle is not None:
            (out / "tle").mkdir()
            torch.save(s.tle.state_dict(), out / "tle" / "tle.pt")
            (out / "tle" / "config.json").write_text(json.dumps({**to_dict(cfg.tle), "frames": s.tle.frames}, indent=2))

    return Outcome(s.task, s.model, s.dev, torch.float32, cfg.eval.batch_size, val=s.splits.val, test=s.target_eval,
                   also={"source": s.splits.test}, size_bytes=size_parts["total"],
                   natural=load_natural(cfg.target.eval_source, cfg.target.eval_split, cfg.target.max_eval_items),
                   original_bytes=assets.stored_bytes(files), counts=s.counts, stepper=stepper, metrics=metrics,
                   json_files={"size_breakdown.json": size_parts}, history_extra=phase1, save=save)


# --------------------------------------------------------------------------- using the result


def load_result(trial: Trial, dev: torch.device, *, merged: bool = False) -> tuple[WhisTLEConfig, str, torch.nn.Module]:
    """(config, base source, model) of a finished trial: Whisper at the trained window with its decoder adapter
    (merged in when `merged`), or with the tuned decoder. The TLE is not part of it: it only trained the decoder."""
    # The target's text is not needed to use the result (and a file may not exist here): check the default.
    cfg = trial.parsed(parse_config, {"target": to_dict(TargetConfig())})
    if cfg.mode == "none" or cfg.optim.max_steps == 0 or not cfg.save_adapter:
        raise ArtifactError(f"{trial.path}: this trial saved no tuned decoder "
                            f"({'mode none trains nothing' if cfg.mode == 'none' else 'optim.max_steps is 0' if cfg.optim.max_steps == 0 else 'save_adapter is false'})")
    source = assets.resolve_model(cfg.model)
    if not cfg.lora.enabled:
        from transformers import WhisperForConditionalGeneration

        model = WhisperForConditionalGeneration.from_pretrained(trial.file("model", "save_adapter writes it"))
        return cfg, source, model.to(dev).eval()
    from peft import PeftModel

    model = models.load_base_model(source, "whisper", PrecisionConfig(bits=32), dev)
    models.shrink_whisper_encoder(model, models.window_positions(trial.window_s))
    model = PeftModel.from_pretrained(model, str(trial.file("adapter", "save_adapter writes it")))
    return cfg, source, (model.merge_and_unload() if merged else model).eval()


def recogniser(artifacts: Path, device: torch.device) -> Recogniser:
    """The adapted Whisper as it was evaluated: the real encoder, the tuned decoder."""

    trial = inference.read_trial(artifacts)
    cfg, source, model = load_result(trial, device)
    task = WhisperSeq2Seq(source, trial.window_s, cfg.eval.max_new_tokens, language=cfg.data.language)
    return inference.TaskRecogniser(task, model, device, torch.float32, trial.window_s, cfg.eval.batch_size)


def export(artifacts: Path, out_dir: Path, adapter_only: bool = False) -> str:
    """A standard transformers Whisper folder (decoder adapter merged, fp16, processor at the trained window),
    or, `adapter_only`, the peft decoder adapter naming its base."""
    trial = inference.read_trial(artifacts)
    cfg, source, model = load_result(trial, torch.device("cpu"), merged=not adapter_only)
    out = inference.prepare_out_dir(out_dir)
    base = inference.published_name(cfg.model)
    if adapter_only:
        if not cfg.lora.enabled:
            raise ArtifactError(f"{trial.path}: --adapter-only: this trial tuned the whole decoder (lora.enabled is "
                                "false); export the whole model")
        inference.copy_adapter(trial, out, base)
        inference.write_manifest(out, trial, "whistle", "peft_adapter", base=base, encoder_window_s=trial.window_s)
        return (f"whistle: the peft adapter of {base}'s decoder in {out} (tuned with Whisper's encoder cut to "
                f"{trial.window_s:g} s); load with peft.PeftModel.from_pretrained(<the base model>, '{out}')")
    seconds = inference.exported_window(trial.window_s)
    inference.widen_whisper_window(model.get_encoder(), model.config, seconds, assets.model_files_dir(source).as_posix())
    processor = inference.whisper_processor(source, seconds)
    inference.exported_generation(model.generation_config, cfg.eval.max_new_tokens, cfg.data.language)
    model.to(torch.float16).save_pretrained(out)
    processor.save_pretrained(out)
    inference.write_manifest(out, trial, "whistle", "transformers_whisper", base=base, encoder_window_s=seconds)
    return (f"whistle: {base} with its {cfg.mode}-adapted decoder{' (adapter merged)' if cfg.lora.enabled else ''}, "
            f"fp16, in {out}, with a {seconds} s feature window; load with "
            f"transformers.pipeline('automatic-speech-recognition', model='{out}')")


# --------------------------------------------------------------------------- the method contract

CONFIG = WhisTLEConfig
MAX_WORKERS: int | None = 1  # one Ray Train worker per trial: phase 2 is a small decoder-only job
parse_config, run, train_loop_per_worker, finish = entry_points(CONFIG, setup, train, measure)
# baseline_config (the untuned model's config) is defined with the config, above.

"""DQLoRA: noise-robust distillation of a QLoRA CTC student from a frozen Whisper teacher.

The student hears NOISY audio (white, pink, babble or a folder of noise files, at a fixed SNR or at
one drawn per utterance from a range; the same for the same seed); the teacher, a frozen Whisper
encoder, hears the same utterance CLEAN. The loss is

    CTC(student logits, transcript character ids) + λ · KD(P · h_student, h_teacher)

where P is a trained linear projection from the student's width to the teacher's, and KD is the
mean-squared error or the cosine distance over the frames both models produce. Both run at 50
frames per second, so time alignment is a crop: the teacher's padded window is cut to the
utterance's own frames when its states are cached, and an off-by-one between the two models'
lengths (wav2vec2's convolution stack yields ⌊(n − 400) / 320⌋ + 1 frames, Whisper ⌈n / 320⌉) is
settled by cropping both to the shorter. With λ = 0 the teacher is never loaded and the loss is
plain CTC, bit for bit.

Teacher states are computed once per data set (keyed by teacher, data source, split, item count and
window) and kept on disk as one float16 array per utterance (trainables.assets.cache.build_once); trials
and epochs only read them.

Which student:
- gpu preset: facebook/wav2vec2-base-960h, a pretrained CTC model, held in 4-bit NF4 with LoRA on
  its encoder (models.load_base_model + models.add_lora), taught by openai/whisper-small's encoder.
- local preset: no pretrained wav2vec2 exists offline, so the student is the encoder of Whisper
  tiny.en (converted offline; pretrained, so it already hears speech), window-shortened with
  models.shrink_whisper_encoder, with LoRA on its layers and a freshly initialised, trained linear
  CTC head over a small character vocabulary (blank, space, apostrophe, a-z). Its teacher is the
  encoder of Whisper base (d_model 512 vs the student's 384: the projection maps between them).
  A fresh CTC head needs a few hundred steps before it emits words, so short local runs show the
  KD and CTC losses moving well before WER does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from trainables import assets
from trainables.assets.cache import build_once, cache_root, input_key
from trainables.blocks import models, progress
from trainables.blocks.audio import SAMPLE_RATE
from trainables.blocks.batching import WhisperFeatures, ctc_batch, epoch_batches
from trainables.blocks.checkpoints import Checkpointer
from trainables.blocks.config import merge, require, to_dict
from trainables.blocks.data import DataConfig, Splits, load_natural, load_natural_val, load_splits
from trainables.blocks.distributed import world
from trainables.blocks.evaluation import EvalConfig, validator
from trainables.blocks.finish import Outcome
from trainables.blocks.inference import (
    ArtifactError,
    Recogniser,
    TaskRecogniser,
    Trial,
    copy_adapter,
    copy_loader,
    dequantise_linears,
    exported_window,
    prepare_out_dir,
    published_name,
    read_trial,
    widen_whisper_window,
    write_manifest,
)
from trainables.blocks.launch import entry_points
from trainables.blocks.loop import fit
from trainables.blocks.metrics import deployed_size_bytes, param_counts
from trainables.blocks.models import LoraConfig, PrecisionConfig
from trainables.blocks.noise import noisy_copies
from trainables.blocks.tasks import CTC
from trainables.blocks.training import OptimConfig, Stepper, data_parallel, device, seed_everything, unwrap

# --------------------------------------------------------------------------- config

FRAMES_PER_S = 50
"""Frame rate of both Whisper's encoder and wav2vec2's feature encoder (20 ms a frame)."""
SAMPLES_PER_FRAME = SAMPLE_RATE // FRAMES_PER_S
# The local student's character vocabulary: CTC blank first.
CHARS: list[str] = ["<blank>", " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
BLANK = 0


@dataclass
class NoiseConfig:
    """Noise mixed into the student's audio (the teacher always hears the clean utterance)."""

    kind: Literal["white", "pink", "babble", "folder"] = "white"
    """white, pink, babble (other utterances of the split) or folder (random crops of noise_dir's files)."""
    snr_db: float = 10.0
    """Signal-to-noise ratio in dB, used when snr_range is null."""
    snr_range: list[float] | None = None
    """[low, high] in dB: each utterance draws its own SNR uniformly from it (seeded); null = snr_db for all."""
    noise_dir: str | None = None
    """Folder of .wav/.flac noise files (kind folder only)."""
    eval_seed: int = 12345
    """Seed of the evaluation sets' noise, the same for every trial so their hypotheses pair up."""

    def check(self) -> None:
        require(math.isfinite(self.snr_db) and -20 <= self.snr_db <= 60, "snr_db", f"must be in [-20, 60] dB, got {self.snr_db}")
        if self.snr_range is not None:
            require(len(self.snr_range) == 2, "snr_range", f"must be [low, high], got {self.snr_range}")
            low, high = self.snr_range
            require(-20 <= low <= high <= 60, "snr_range", f"must satisfy -20 <= low <= high <= 60 dB, got {self.snr_range}")
        if self.kind == "folder":
            require(self.noise_dir is not None, "noise_dir", "kind folder needs a folder of .wav or .flac files")
            require(Path(str(self.noise_dir)).expanduser().is_dir(), "noise_dir", f"{self.noise_dir!r} is not a folder")

    def snr_for(self, seed: int, index: int) -> float:
        """The SNR of utterance `index` (drawn from snr_range with its own seeded generator)."""
        if self.snr_range is None:
            return self.snr_db
        low, high = self.snr_range
        return float(np.random.default_rng([seed, index, 1]).uniform(low, high))


@dataclass
class KDConfig:
    """Distillation from the teacher's encoder states."""

    lambda_: float = 0.3
    """Weight λ of the KD term; 0 = plain CTC training (the teacher is not even loaded)."""
    distance: Literal["mse", "cosine"] = "mse"
    """mse (mean squared error per dimension) or cosine (1 - cosine similarity per frame)."""
    teacher: str = "whisper-base"
    """Whisper teacher: offline asset, local directory or hub id (gpu: openai/whisper-small)."""
    teacher_window_s: float = 30.0
    """Window the teacher's encoder sees; 30 = Whisper's own (its states are cropped to each utterance)."""

    def check(self) -> None:
        require(math.isfinite(self.lambda_) and self.lambda_ >= 0, "lambda_", f"must be >= 0, got {self.lambda_}")
        require(0 < self.teacher_window_s <= 30, "teacher_window_s", f"must be in (0, 30], got {self.teacher_window_s}")
        if self.lambda_ > 0:
            assets.check_model_source(self.teacher, "teacher")


@dataclass
class DQLoRAConfig:
    """One DQLoRA training run."""

    student: str = "whisper-tiny.en"
    """Student: a wav2vec2-style CTC model (gpu: facebook/wav2vec2-base-960h), or a Whisper model whose encoder gets a character CTC head."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data, and a Whisper-encoder student's window."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noise on the student's audio."""
    kd: KDConfig = field(default_factory=KDConfig)
    """Teacher, weight and distance of the distillation term."""
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    """Precision of the student's frozen base weights."""
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(stacks=["encoder"]))
    """Adapters on the student's encoder."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser, schedule, batch and step budget."""
    head_lr: float = 3e-3
    """Learning rate of the parts trained from scratch: the CTC head of a Whisper-encoder student and the KD projection."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Decoding batch and how often to evaluate during training (max_new_tokens does not apply to CTC)."""
    save_adapter: bool = True
    """Save the adapter, CTC head and projection as artifacts."""
    seed: int = 0
    """Seed of initialisation, data order and the training noise."""

    def check(self) -> None:
        require(self.head_lr > 0, "head_lr", f"must be positive, got {self.head_lr}")
        require(self.lora.kind == "lora", "lora.kind", "AdaLoRA's rank pruning runs in the qlora method only "
                "(lora.kind adalora there); this method trains fixed-rank LoRA")
        models.check_precision_with_lora(self.precision, self.lora)
        assets.check_model_source(self.student, "student")
        assets.check_data_source(self.data.source, "data.source")
        model_config = assets.model_config_if_local(self.student)
        if model_config is not None:
            models.check_lora_against_model(self.lora, model_config)
            require("encoder" in self.lora.stacks, "lora.stacks", "the student is a CTC encoder: adapt the encoder")


def baseline_config(config: dict[str, Any]) -> dict[str, Any]:
    """The student as released, evaluated on the same noisy test set: full precision, no adapter, no training."""
    return merge(config, {"precision": {"bits": 32}, "lora": {"enabled": False}, "kd": {"lambda_": 0.0},
                          "optim": {"max_steps": 0, "warmup_steps": 0}, "save_adapter": False})


# --------------------------------------------------------------------------- noise, alignment, distances


def noisy_utterances(utts: list[dict], cfg: NoiseConfig, seed: int) -> list[dict]:
    """Copies of `utts` with noise at each one's SNR; babble comes from the other utterances of the list."""
    noise_dir = Path(cfg.noise_dir).expanduser() if cfg.noise_dir else None
    return noisy_copies(utts, cfg.kind, lambda i: cfg.snr_for(seed, i), seed, noise_dir)


def whisper_frames(n_samples: int, window_s: float) -> int:
    """Encoder frames of an utterance of `n_samples` inside a `window_s` window (⌈n / 320⌉, capped)."""
    return min(math.ceil(n_samples / SAMPLES_PER_FRAME), models.window_positions(window_s))


def aligned_lengths(student: torch.Tensor | list[int], teacher: torch.Tensor | list[int]) -> torch.Tensor:
    """Frames both models cover, per utterance: the shorter of the two lengths."""
    return torch.minimum(torch.as_tensor(student, dtype=torch.long), torch.as_tensor(teacher, dtype=torch.long))


def pad_states(states: list[np.ndarray | torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(batch, longest, dim) zero-padded stack of per-utterance (frames, dim) arrays."""
    width = max(s.shape[0] for s in states)
    out = torch.zeros(len(states), width, states[0].shape[1], dtype=dtype)
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = torch.as_tensor(np.array(s, dtype=np.float32)).to(dtype)
    return out


def kd_distance(student: torch.Tensor, teacher: torch.Tensor, lengths: torch.Tensor, distance: str) -> torch.Tensor:
    """Mean distance over the first `lengths[i]` frames of each utterance (projected student vs teacher).

    Both are (batch, frames, dim) with the same dim; either may have more frames than the other:
    only the frames below each utterance's aligned length count.
    """
    n = int(lengths.max())
    s, t = student[:, :n].float(), teacher[:, :n].to(student.device).float()
    mask = (torch.arange(n, device=s.device)[None, :] < lengths.to(s.device)[:, None]).float()
    if distance == "mse":
        per_frame = (s - t).pow(2).mean(-1)
    else:
        per_frame = 1 - F.cosine_similarity(s, t, dim=-1, eps=1e-6)
    return (per_frame * mask).sum() / mask.sum().clamp(min=1)


# --------------------------------------------------------------------------- the teacher: encoder states cached once per data set


def load_whisper_encoder(source: str, window_s: float, dev: torch.device) -> tuple[torch.nn.Module, Any]:
    """A frozen fp32 Whisper encoder with its feature extractor, window shortened when window_s < 30."""
    from transformers import WhisperFeatureExtractor

    model = models.load_base_model(source, "whisper", PrecisionConfig(bits=32), dev)
    models.shrink_whisper_encoder(model, models.window_positions(window_s))
    encoder = model.get_encoder().eval()
    return encoder, WhisperFeatureExtractor.from_pretrained(source)


def _encode_teacher(source: str, window_s: float, utts: list[dict], out: Path, dev: torch.device,
                    batch_size: int = 8) -> None:
    """Write utterance i's cropped encoder states to out/{i}.npy (float16) and an index of ids and frames."""
    encoder, fe = load_whisper_encoder(source, window_s, dev)
    feats = WhisperFeatures(fe, window_s)
    index = []
    with torch.no_grad():
        for start in progress.tracked(range(0, len(utts), batch_size), "teacher states (once)"):
            batch = utts[start : start + batch_size]
            x, _ = feats.batch(batch)
            states = encoder(input_features=x.to(dev)).last_hidden_state
            for j, utt in enumerate(batch):
                frames = whisper_frames(len(utt["audio"]), window_s)
                np.save(out / f"{start + j}.npy", states[j, :frames].cpu().numpy().astype(np.float16))
                index.append({"id": utt["id"], "frames": frames})
    (out / "index.json").write_text(json.dumps(index))


def teacher_states(teacher: str, source: str, utts: list[dict], *, split: str, max_items: int | None,
                   window_s: float, dev: torch.device, hub_config: str | None = None) -> dict[str, np.ndarray]:
    """Utterance id -> the teacher's (frames, d_model) float16 encoder states, built once on disk."""
    inputs = {"teacher": teacher, "data": source, "hub_config": hub_config, "split": split, "max_items": max_items,
              "window_s": window_s, "n": len(utts)}
    target = cache_root() / "teacher-states" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', teacher)[-40:]}-{input_key(inputs)}"
    resolved = assets.resolve_model(teacher)
    build_once(target, lambda tmp: _encode_teacher(resolved, window_s, utts, tmp, dev), inputs)
    index = json.loads((target / "index.json").read_text())
    return {row["id"]: np.load(target / f"{i}.npy", mmap_mode="r") for i, row in enumerate(index)}


# --------------------------------------------------------------------------- students


def text_to_ids(text: str) -> list[int]:
    """Character ids of a transcript: lower-cased; characters outside the vocabulary become spaces."""
    lookup = {c: i for i, c in enumerate(CHARS)}
    cleaned = " ".join("".join(c if c in lookup else " " for c in text.lower()).split())
    return [lookup[c] for c in cleaned]


def greedy_ctc(ids: list[int]) -> str:
    """Collapse repeats, drop blanks, map ids to characters."""
    out, previous = [], None
    for i in ids:
        if i != previous and i != BLANK:
            out.append(CHARS[i])
        previous = i
    return " ".join("".join(out).split())


class _EncoderHolder(torch.nn.Module):
    """Keeps Whisper's module path `model.encoder.layers.N...`, so LoRA placement names stay the same."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder


class WhisperCTC(torch.nn.Module):
    """A Whisper encoder with a linear character-CTC head (trained from scratch)."""

    def __init__(self, encoder: torch.nn.Module, config: Any) -> None:
        super().__init__()
        self.config = config
        self.model = _EncoderHolder(encoder)
        self.head = torch.nn.Linear(config.d_model, len(CHARS))

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, last hidden states), both (batch, frames, ·)."""
        hidden = self.model.encoder(input_features=input_features).last_hidden_state
        return self.head(hidden), hidden


@dataclass
class StepOut:
    """What one batch gives the loss: the CTC loss, the student's states and its valid frames."""

    ctc: torch.Tensor
    hidden: torch.Tensor | None
    lengths: torch.Tensor | None


class WhisperCTCStudent:
    """Batching, CTC loss and greedy decoding of a WhisperCTC student."""

    def __init__(self, source: str, window_s: float) -> None:
        from transformers import WhisperFeatureExtractor

        self.source = source
        self.features = WhisperFeatures(WhisperFeatureExtractor.from_pretrained(source), window_s)
        self.window_s = window_s
        self._positions: torch.Tensor | None = None

    def use_window(self, model: torch.nn.Module, window_s: float) -> None:
        """Decode at a `window_s` window from now on (see tasks.WhisperSeq2Seq.use_window): the recogniser
        decodes a clip longer than the trained window whole."""
        if window_s == self.window_s:
            return
        if self._positions is None:
            self._positions = models.whisper_position_table(self.source)
        inner = unwrap(model, peft=True)
        models.set_whisper_window(inner.model.encoder, inner.config, models.window_positions(window_s), self._positions)
        self.features = WhisperFeatures(self.features.fe, window_s)
        self.window_s = window_s

    def forward(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype,
                want_hidden: bool) -> StepOut:
        feats, _ = self.features.batch(utts)
        logits, hidden = model(input_features=feats.to(dev, dtype))
        lengths = torch.tensor([whisper_frames(len(u["audio"]), self.window_s) for u in utts])
        targets = [torch.tensor(text_to_ids(u["text"]), dtype=torch.long) for u in utts]
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)
        ctc = F.ctc_loss(log_probs, torch.cat(targets).to(dev), lengths, torch.tensor([len(t) for t in targets]),
                         blank=BLANK, reduction="mean", zero_infinity=True)
        return StepOut(ctc, hidden if want_hidden else None, lengths)

    @torch.no_grad()
    def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        feats, _ = self.features.batch(utts)
        ids = model(input_features=feats.to(dev, dtype))[0].argmax(-1).cpu()
        return [greedy_ctc(ids[i, : whisper_frames(len(u["audio"]), self.window_s)].tolist()) for i, u in enumerate(utts)]


class Wav2Vec2Student:
    """Batching, CTC loss (the model's own, with the states KD needs) and greedy decoding (the shared
    `tasks.CTC`) of a wav2vec2-style CTC student."""

    def __init__(self, source: str) -> None:
        self.ctc = CTC(source)
        self.processor = self.ctc.processor

    def forward(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype,
                want_hidden: bool) -> StepOut:
        batch = ctc_batch(self.processor, utts)
        mask = batch["attention_mask"].to(dev)
        out = model(input_values=batch["input_values"].to(dev, dtype), attention_mask=mask,
                    labels=batch["labels"].to(dev), output_hidden_states=want_hidden)
        if not want_hidden:
            return StepOut(out.loss, None, None)
        inner = unwrap(model, peft=True)
        lengths = inner._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1)).long()
        return StepOut(out.loss, out.hidden_states[-1], lengths)

    def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        return self.ctc.transcribe(model, utts, dev, dtype)


def student_width(model: torch.nn.Module) -> int:
    cfg = unwrap(model, peft=True).config
    return int(getattr(cfg, "d_model", None) or cfg.hidden_size)


def build_student(cfg: DQLoRAConfig, source: str, dev: torch.device, window_s: float, *,
                  adapters: bool = True) -> tuple[torch.nn.Module, Any, list[str]]:
    """(model with adapters, batching/decoding task, adapted module names); `adapters=False`: the frozen
    student as loaded, with no adapter yet (a finished trial's adapter is loaded into it)."""
    mcfg = assets.load_model_config(source)
    family = models.family_of(mcfg)
    depths = models.stack_depths(mcfg, family)
    models.check_lora_against_model(cfg.lora, mcfg)
    lora = LoraConfig(**{**to_dict(cfg.lora), "stacks": ["encoder"]})
    base = models.load_base_model(source, family, cfg.precision, dev)
    if family == "whisper":
        models.shrink_whisper_encoder(base, models.window_positions(window_s))
        model: torch.nn.Module = WhisperCTC(base.get_encoder(), base.config).to(dev)
        model.head.requires_grad_(True)
        task: Any = WhisperCTCStudent(source, window_s)
        del base
        heads = [model.head]
    else:
        base.config.mask_time_prob = 0.0  # the noise is the augmentation; keeps λ = 0 deterministic
        stride = math.prod(base.config.conv_stride)
        require(cfg.kd.lambda_ == 0 or stride == SAMPLES_PER_FRAME, "student",
                f"frames every {stride} samples; KD aligns frames 1:1 with Whisper's, which needs {SAMPLES_PER_FRAME} (50/s)")
        model, task, heads = base, Wav2Vec2Student(source), []
    targets = models.target_module_names(model, family, lora, {"encoder": depths["encoder"]})
    if not adapters:
        return model, task, targets
    if cfg.lora.enabled:
        model = models.add_lora(model, targets, lora)
    else:
        models.enable_full_finetuning(model)
    for head in heads:
        head.requires_grad_(True)
    return model, task, targets


# --------------------------------------------------------------------------- the loss


def batch_loss(task: Any, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype,
               lambda_: float, projection: torch.nn.Module | None = None,
               teacher: dict[str, np.ndarray] | None = None, distance: str = "mse") -> tuple[torch.Tensor, dict[str, float]]:
    """CTC + λ·KD on one batch of noisy utterances; with λ = 0 exactly the CTC loss (teacher untouched)."""
    out = task.forward(model, utts, dev, dtype, want_hidden=lambda_ != 0)
    if lambda_ == 0:
        return out.ctc, {"ctc_loss": float(out.ctc.detach())}
    assert projection is not None and teacher is not None and out.hidden is not None and out.lengths is not None
    states = [teacher[u["id"]] for u in utts]
    lengths = aligned_lengths(out.lengths, [s.shape[0] for s in states])
    kd = kd_distance(projection(out.hidden.float()), pad_states(states).to(dev), lengths, distance)
    return out.ctc + lambda_ * kd, {"ctc_loss": float(out.ctc.detach()), "kd_loss": float(kd.detach())}


# --------------------------------------------------------------------------- set-up, training, evaluation, report


@dataclass
class Setup:
    """Everything `setup` builds for one run: the clean and noisy splits, the student, the teacher's states."""

    cfg: DQLoRAConfig
    dev: torch.device
    splits: Splits
    """The clean splits (the teacher's states are of the clean training audio)."""
    noisy: Splits
    """The same utterances with noise: the student trains on noisy_train and is scored on noisy_test."""
    source: str
    model: torch.nn.Module
    wrapped: torch.nn.Module
    """`model`, or DDP around it."""
    task: WhisperCTCStudent | Wav2Vec2Student
    targets: list[str]
    dtype: torch.dtype
    window_s: float
    """A Whisper-encoder student's window (0 for wav2vec2)."""
    counts: dict[str, float]
    teacher: dict[str, np.ndarray] | None
    """Utterance id -> the teacher's cached encoder states (None when λ = 0 or nothing is trained)."""
    projection: torch.nn.Module | None
    """Trained map from the student's width to the teacher's (not deployed)."""


def setup(cfg: DQLoRAConfig) -> Setup:
    """Load the splits and their noisy copies, build the student, and (for λ > 0) the teacher's cached states."""
    dev = device()
    seed_everything(cfg.seed)
    d = cfg.data
    splits = load_splits(d)
    noisy = Splits(noisy_utterances(splits.train, cfg.noise, cfg.seed),
                   noisy_utterances(splits.val, cfg.noise, cfg.noise.eval_seed + 1),
                   noisy_utterances(splits.test, cfg.noise, cfg.noise.eval_seed), splits.encoder_window_s)
    source = assets.resolve_model(cfg.student)
    model, task, targets = build_student(cfg, source, dev, splits.encoder_window_s)
    window_s = splits.encoder_window_s if isinstance(task, WhisperCTCStudent) else 0.0
    dtype = models.input_dtype(model)
    counts = param_counts(model)
    teacher: dict[str, np.ndarray] | None = None
    projection: torch.nn.Module | None = None
    if cfg.kd.lambda_ != 0 and cfg.optim.max_steps > 0:
        teacher = teacher_states(cfg.kd.teacher, d.source, splits.train, split=d.train_split, max_items=d.max_train_items,
                                 window_s=cfg.kd.teacher_window_s, dev=dev, hub_config=d.hub_config)
        d_teacher = next(iter(teacher.values())).shape[1]
        projection = torch.nn.Linear(student_width(model), d_teacher).to(dev)
    return Setup(cfg, dev, splits, noisy, source, model, data_parallel(model, dev), task, targets, dtype, window_s,
                 counts, teacher, projection)


def train(s: Setup) -> tuple[list[dict[str, float]], Stepper | None]:
    """Train on the noisy split for `optim.max_steps` steps; returns the per-step history and the stepper."""
    cfg, steps = s.cfg, s.cfg.optim.max_steps
    if steps == 0:
        return [], None
    rank, size = world()
    named = [(n, p) for n, p in s.model.named_parameters() if p.requires_grad]
    fresh = [p for n, p in named if ".head." in f".{n}"] + (list(s.projection.parameters()) if s.projection else [])
    adapters = [p for n, p in named if ".head." not in f".{n}"]
    # The CTC head and the projection start from scratch: their own, higher learning rate.
    groups = [{"params": adapters}] + ([{"params": fresh, "lr": cfg.head_lr}] if fresh else [])
    stepper = Stepper(cfg.optim, groups, s.dev, s.wrapped)
    batches = epoch_batches([len(u["audio"]) for u in s.noisy.train], cfg.optim.batch_size, cfg.seed, rank, size)

    def micro_loss(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        utts = [s.noisy.train[i] for i in next(batches)]
        return batch_loss(s.task, s.wrapped, utts, s.dev, s.dtype, cfg.kd.lambda_, s.projection, s.teacher,
                          cfg.kd.distance)

    modules = {"model": s.model, **({"projection": s.projection} if s.projection else {})}
    ckpt = Checkpointer(cfg.optim.checkpoint_every, modules, total_steps=steps)
    s.wrapped.train()
    fit(ckpt, stepper, micro_loss, streams={"train": batches}, eval_every=cfg.eval.every,
        validate=validator(s.task, s.wrapped, s.noisy.val, cfg.eval.batch_size, s.dev, s.dtype))
    return ckpt.history, stepper


def measure(s: Setup, history: list[dict[str, float]], stepper: Stepper | None) -> Outcome:
    """Scored on the noisy validation and test sets (the headline) and the clean test set; the deployed size
    against the student as loaded; the CTC head and KD projection saved beside the adapter."""
    cfg = s.cfg
    stored_itemsize = assets.stored_itemsize(assets.model_files_dir(s.source))
    size_parts = deployed_size_bytes(s.model, stored_itemsize)
    # The student before adaptation, at its checkpoint's precision (for a Whisper student: its encoder + head).
    lora_numel = sum(p.numel() for n, p in s.model.named_parameters() if "lora_" in n)
    original = (s.counts["total_params"] - lora_numel) * stored_itemsize
    last = history[-1] if history else {}
    metrics = {
        "ctc_loss": last.get("ctc_loss", float("nan")),
        "kd_loss": last.get("kd_loss", float("nan")),  # NaN with λ = 0: no KD term was computed
        "encoder_window_s": s.window_s, "lora_targets": float(len(s.targets) if cfg.lora.enabled else 0),
    }

    def save(out: Path) -> None:
        if not (cfg.save_adapter and stepper):
            return
        if cfg.lora.enabled:
            s.model.save_pretrained(out / "adapter")
        extra = {n: p.detach().cpu() for n, p in s.model.named_parameters() if ".head." in f".{n}"}
        if s.projection is not None:
            extra.update({f"kd_projection.{n}": p.detach().cpu() for n, p in s.projection.state_dict().items()})
        if extra:
            torch.save(extra, out / "head_and_projection.pt")

    # The natural-voice test set under the headline's conditions: the same noise, SNRs and seed as the test split.
    natural = load_natural(cfg.data.source, cfg.data.eval_split, cfg.data.max_eval_items)
    if natural is not None:
        natural = noisy_utterances(natural, cfg.noise, cfg.noise.eval_seed)
    natural_val = load_natural_val(cfg.data)  # with the validation split's noise
    if natural_val is not None:
        natural_val = noisy_utterances(natural_val, cfg.noise, cfg.noise.eval_seed + 1)
    return Outcome(s.task, s.wrapped, s.dev, s.dtype, cfg.eval.batch_size, val=s.noisy.val, test=s.noisy.test,
                   test_name="noisy", also={"clean": s.splits.test}, natural=natural, natural_val=natural_val,
                   size_bytes=size_parts["total"],
                   original_bytes=original, counts=s.counts, stepper=stepper, metrics=metrics,
                   json_files={"size_breakdown.json": size_parts}, save=save)


# --------------------------------------------------------------------------- using the result: transcribe, export


def load_result(trial: Trial, dev: torch.device, *, merged: bool = False) -> tuple[DQLoRAConfig, str, torch.nn.Module, Any]:
    """(config, student source, model, decoding task) of a finished trial: the student at its trained precision
    with its adapter and CTC head (the KD projection is not part of it). `merged`: quantised layers dequantised
    and the adapter merged in."""
    from peft import PeftModel

    # Distillation and noise are training-only: parse without needing the teacher or a noise folder.
    cfg = trial.parsed(parse_config, {"kd": {"lambda_": 0.0}, "noise": {"kind": "white", "noise_dir": None}})
    if cfg.optim.max_steps == 0 or not cfg.save_adapter or not cfg.lora.enabled:
        why = ("optim.max_steps is 0" if cfg.optim.max_steps == 0 else "save_adapter is false" if not cfg.save_adapter
               else "lora.enabled is false: the fine-tuned encoder is not saved")
        raise ArtifactError(f"{trial.path}: this trial saved no trained student ({why})")
    source = assets.resolve_model(cfg.student)
    model, task, _ = build_student(cfg, source, dev, trial.window_s, adapters=False)
    if merged:
        dequantise_linears(model)
    model = PeftModel.from_pretrained(model, str(trial.file("adapter", "save_adapter writes it")))
    if isinstance(task, WhisperCTCStudent):
        saved = torch.load(trial.file("head_and_projection.pt", "the trained CTC head"), map_location=dev, weights_only=True)
        head = {k: v for k, v in saved.items() if not k.startswith("kd_projection.")}
        unexpected = model.load_state_dict(head, strict=False).unexpected_keys
        if unexpected or not head:
            raise ArtifactError(f"{trial.path / 'head_and_projection.pt'}: does not fit the student ({unexpected[:2]})")
    return cfg, source, (model.merge_and_unload() if merged else model).eval(), task


def recogniser(artifacts: Path, device: torch.device) -> Recogniser:
    """The trial's student as it was evaluated, on the audio as given (noise is only for training and scoring)."""
    trial = read_trial(artifacts)
    cfg, _, model, task = load_result(trial, device)
    return TaskRecogniser(task, model, device, models.input_dtype(model), trial.window_s, cfg.eval.batch_size)


def export(artifacts: Path, out_dir: Path, adapter_only: bool = False) -> str:
    """A wav2vec2 student: a standard transformers CTC folder (adapter merged, fp16). The offline student,
    Whisper's encoder with a character CTC head, is no transformers model: its merged fp16 weights, config,
    feature extractor, vocabulary and a standalone loader (trainables/loaders/dqlora.py)."""
    from safetensors.torch import save_file

    trial = read_trial(artifacts)
    out = prepare_out_dir(out_dir)
    if adapter_only:
        cfg = trial.parsed(parse_config, {"kd": {"lambda_": 0.0}, "noise": {"kind": "white", "noise_dir": None}})
        base = published_name(cfg.student)
        copy_adapter(trial, out, base)
        head_note = ""
        if (trial.path / "head_and_projection.pt").exists():
            saved = torch.load(trial.path / "head_and_projection.pt", map_location="cpu", weights_only=True)
            save_file({k.split("head.", 1)[1]: v.contiguous() for k, v in saved.items() if ".head." in f".{k}"},
                      str(out / "ctc_head.safetensors"))
            head_note = " and the character CTC head (ctc_head.safetensors: weight, bias over vocab.json)"
            (out / "vocab.json").write_text(json.dumps(CHARS))
        write_manifest(out, trial, "dqlora", "peft_adapter", base=base, encoder_window_s=trial.window_s)
        return f"dqlora: the peft LoRA adapter on the student {base}'s encoder{head_note} in {out}"
    cfg, source, model, task = load_result(trial, torch.device("cpu"), merged=True)
    if isinstance(task, Wav2Vec2Student):
        model.to(torch.float16).save_pretrained(out)
        task.processor.save_pretrained(out)
        write_manifest(out, trial, "dqlora", "transformers", base=cfg.student, dtype="float16")
        return (f"dqlora: the wav2vec2 CTC student, its LoRA adapter merged in, at fp16, with its processor, in {out}; "
                f"load with transformers.pipeline('automatic-speech-recognition', model='{out}')")
    seconds = exported_window(trial.window_s)
    widen_whisper_window(model.model.encoder, model.config, seconds, assets.model_files_dir(source).as_posix())
    state = {k.removeprefix("model."): v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    model.config.save_pretrained(out)
    task.features.fe.__class__(**{**task.features.fe.to_dict(), "chunk_length": seconds}).save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps(CHARS))
    copy_loader("dqlora", out, "load_ctc.py")
    write_manifest(out, trial, "dqlora", "whisper_encoder_ctc", base=cfg.student, dtype="float16",
                   loader="load_ctc.py", encoder_window_s=seconds)
    return (f"dqlora: the student is Whisper's encoder with a character CTC head, which transformers has no model class "
            f"for, so this is not a transformers.pipeline folder: wrote its weights (LoRA merged, fp16), Whisper config "
            f"({seconds} s window), feature extractor, vocab.json and load_ctc.py, a standalone loader "
            f"(model, features, vocab = load(folder); transcribe(model, features, vocab, audio)), in {out}")


# --------------------------------------------------------------------------- the method contract

CONFIG = DQLoRAConfig
MAX_WORKERS: int | None = None  # data-parallel over any number of Ray Train workers (DDP)
parse_config, run, train_loop_per_worker, finish = entry_points(CONFIG, setup, train, measure)
# baseline_config (the untuned model's config) is defined with the config, above; recogniser and export
# (a finished trial's result, transcribing and exported) just above.

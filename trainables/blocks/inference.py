"""Using a trial's result: the `Recogniser` every method's `recogniser` returns, reading a trial's
artifact folder, and the loading and export pieces the methods share.

A method turns its artifacts into a recogniser (`recogniser(artifacts, device)`) and into a model folder
(`export(artifacts, out_dir, adapter_only)`); what is particular to the method (which weights, which
model class, how it decodes) stays in its own file, and its decoding is the same `transcribe` its
evaluation calls, over audio cut into the window the trial was trained with.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from trainables.blocks.audio import SAMPLE_RATE
from trainables.blocks.batching import length_buckets
from trainables.blocks.config import ConfigError, merge
from trainables.blocks.evaluation import NATURAL_WINDOW_S


@runtime_checkable
class Recogniser(Protocol):
    """A trained result, loaded and ready to transcribe."""

    def transcribe(self, audio: list[np.ndarray]) -> list[str]:
        """One transcript per clip; each clip is mono float32 at `trainables.blocks.audio.SAMPLE_RATE`."""
        ...


class ArtifactError(ValueError):
    """A trial's artifacts cannot give what was asked (a file is missing, the trial saved no weights);
    the message is one line naming the file or the setting."""


# --------------------------------------------------------------------------- a trial's artifact folder


@dataclass
class Trial:
    """A trial's artifact folder as `results.write_artifacts` and the method's `finish` left it."""

    path: Path
    config: dict[str, Any]
    """The resolved config (config.json)."""
    metrics: dict[str, Any]
    """The final metrics (metrics.json)."""

    def file(self, name: str, why: str = "") -> Path:
        """`path / name`, which must exist; otherwise an ArtifactError naming it (and `why` it might be missing)."""
        target = self.path / name
        if not target.exists():
            raise ArtifactError(f"{target}: not found{f' ({why})' if why else ''}")
        return target

    @property
    def window_s(self) -> float:
        """The Whisper encoder window the trial trained and was evaluated with (0: no window, e.g. wav2vec2)."""
        if "encoder_window_s" in self.metrics:
            return float(self.metrics["encoder_window_s"])
        return float(self.config.get("data", {}).get("encoder_window_s", 0.0))

    def parsed(self, parse_config: Callable[[dict[str, Any]], Any], overrides: Mapping[str, Any] | None = None) -> Any:
        """The trial's config as its method parses it, for using the result rather than training it.

        The data section is reset to its defaults (keeping the encoder window): the data a trial trained on
        need not be where its result is used. `overrides` replace other training-only settings."""
        config = {k: v for k, v in self.config.items() if k != "data"}
        config["data"] = {"encoder_window_s": float(self.config.get("data", {}).get("encoder_window_s", 0.0))}
        try:
            return parse_config(merge(config, dict(overrides or {})))
        except ConfigError as exc:
            raise ArtifactError(f"{self.path / 'config.json'}: {exc}") from None


def read_trial(artifacts: str | Path) -> Trial:
    """The config and metrics of a trial's artifact folder; ArtifactError when it is not one."""
    path = Path(artifacts)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ArtifactError(f"{path}: no config.json (not a trial's artifact folder)")
    try:
        config = json.loads(config_file.read_text())
        metrics_file = path / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable config.json or metrics.json ({exc})") from None
    return Trial(path, config, metrics)


def method_of(artifacts: str | Path) -> str | None:
    """The method that wrote a trial's artifacts (method.json, written by `results.write_artifacts`), if recorded."""
    marker = Path(artifacts) / "method.json"
    if not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("method")


# --------------------------------------------------------------------------- decoding arbitrary audio


def cut_into_windows(audio: np.ndarray, window_s: float) -> list[np.ndarray]:
    """Pieces of `audio` no longer than `window_s` (0 = no limit), each cut at the quietest 20 ms of the
    second half of its window, so that a cut falls between words where it can."""
    limit = int(round(window_s * SAMPLE_RATE))
    if limit <= 0 or len(audio) <= limit:
        return [audio]
    frame = SAMPLE_RATE // 50
    pieces, start = [], 0
    while len(audio) - start > limit:
        lo = start + limit // 2
        energy = [float(np.square(audio[i : i + frame]).sum()) for i in range(lo, start + limit - frame + 1, frame)]
        cut = lo + frame * int(np.argmin(energy)) + frame // 2 if energy else start + limit
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces


LONGEST_WINDOW_S = 30
"""Whisper's own window: a clip longer than this is decoded in pieces cut at its quietest moments."""


class TaskRecogniser:
    """A model decoded by its method's own task (the `transcribe(model, utts, device, dtype)` that evaluation
    calls), in batches of similar length.

    A task that can change its window (`WhisperSeq2Seq.use_window`) decodes each clip whole: at the window the
    trial was trained with when the clip fits it, else at the clip's length in whole seconds, up to Whisper's
    30 s, and never below `least_s`; only longer clips are cut, at their quietest moments. A task with a fixed
    window (the LLM adaptor's encoder) has its clips cut at that window, at their quietest moments.

    `least_s` defaults to the window natural-voice sets are evaluated at (`NATURAL_WINDOW_S`): what a user
    transcribes is their own speech, and Whisper cut to a window of a few seconds repeats itself on
    natural-sounding speech, so a recogniser decodes it as `natural_wer` was measured."""

    def __init__(self, task: Any, model: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 window_s: float, batch_size: int = 8, least_s: float = NATURAL_WINDOW_S) -> None:
        self.task, self.model, self.device, self.dtype = task, model.eval(), device, dtype
        self.window_s, self.batch_size, self.least_s = window_s, batch_size, least_s
        self.flexible = callable(getattr(task, "use_window", None)) and window_s > 0

    def window_for(self, n_samples: int) -> float:
        """The window a piece of `n_samples` is decoded at."""
        if not self.flexible:
            return self.window_s
        fits = (self.window_s if n_samples <= round(self.window_s * SAMPLE_RATE)
                else float(min(LONGEST_WINDOW_S, math.ceil(n_samples / SAMPLE_RATE))))
        return max(fits, min(self.least_s, LONGEST_WINDOW_S))

    def transcribe(self, audio: list[np.ndarray]) -> list[str]:
        limit = max(self.window_s, LONGEST_WINDOW_S) if self.flexible else self.window_s
        pieces: list[dict[str, Any]] = []
        for i, clip in enumerate(audio):
            for j, piece in enumerate(cut_into_windows(np.asarray(clip, dtype=np.float32), limit)):
                pieces.append({"id": f"{i:06d}-{j:04d}", "audio": piece, "text": "", "clip": i})
        by_window: dict[float, list[int]] = {}
        for k, p in enumerate(pieces):
            by_window.setdefault(self.window_for(len(p["audio"])), []).append(k)
        texts = [""] * len(pieces)
        with torch.no_grad():
            for window, members in sorted(by_window.items()):
                if self.flexible:
                    self.task.use_window(self.model, window)
                batches = length_buckets([len(pieces[k]["audio"]) for k in members], self.batch_size, shuffle=False,
                                         seed=0)
                for batch in batches:
                    chosen = [members[b] for b in batch]
                    hyps = self.task.transcribe(self.model, [pieces[k] for k in chosen], self.device, self.dtype)
                    for k, h in zip(chosen, hyps, strict=True):
                        texts[k] = h
            if self.flexible:
                self.task.use_window(self.model, self.window_s)
        joined: list[list[str]] = [[] for _ in audio]
        for p, t in zip(pieces, texts, strict=True):
            if t.strip():
                joined[p["clip"]].append(t.strip())
        return [" ".join(parts) for parts in joined]


# --------------------------------------------------------------------------- exporting


def dequantise_linears(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Replace bitsandbytes' 4-bit and 8-bit linear layers by plain ones holding their dequantised weights,
    in place (so adapters can be merged into the base they were trained against); returns how many."""
    from peft.utils.integrations import dequantize_bnb_weight

    replaced = 0
    for name, module in list(model.named_modules()):
        if type(module).__name__ not in ("Linear4bit", "Linear8bitLt"):
            continue
        weight = dequantize_bnb_weight(module.weight, state=getattr(module, "state", None)).to(dtype)
        plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                dtype=dtype, device=weight.device)
        plain.weight.data.copy_(weight)
        if module.bias is not None:
            plain.bias.data.copy_(module.bias.data.to(dtype))
        plain.requires_grad_(False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, plain)
        replaced += 1
    if getattr(model, "hf_quantizer", None) is not None:  # no longer a quantised model: it may be cast and saved
        model.hf_quantizer.remove_quantization_config(model)
    elif replaced and hasattr(getattr(model, "config", None), "quantization_config"):
        del model.config.quantization_config
    return replaced


def exported_window(window_s: float) -> int:
    """The window an exported Whisper model gets, in whole seconds (transformers' feature extractor pads to whole
    seconds only) and at least the one a recogniser decodes at (`TaskRecogniser`'s `least_s`), so that the
    exported model transcribes as `platform.transcribe` does."""
    return min(LONGEST_WINDOW_S, max(math.ceil(NATURAL_WINDOW_S), math.ceil(window_s - 1e-9)))


def widen_whisper_window(encoder: torch.nn.Module, config: Any, seconds: int, base_source: str) -> None:
    """Give a window-shortened Whisper encoder `seconds` of positions, the extra rows from the base model's
    own position table, and record it in `config` (no-op when it has them already)."""
    from trainables.blocks.models import set_whisper_window, whisper_position_table

    if encoder.embed_positions.num_embeddings == 50 * seconds:
        return
    try:
        table = whisper_position_table(base_source)
    except ConfigError as exc:
        raise ArtifactError(str(exc)) from None
    set_whisper_window(encoder, config, 50 * seconds, table)


def whisper_processor(source: str, seconds: int) -> Any:
    """Whisper's processor (tokenizer + log-mel features) from `source`, its features padded to `seconds`."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(source)
    fe = processor.feature_extractor.to_dict()
    kept = {k: fe[k] for k in ("feature_size", "sampling_rate", "hop_length", "n_fft", "padding_value",
                               "return_attention_mask") if k in fe}
    processor.feature_extractor = WhisperFeatureExtractor(**kept, chunk_length=seconds)
    return processor


def exported_generation(generation: Any, max_new_tokens: int, language: str) -> None:
    """An exported Whisper decodes as the trial did: its longest transcript, and (multilingual) the trial's
    language and the transcribe task, which `transformers.pipeline` reads from the generation config."""
    generation.max_new_tokens = max_new_tokens
    if getattr(generation, "is_multilingual", False):
        generation.language, generation.task = language, "transcribe"


def prepare_out_dir(out_dir: str | Path) -> Path:
    """An empty output folder (created); ArtifactError when it exists and holds anything."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtifactError(f"{out}: exists and is not empty; name a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def published_name(model: str) -> str:
    """How to name a model for people elsewhere: an offline asset by the hub model it stands in for."""
    from trainables import assets

    return assets.ASSETS[model].hub_equivalent if model in assets.ASSETS else model


def copy_adapter(trial: Trial, out: Path, base: str) -> None:
    """The trial's peft adapter into `out`, its adapter_config.json naming `base` as the model to load it onto."""
    shutil.copytree(trial.file("adapter", "save_adapter writes it"), out, dirs_exist_ok=True)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))


def write_manifest(out: Path, trial: Trial, method: str, kind: str, **extra: Any) -> None:
    """export.json: what the folder is, where it came from, and the trial's headline metrics."""
    metrics = {k: trial.metrics[k] for k in ("wer", "cer", "model_size_mb", "encoder_window_s") if k in trial.metrics}
    (out / "export.json").write_text(json.dumps({"method": method, "kind": kind, "from": str(trial.path),
                                                 "metrics": metrics, **extra}, indent=2))


def copy_loader(name: str, out: Path, as_name: str) -> None:
    """Copy the standalone loader `trainables/loaders/NAME.py` into an export folder as `as_name`."""
    shutil.copy(Path(__file__).parents[1] / "loaders" / f"{name}.py", out / as_name)

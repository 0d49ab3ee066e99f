"""Load a speech recogniser made of a frozen speech encoder, a trained adaptor and a causal LLM, exported by
speech-sweeps (method llm_adaptor).

The folder holds `encoder/` (a Whisper or wav2vec2-style model folder with its feature extractor; a Whisper
encoder's `max_source_positions` is the trained window, 50 per second), `llm/` (a transformers causal-LM
folder with its tokenizer; LoRA, if the LLM was adapted, is merged in), `adaptor.safetensors` and
`audio_llm.json` (the adaptor's shape, the prompt's token ids around the audio, and the decoding settings).

    from load_audio_llm import load
    model = load("exported-folder")
    texts = model.transcribe([audio_16khz_float32, ...])

The same classes build and train the model inside speech-sweeps. This file imports only numpy, torch,
safetensors and transformers.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16_000
FRAMES_PER_SECOND = 50
"""Whisper's encoder gives one state per 20 ms (as do wav2vec2 and HuBERT base and large)."""
ADAPTOR_KINDS = ("linear", "mlp", "swiglu", "transformer")


# --------------------------------------------------------------------------- the frozen speech encoder


class SpeechEncoder(torch.nn.Module):
    """A speech encoder over a fixed window: audio -> (batch, window frames, hidden) states.

    `kind` is "whisper" (log-mel features padded to the window; the encoder's position table already cut to
    it) or "ctc" (a wav2vec2 / HuBERT / WavLM model: raw audio zero-padded to the window). A fixed window
    gives every utterance the same number of states, so prompts line up without padding in a batch.
    """

    def __init__(self, kind: str, encoder: torch.nn.Module, feature_extractor: Any, window_s: float) -> None:
        super().__init__()
        self.kind, self.encoder, self.fe = kind, encoder, feature_extractor
        self.n_samples = int(round(window_s * SAMPLE_RATE))
        # States over the window: Whisper gives 50 a second; a wav2vec2-style model says what its convolutions give.
        lengths = getattr(encoder, "_get_feat_extract_output_lengths", None)
        self.frames = math.ceil(window_s * FRAMES_PER_SECOND) if kind == "whisper" or lengths is None else \
            int(lengths(torch.tensor(self.n_samples)))

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.d_model if self.kind == "whisper" else self.encoder.config.hidden_size)

    def valid_frames(self, audio: np.ndarray) -> int:
        """States that cover the audio itself (the rest encode padding)."""
        return min(self.frames, max(1, math.ceil(self.frames * len(audio) / self.n_samples)))

    def inputs(self, audios: list[np.ndarray]) -> torch.Tensor:
        clipped = [np.asarray(a, dtype=np.float32)[: self.n_samples] for a in audios]
        if self.kind == "whisper":
            return torch.from_numpy(self.fe(clipped, sampling_rate=SAMPLE_RATE, padding="max_length",
                                            max_length=self.n_samples, return_tensors="np")["input_features"])
        out = self.fe(clipped, sampling_rate=SAMPLE_RATE, padding="max_length", max_length=self.n_samples,
                      return_tensors="np")
        return torch.from_numpy(out["input_values"])

    @torch.no_grad()
    def forward(self, audios: list[np.ndarray]) -> torch.Tensor:
        param = next(self.encoder.parameters())
        x = self.inputs(audios).to(param.device, param.dtype)
        if self.kind == "whisper":
            states = self.encoder(input_features=x).last_hidden_state
        else:
            states = self.encoder(input_values=x).last_hidden_state
        # Fit the window exactly (a convolutional front end can round a frame either way).
        if states.shape[1] < self.frames:
            states = F.pad(states, (0, 0, 0, self.frames - states.shape[1]))
        return states[:, : self.frames]


# --------------------------------------------------------------------------- the adaptor


class FrameStack(torch.nn.Module):
    """Concatenate every k consecutive states: (b, t, d) -> (b, ceil(t / k), k·d); the tail is zero-padded."""

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.k, self.out_dim = k, dim * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        x = F.pad(x, (0, 0, 0, (-t) % self.k))
        return x.reshape(b, -1, self.k * d)


class StridedConv(torch.nn.Module):
    """A learned downsampling: a 1-D convolution of kernel and stride k, then GELU: (b, t, d) -> (b, ceil(t / k), d)."""

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.k, self.out_dim = k, dim
        self.conv = torch.nn.Conv1d(dim, dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, (-x.shape[1]) % self.k))
        return F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)


class SwiGLU(torch.nn.Module):
    """LayerNorm, then a gated linear unit with SiLU gate, then a projection."""

    def __init__(self, in_dim: int, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(in_dim)
        self.gate_up = torch.nn.Linear(in_dim, 2 * width)
        self.down = torch.nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(self.norm(x)).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class TransformerProjector(torch.nn.Module):
    """Input projection, `layers` pre-norm Transformer layers, output projection, LayerNorm."""

    def __init__(self, in_dim: int, width: int, out_dim: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(in_dim, width)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu",
                                                 batch_first=True, norm_first=True)
        self.layers = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = torch.nn.Linear(width, out_dim)
        self.norm = torch.nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.out(self.layers(self.inp(x))))


class Adaptor(torch.nn.Module):
    """Encoder states -> LLM input embeddings: downsample by k (frame stacking or a strided convolution), then
    project (`linear`; `mlp`: Linear, ReLU, Linear; `swiglu`; `transformer`). (b, t, d) -> (b, ceil(t / k), llm)."""

    def __init__(self, in_dim: int, out_dim: int, *, kind: str = "mlp", downsample: str = "stack", k: int = 5,
                 width: int = 1024, layers: int = 2, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in ADAPTOR_KINDS:
            raise ValueError(f"adaptor kind {kind!r} is not one of {', '.join(ADAPTOR_KINDS)}")
        self.shape = {"in_dim": in_dim, "out_dim": out_dim, "kind": kind, "downsample": downsample, "k": k,
                      "width": width, "layers": layers, "heads": heads, "dropout": dropout}
        self.down = FrameStack(in_dim, k) if downsample == "stack" else StridedConv(in_dim, k)
        d = self.down.out_dim
        if kind == "linear":
            self.proj: torch.nn.Module = torch.nn.Linear(d, out_dim)
        elif kind == "mlp":
            self.proj = torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.ReLU(), torch.nn.Linear(width, out_dim))
        elif kind == "swiglu":
            self.proj = SwiGLU(d, width, out_dim)
        else:
            self.proj = TransformerProjector(d, width, out_dim, layers, heads, dropout)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.proj(self.down(states))

    def positions(self, frames: int) -> int:
        """LLM positions the adaptor makes of `frames` encoder states."""
        return math.ceil(frames / self.down.k)


# --------------------------------------------------------------------------- the whole recogniser


class AudioLLM(torch.nn.Module):
    """Speech encoder -> adaptor -> causal LLM, with the prompt's token ids on either side of the audio.

    A sequence is: prefix tokens, the audio's adaptor outputs, suffix tokens (the chat template's turn
    boundary up to the assistant's reply), then the transcript and the end token.
    """

    def __init__(self, encoder: SpeechEncoder | None, adaptor: Adaptor, llm: torch.nn.Module, prefix_ids: list[int],
                 suffix_ids: list[int], eos_id: int, pad_id: int) -> None:
        super().__init__()
        self.encoder, self.adaptor, self.llm = encoder, adaptor, llm
        self.prefix_ids, self.suffix_ids, self.eos_id, self.pad_id = list(prefix_ids), list(suffix_ids), eos_id, pad_id

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def prompt_embeddings(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """(b, prefix + audio + suffix, hidden): the prompt around the audio, ready for the first reply token."""
        b, dev = audio_embeds.shape[0], audio_embeds.device
        pre = self.embed(torch.tensor(self.prefix_ids, device=dev)).expand(b, -1, -1)
        suf = self.embed(torch.tensor(self.suffix_ids, device=dev)).expand(b, -1, -1)
        return torch.cat([pre.to(audio_embeds.dtype), audio_embeds, suf.to(audio_embeds.dtype)], dim=1)

    def training_inputs(self, audio_embeds: torch.Tensor, targets: list[list[int]]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs_embeds, attention_mask, labels) for teacher forcing: each target (transcript ids, the end token
        appended here) follows the prompt, right-padded; labels are -100 everywhere but on the targets."""
        dev = audio_embeds.device
        rows = [list(t) + [self.eos_id] for t in targets]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=dev)
        on = torch.zeros(len(rows), width, dtype=torch.bool, device=dev)
        for i, r in enumerate(rows):
            ids[i, : len(r)], on[i, : len(r)] = torch.tensor(r, device=dev), True
        prompt = self.prompt_embeddings(audio_embeds)
        embeds = torch.cat([prompt, self.embed(ids).to(prompt.dtype)], dim=1)
        n_prompt = prompt.shape[1]
        mask = torch.cat([torch.ones(len(rows), n_prompt, dtype=torch.long, device=dev), on.long()], dim=1)
        labels = torch.cat([torch.full((len(rows), n_prompt), -100, dtype=torch.long, device=dev),
                            ids.masked_fill(~on, -100)], dim=1)
        return embeds, mask, labels

    def loss(self, states: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """Mean cross-entropy of the transcript tokens (and end tokens) given encoder states.

        Every row's prompt has the same length, so only the last n_target + 1 positions' logits are computed
        (position t predicts token t + 1): the LLM's output layer over its whole vocabulary is most of a small
        LLM's cost, and the prompt and audio positions carry no loss."""
        embeds, mask, labels = self.training_inputs(self.adaptor(states), targets)
        n_target = max(len(t) for t in targets) + 1  # the longest transcript and its end token
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=n_target + 1).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, -n_target:].flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate_ids(self, states: torch.Tensor, max_new_tokens: int, repetition_penalty: float = 1.0,
                     no_repeat_ngram_size: int = 0) -> torch.Tensor:
        """Greedy decoding from encoder states; returns the new token ids only."""
        embeds = self.prompt_embeddings(self.adaptor(states))
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        with warnings.catch_warnings():  # that the penalties skip the prompt is what is wanted: it is not text
            warnings.filterwarnings("ignore", message=r"Passing `(repetition_penalty|no_repeat_ngram_size)` with")
            return self.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, repetition_penalty=repetition_penalty,
                                     no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=self.eos_id,
                                     pad_token_id=self.pad_id)


def decode(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


class Transcriber:
    """An exported AudioLLM with its tokenizer: audio in, text out."""

    def __init__(self, model: AudioLLM, tokenizer: Any, settings: dict[str, Any]) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings

    def transcribe(self, audios: list[np.ndarray], batch_size: int = 8) -> list[str]:
        out: list[str] = []
        for start in range(0, len(audios), batch_size):
            states = self.model.encoder(audios[start : start + batch_size])
            ids = self.model.generate_ids(states, self.settings["max_new_tokens"], self.settings["repetition_penalty"],
                                          self.settings["no_repeat_ngram_size"])
            out += decode(self.tokenizer, ids)
        return out


def load(folder: str | Path, device: str = "cpu") -> Transcriber:
    """The exported recogniser in float32 on `device`."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    info = json.loads((folder / "audio_llm.json").read_text())
    fe = AutoFeatureExtractor.from_pretrained(folder / "encoder")
    if AutoConfig.from_pretrained(folder / "encoder").model_type == "whisper":
        from transformers import WhisperModel

        encoder = WhisperModel.from_pretrained(folder / "encoder", dtype=torch.float32).get_encoder()
        kind = "whisper"
    else:
        encoder, kind = AutoModel.from_pretrained(folder / "encoder", dtype=torch.float32), "ctc"
    speech = SpeechEncoder(kind, encoder.eval(), fe, info["window_s"])
    adaptor = Adaptor(**info["adaptor"])
    adaptor.load_state_dict(load_file(str(folder / "adaptor.safetensors")))
    llm = AutoModelForCausalLM.from_pretrained(folder / "llm", dtype=torch.float32)
    model = AudioLLM(speech, adaptor, llm, info["prefix_ids"], info["suffix_ids"], info["eos_id"], info["pad_id"])
    return Transcriber(model.to(device).eval(), AutoTokenizer.from_pretrained(folder / "llm"), info["decoding"])

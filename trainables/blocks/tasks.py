"""Transcription tasks: how a model is fed a batch of utterances, what its training loss is, and how it decodes.

Every method's model is scored by `evaluation.evaluate(task, ...)` and used by `inference.TaskRecogniser(task,
...)` through the `Transcriber` protocol below; a task that also trains a model is a `TrainingTask`. The two
recogniser kinds the methods share are written once here:

- `WhisperSeq2Seq`: Whisper's log-mel features at the trial's encoder window, its own cross-entropy on the
  transcript's tokens, and greedy decoding, told the language and task when the model is multilingual;
- `CTC`: a wav2vec2-style model's padded waveforms, its own CTC loss on character labels, greedy decoding.

A method whose model is neither (DQLoRA's Whisper-encoder CTC student, the LLM adaptor) writes its own class in
its file; it satisfies the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from trainables.blocks.batching import SpecAugmentConfig, WhisperFeatures, ctc_batch, spec_augment, whisper_labels

Utterances = list[dict]
"""Utterances as the data splits hold them: dicts with `id`, `audio` (float32, 16 kHz, mono) and `text`."""


@runtime_checkable
class Transcriber(Protocol):
    """Decodes a batch of utterances with a model (greedy, no gradients); one transcript per utterance."""

    def transcribe(self, model: torch.nn.Module, utts: Utterances, dev: torch.device, dtype: torch.dtype) -> list[str]:
        ...


@runtime_checkable
class TrainingTask(Transcriber, Protocol):
    """A Transcriber that also gives the model's training loss on a batch."""

    def loss(self, model: torch.nn.Module, utts: Utterances, dev: torch.device, dtype: torch.dtype,
             gen: torch.Generator | None = None) -> torch.Tensor:
        """The loss on `utts`; `gen` draws the batch's augmentation (SpecAugment), when the task has one."""
        ...


class WhisperSeq2Seq:
    """Whisper (or any transformers Whisper-architecture model): features at a fixed encoder window, the model's
    own cross-entropy on the transcript's tokens, greedy decoding.

    `language`: the language of utterances that carry none of their own (`data.language`, a Whisper code such as
    "en" or "de"). A multilingual model's labels start with each utterance's language token and the transcribe
    token, and its decoder is told the same; an English-only model is told nothing and refuses other languages.
    `spec_augment` masks training features only.
    """

    def __init__(self, source: str, window_s: float, max_new_tokens: int, *, language: str = "en",
                 spec_augment: SpecAugmentConfig | None = None) -> None:
        from transformers import WhisperProcessor

        self.source = source
        self.processor = WhisperProcessor.from_pretrained(source)
        self.tokenizer = self.processor.tokenizer
        self.features = WhisperFeatures(self.processor.feature_extractor, window_s)
        self.window_s = window_s
        self._positions: torch.Tensor | None = None
        self.max_new_tokens = max_new_tokens
        self.language = language
        self.spec_augment = spec_augment

    def labels(self, model: torch.nn.Module, texts: list[str], languages: list[str] | None = None) -> torch.Tensor:
        """Token ids of `texts` for the model's decoder (padded with -100), at most `max_new_tokens` long; for a
        multilingual model each begins with its language (`languages`, else the task's) and the task token."""
        from trainables.blocks.training import unwrap

        start = unwrap(model).config.decoder_start_token_id
        langs = languages or [self.language] * len(texts)
        if not self.multilingual(model):
            self._refuse_other_languages(langs)
            return whisper_labels(self.tokenizer, texts, start, self.max_new_tokens)
        return whisper_labels(self.tokenizer, texts, start, self.max_new_tokens, languages=langs)

    def multilingual(self, model: torch.nn.Module) -> bool:
        from trainables.blocks.training import unwrap

        return bool(getattr(getattr(unwrap(model, peft=True), "generation_config", None), "is_multilingual", False))

    def _refuse_other_languages(self, languages: list[str]) -> None:
        other = sorted(set(languages) - {"en"})
        if other:
            raise ValueError(f"{self.source} is an English-only Whisper; it cannot transcribe {', '.join(other)} "
                             "(data.language or the data's language column); use a multilingual Whisper")

    def languages(self, utts: Utterances) -> list[str]:
        """Each utterance's language: its own, else the task's."""
        return [u.get("language") or self.language for u in utts]

    def inputs(self, utts: Utterances, gen: torch.Generator | None = None) -> torch.Tensor:
        """Log-mel features of `utts` at the window; SpecAugment-masked when `gen` is given and it is enabled."""
        feats, frames = self.features.batch(utts)
        if gen is not None and self.spec_augment is not None:
            feats = spec_augment(feats.clone(), frames, self.spec_augment, gen)
        return feats

    def loss(self, model: torch.nn.Module, utts: Utterances, dev: torch.device, dtype: torch.dtype,
             gen: torch.Generator | None = None) -> torch.Tensor:
        labels = self.labels(model, [u["text"] for u in utts], self.languages(utts))
        return model(input_features=self.inputs(utts, gen).to(dev, dtype), labels=labels.to(dev)).loss

    def generate_kwargs(self, model: torch.nn.Module, language: str | None = None) -> dict[str, Any]:
        """What `generate` is told besides the features: a multilingual model's language (`language`, else the
        task's) and task."""
        if self.multilingual(model):
            return {"language": language or self.language, "task": "transcribe"}
        return {}

    def use_window(self, model: torch.nn.Module, window_s: float) -> None:
        """Decode at a `window_s` window from now on (up to 30 s): the model's encoder gets that many positions
        (their rows from `source`'s full table) and the features are padded to it. A recogniser uses it to
        decode a clip longer than the trained window whole, instead of cutting words at a boundary."""
        from trainables.blocks.models import set_whisper_window, whisper_position_table, window_positions
        from trainables.blocks.training import unwrap

        if window_s == self.window_s:
            encoder = unwrap(model, peft=True).get_encoder()
            if encoder.embed_positions.num_embeddings == window_positions(window_s):
                return
        if self._positions is None:
            self._positions = whisper_position_table(self.source)
        inner = unwrap(model, peft=True)
        set_whisper_window(inner.get_encoder(), inner.config, window_positions(window_s), self._positions)
        self.features = WhisperFeatures(self.processor.feature_extractor, window_s)
        self.window_s = window_s

    @torch.no_grad()
    def transcribe(self, model: torch.nn.Module, utts: Utterances, dev: torch.device, dtype: torch.dtype) -> list[str]:
        langs = self.languages(utts)
        if not self.multilingual(model):
            self._refuse_other_languages(langs)
            langs = ["en"] * len(utts)
        out: list[str] = [""] * len(utts)
        for lang in dict.fromkeys(langs):  # one generate call per language in the batch, each told its own
            idx = [i for i, x in enumerate(langs) if x == lang]
            feats, _ = self.features.batch([utts[i] for i in idx])
            ids = model.generate(input_features=feats.to(dev, dtype), max_new_tokens=self.max_new_tokens,
                                 **self.generate_kwargs(model, lang))
            for i, text in zip(idx, self.tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
        return out


class CTC:
    """A wav2vec2-style CTC model with its processor: padded waveforms, the model's own CTC loss on character
    labels, greedy decoding over the processor's vocabulary."""

    def __init__(self, source: str) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(source)

    def loss(self, model: torch.nn.Module, utts: Utterances, dev: torch.device, dtype: torch.dtype,
             gen: torch.Generator | None = None) -> torch.Tensor:
        batch = ctc_batch(self.processor, utts)
        return model(input_values=batch["input_values"].to(dev, dtype), attention_mask=batch["attention_mask"].to(dev),
                     labels=batch["labels"].to(dev)).loss

    @torch.no_grad()
    def transcribe(self, model: torch.nn.Module, utts: Utterances, dev: torch.device, dtype: torch.dtype) -> list[str]:
        batch = ctc_batch(self.processor, utts)
        logits = model(input_values=batch["input_values"].to(dev, dtype),
                       attention_mask=batch["attention_mask"].to(dev)).logits
        return [t.strip() for t in self.processor.batch_decode(logits.argmax(-1))]

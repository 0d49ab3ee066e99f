"""`--rehearse`: a gpu preset run on CPU, offline, in minutes.

Each hub model becomes the offline model of its family and size class, each hub data set a small local data set
written in that data set's own schema (filled from the offline espeak-ng corpora), and every step and item budget
is cut to a few; the preset's window, workers, searcher and scheduler stay. What breaks in a gpu preset's path
(a column mapping, a split name, a config field) then breaks here, before an hour of GPU time is spent on it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from platform.spaces import ParamSpec, ResolvedSweep, SpaceError

MODEL_STANDINS: dict[str, str] = {
    "openai/whisper-small": "whisper-base",
    "openai/whisper-base": "whisper-base",
    "openai/whisper-tiny": "whisper-base",
    "openai/whisper-base.en": "whisper-tiny.en",
    "openai/whisper-small.en": "whisper-tiny.en",
    "openai/whisper-tiny.en": "whisper-tiny.en",
    "facebook/wav2vec2-base-960h": "whisper-tiny.en",  # dqlora local preset's CTC student
}
"""Hub model -> offline asset of the same family and size class (whole ids)."""
MODEL_FAMILIES: dict[str, str] = {"Qwen/Qwen3-": "smollm2-135m-instruct"}
"""Hub model id prefix -> offline asset (a family whose every size maps to one small model)."""
METHOD_MODELS: dict[tuple[str, str], str] = {("llm_adaptor", "encoder.model"): "whisper-tiny.en"}
"""(method, config key) -> offline asset, where the method's local preset uses a smaller or English-only model."""

BUDGETS: dict[str, int] = {
    "optim.max_steps": 3, "optim.warmup_steps": 0, "optim.batch_size": 2, "optim.checkpoint_every": 1,
    "eval.every": 1, "eval.batch_size": 4, "eval.max_new_tokens": 16,
    "data.max_train_items": 16, "data.max_val_items": 4, "data.max_eval_items": 4,
    "target.max_eval_items": 4, "target.max_sentences": 32,
    "contrastive.steps": 2, "contrastive.warmup_steps": 0, "contrastive.batch_size": 4,
    "tle.steps": 2, "tle.anneal_steps": 1, "tle.batch_size": 4,
}
"""Config key -> the most a rehearsal gives it (a smaller value, and 0, stay)."""
DEFAULTS_CUT: dict[str, int] = {"eval.max_new_tokens": 16}
"""Budgets set even where the preset leaves the method's default (a model that has trained 2 steps may ramble to
the default's end in every decoded utterance)."""
OPTIMISERS: dict[str, str] = {"paged_adamw_8bit": "adamw", "paged_adamw_32bit": "adamw", "adamw_8bit": "adamw"}
"""CUDA-only optimisers -> the CPU one."""
MAX_TRIALS = 2
SPLIT_ITEMS = {"train": 16, "validation": 8, "test": 8}


def _cache() -> Path:
    from trainables.assets.cache import cache_root

    return cache_root() / "rehearsal"


# ---------------------------------------------------------------------------------------------
# Local data sets in the hub data sets' schemas
# ---------------------------------------------------------------------------------------------


def _corpus_split(corpus: str, split: str, language: str | None) -> list[dict[str, Any]]:
    from trainables.blocks.data import _load_corpus

    utts = _load_corpus(corpus, split, None)
    if language is not None:
        utts = [u for u in utts if u.get("language") == language]
    return utts[: SPLIT_ITEMS[split]]


def _wav(audio: Any, path: str) -> dict[str, Any]:
    """An Audio cell as the hub stores it: the encoded file's bytes and its name (no decoder library needed)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    return {"bytes": buf.getvalue(), "path": path}


def _write_parquet(rows: dict[str, list[Any]], features: Any, out: Path) -> None:
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    # cast, not encode: the cells already hold encoded files, and `datasets` encodes arrays only with torchcodec
    Dataset.from_dict(rows).cast(features).to_parquet(str(tmp))
    tmp.rename(out)


def _fleurs_source(config: str) -> tuple[str, str | None]:
    """(espeak corpus, language or None for all) that stands in for FLEURS configuration `config`."""
    from datasets import load_from_disk

    from trainables.assets.corpus import ensure_corpus

    if config == "en_us":
        return "espeak-general", None
    corpus = "espeak-multilingual"
    if config == "all":
        return corpus, None
    language = config.split("_")[0]
    have = set(load_from_disk(str(ensure_corpus(corpus)))["test"]["language"])
    if language not in have:
        raise SpaceError(f"--rehearse: google/fleurs configuration {config!r} has no offline stand-in "
                         f"({corpus} speaks {', '.join(sorted(have))})")
    return corpus, language


def _write_fleurs(root: Path, config: str) -> None:
    from datasets import Audio, Features, Value

    corpus, language = _fleurs_source(config)
    features = Features({
        "id": Value("int32"), "num_samples": Value("int32"), "path": Value("string"),
        "audio": Audio(sampling_rate=16000), "transcription": Value("string"), "raw_transcription": Value("string"),
        "gender": Value("int64"), "lang_id": Value("int64"), "language": Value("string"),
        "lang_group_id": Value("int64"),
    })
    for split in ("train", "validation", "test"):
        utts = _corpus_split(corpus, split, language)
        langs = [u.get("language", "en") for u in utts]
        rows = {
            "id": list(range(len(utts))), "num_samples": [len(u["audio"]) for u in utts],
            "path": [f"{split}/{u['id']}.wav" for u in utts],
            "audio": [_wav(u["audio"], f"{u['id']}.wav") for u in utts],
            "transcription": [u["text"].lower() for u in utts], "raw_transcription": [u["text"] for u in utts],
            "gender": [i % 2 for i in range(len(utts))], "lang_id": [0] * len(utts), "language": langs,
            "lang_group_id": [0] * len(utts),
        }
        _write_parquet(rows, features, root / config / split / "0000.parquet")


def _write_librispeech(root: Path, config: str | None) -> None:
    from datasets import Audio, Features, Value

    features = Features({
        "file": Value("string"), "audio": Audio(sampling_rate=16000), "text": Value("string"),
        "speaker_id": Value("int64"), "chapter_id": Value("int64"), "id": Value("string"),
    })
    for split, name in (("train", "train.100"), ("validation", "validation"), ("test", "test")):
        utts = _corpus_split("espeak-general", split, None)
        ids = [f"{i % 4}-{i // 4}-{i:04d}" for i in range(len(utts))]
        rows = {"file": [f"{i}.flac" for i in ids], "audio": [_wav(u["audio"], f"{i}.flac") for u, i in zip(utts, ids, strict=True)],
                "text": [u["text"].upper() for u in utts], "speaker_id": [i % 4 for i in range(len(utts))],
                "chapter_id": [i // 4 for i in range(len(utts))], "id": ids}
        _write_parquet(rows, features, root / name / "0000.parquet")


DATASET_WRITERS: dict[str, Callable[[Path, str | None], None]] = {
    "google/fleurs": _write_fleurs,  # type: ignore[dict-item]
    "librispeech_asr": _write_librispeech,
    "openslr/librispeech_asr": _write_librispeech,
}
"""Hub data set -> a writer of a small local parquet folder in its schema (a config subfolder where it has configs)."""


def local_dataset(name: str, config: str | None) -> str:
    """The local stand-in for hub data set `name` (configuration `config`), built once and cached."""
    folder = _cache() / name.replace("/", "__")
    done = folder / (config or "default") / ".done" if name == "google/fleurs" else folder / ".done"
    if not done.exists():
        DATASET_WRITERS[name](folder, config)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.touch()
    return str(folder)


# ---------------------------------------------------------------------------------------------
# Rewriting a resolved sweep
# ---------------------------------------------------------------------------------------------


TEXT_KEYS = {"target.text"}
"""Config keys naming a text-only source: a hub data set there becomes a text file of its stand-in's transcripts
(the text reader takes a text file, a corpus or a hub name, not a local data set)."""


def local_texts(name: str, config: str | None) -> str:
    """A text file of the training transcripts of hub data set `name`'s stand-in, one a line."""
    from trainables.blocks.data import load_speech

    folder = Path(local_dataset(name, config))
    out = folder / f"{config or 'default'}-train.txt"
    if not out.exists():
        texts = [u["text"] for u in load_speech(str(folder), "train", hub_config=config)]
        out.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return str(out)


def _standin_model(method: str, key: str, value: str) -> str | None:
    if (method, key) in METHOD_MODELS and "/" in value:
        return METHOD_MODELS[(method, key)]
    if value in MODEL_STANDINS:
        return MODEL_STANDINS[value]
    return next((asset for prefix, asset in MODEL_FAMILIES.items() if value.startswith(prefix)), None)


def _hub_config(flat: dict[str, Any], key: str, name: str) -> str | None:
    from trainables.blocks.data import hub_config_name

    section = key.rsplit(".", 1)[0] if "." in key else ""
    given = flat.get(f"{section}.hub_config") if section else None
    return hub_config_name(name, given) if name == "google/fleurs" else given


def _rewrite_flat(method: str, flat: dict[str, Any], context: dict[str, Any], swaps: dict[str, str]) -> dict[str, Any]:
    """`flat` (dotted keys) with hub names swapped and budgets cut; `context` gives the hub_config beside a source."""
    out = dict(flat)
    for key, value in flat.items():
        if isinstance(value, str):
            model = _standin_model(method, key, value)
            if model is not None:
                out[key] = swaps[value] = model
            elif value in DATASET_WRITERS and key in TEXT_KEYS:
                out[key] = swaps[value] = local_texts(value, _hub_config(context, key, value))
            elif value in DATASET_WRITERS:
                out[key] = swaps[value] = local_dataset(value, _hub_config(context, key, value))
        if key in BUDGETS and isinstance(value, int) and not isinstance(value, bool) and value > BUDGETS[key]:
            out[key] = BUDGETS[key]
        if key == "optim.name" and value in OPTIMISERS:
            out[key] = swaps[value] = OPTIMISERS[value]
    for steps, warmup in (("optim.max_steps", "optim.warmup_steps"), ("contrastive.steps", "contrastive.warmup_steps")):
        if steps in out:
            out[warmup] = 0  # a warm-up longer than the cut budget fails the config's own check
    return out


def _rewrite(method: str, config: dict[str, Any], context: dict[str, Any], swaps: dict[str, str]) -> dict[str, Any]:
    from trainables.blocks.config import flatten, unflatten

    return unflatten(_rewrite_flat(method, flatten(config), context, swaps))


def _rewrite_space(sweep: ResolvedSweep, context: dict[str, Any], swaps: dict[str, str]) -> dict[str, ParamSpec]:
    space = {}
    for key, param in sweep.space.items():
        param = copy.deepcopy(param)
        if param.named:
            param.named = {label: _rewrite(sweep.method, level, {**context}, swaps)
                           for label, level in param.named.items()}
        space[key] = param
    return space


def rehearse(sweep: ResolvedSweep) -> ResolvedSweep:
    """The gpu preset `sweep` (its `--set` values applied, not yet checked) as a CPU rehearsal, with
    `rehearsal` saying what was swapped; `spaces.resolve(..., rewrite=rehearse)` calls it before the method's
    checks. Raises SpaceError with one line when something has no offline stand-in."""
    from trainables import load_method
    from trainables.assets import _looks_like_hub_id
    from trainables.blocks.config import ConfigError, field_type, flatten, merge, unflatten

    if sweep.preset != "gpu":
        raise SpaceError(f"--rehearse rehearses the gpu preset; got --preset {sweep.preset}")
    out = copy.deepcopy(sweep)
    swaps: dict[str, str] = {}
    context = flatten(sweep.config)
    out.config = _rewrite(sweep.method, sweep.config, context, swaps)
    config_cls = load_method(sweep.method).CONFIG
    for key, value in DEFAULTS_CUT.items():
        try:
            field_type(config_cls, key)
        except ConfigError:
            continue  # the method has no such field (a CTC student decodes no tokens)
        out.config = merge(out.config, unflatten({key: min(value, flatten(out.config).get(key, value))}))
    out.space = _rewrite_space(sweep, context, swaps)
    out.overrides = _rewrite_flat(sweep.method, sweep.overrides, context, swaps)
    left = [f"{k}={v}" for k, v in flatten(out.config).items()
            if isinstance(v, str) and _looks_like_hub_id(v) and not v.startswith(str(_cache()))]
    if left:
        raise SpaceError(f"--rehearse: no offline stand-in for {left[0]}")
    out.num_samples = min(out.num_samples, MAX_TRIALS)
    out.max_concurrent_trials = 1
    cpus = max(1, os.cpu_count() or 1)
    out.resources = copy.deepcopy(sweep.resources)
    out.resources.gpus_per_worker = 0.0
    out.resources.cpus_per_worker = min(out.resources.cpus_per_worker, max(1, cpus // out.resources.num_workers))
    if out.scheduler.type == "asha":
        out.scheduler = copy.deepcopy(out.scheduler)
        out.scheduler.grace_period = 1
    line = ", ".join(f"{hub} -> {'local ' + hub if local.startswith(str(_cache())) else local}"
                     for hub, local in swaps.items())
    out.rehearsal = (f"{line}; steps and items cut to a few, at most {MAX_TRIALS} trials, "
                     f"{out.resources.num_workers} worker(s) x {out.resources.cpus_per_worker:g} CPU, no GPU")
    return out

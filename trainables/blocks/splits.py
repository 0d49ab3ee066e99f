"""What every speech loader shares: split names and their aliases, the 80/10/10 split of a layout without
splits, an utterance's shape, what to do with a bad file, and the kinds of local data set. `data.py` (corpora,
folders, the hub) and `data_formats.py` (data sets on disk) both read it; neither imports the other's internals."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                  "dev": "validation", "test": "test"}
SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "valid", "dev", "val"), "test": ("test",)}
TEXT_COLUMNS = ("transcription", "text", "transcript", "sentence", "normalized_text", "raw_transcription")

Utterance = dict[str, Any]

DATASET_KINDS: tuple[str, ...] = ("hf_disk", "parquet", "manifest", "table", "kaldi")
"""Source kinds read by `trainables.blocks.data_formats`: local data sets in the formats users keep."""

OnBad = Literal["error", "skip"]


def canonical_split(split: str) -> str:
    """`train`, `validation` or `test` for a split name or its usual alias (dev, valid, val)."""
    if split not in SPLIT_ALIASES:
        raise ValueError(f"data.split: {split!r} is not one of {', '.join(SPLITS)} (or dev, valid, val)")
    return SPLIT_ALIASES[split]


def hash_split(name: str) -> str:
    """Deterministic 80/10/10 train/validation/test assignment of a file name."""
    bucket = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def unreadable_reason(path: Path) -> str | None:
    """Why soundfile cannot read `path` (its header only: cheap), or None when it can."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad files
        return " ".join(str(exc).split())[-120:] or type(exc).__name__
    return "no samples" if info.frames == 0 else None

"""One loader for every speech source: offline corpora, local folders, the data formats users keep (see
`trainables.blocks.data_formats`) and hub data sets.

Every source yields utterances as dicts {"id": str, "audio": float32 array at 16 kHz, "text": str}.
A source is resolved in this order: a name in `CORPORA`; a local data set in one of `data_formats.FORMATS`
(a `save_to_disk` folder, parquet files, a JSONL manifest, a CSV/TSV table, a Kaldi data directory); another
existing folder (audio with transcripts); a path-like string (which then names a missing path); otherwise a
Hugging Face hub data set name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np

from trainables.assets.corpus import CORPORA, ensure_corpus
from trainables.blocks.audio import AUDIO_SUFFIXES, SAMPLE_RATE, decode_audio
from trainables.blocks.config import ConfigError, require
from trainables.blocks.languages import language_code
from trainables.blocks.splits import (
    DATASET_KINDS,
    SPLIT_ALIASES,
    SPLIT_FOLDERS,
    TEXT_COLUMNS,
    OnBad,
    Utterance,
    canonical_split,
    hash_split,
    unreadable_reason,
)

_FILE_COLUMNS = ("file_name", "file", "filename", "path", "audio", "id")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
OFFLINE_HINT = "use an offline corpus such as 'espeak-general' or a local folder of audio with transcripts"


@dataclass(frozen=True)
class HubDataset:
    """How to read one hub data set."""

    config: str | None
    """Configuration loaded when the caller gives none (e.g. FLEURS `en_us`)."""
    text_column: str | None
    """Column holding the transcript; None means the first of the usual names that is present."""
    split_names: dict[str, str] = field(default_factory=dict)
    """The data set's name for a canonical split, where it differs (LibriSpeech `train.100`)."""


_LIBRISPEECH = HubDataset("clean", "text", {"train": "train.100"})
HUB_DATASETS: dict[str, HubDataset] = {
    "google/fleurs": HubDataset("en_us", "transcription"),
    "librispeech_asr": _LIBRISPEECH,
    "openslr/librispeech_asr": _LIBRISPEECH,
}
_HUB_PREFIXES: dict[str, HubDataset] = {"mozilla-foundation/": HubDataset("en", "sentence")}


def _hub_spec(name: str) -> HubDataset:
    if name in HUB_DATASETS:
        return HUB_DATASETS[name]
    for prefix, spec in _HUB_PREFIXES.items():
        if name.startswith(prefix):
            return spec
    return HubDataset(None, None)


def hub_config_name(name: str, hub_config: str | None) -> str | None:
    """The configuration of hub data set `name` that is loaded: `hub_config`, else the one `HUB_DATASETS` gives."""
    return hub_config or _hub_spec(name).config


def hub_split_name(name: str, split: str) -> str:
    """Hub data set `name`'s own name for `split` (a canonical split or its alias, or already its own name)."""
    canonical = SPLIT_ALIASES.get(split, split)
    return _hub_spec(name).split_names.get(canonical, canonical)


# ---------------------------------------------------------------------------------------------
# Hub reachability
# ---------------------------------------------------------------------------------------------

_DNS_TTL_S = 60.0
_dns_cache: dict[str, tuple[float, bool]] = {}


def _dns_resolves(host: str, timeout_s: float = 3.0) -> bool:
    """Whether `host` resolves; a DNS lookup only, bounded by `timeout_s`, cached for a minute."""
    cached = _dns_cache.get(host)
    if cached and time.monotonic() - cached[0] < _DNS_TTL_S:
        return cached[1]
    result: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout_s)
    ok = bool(result and result[0])
    _dns_cache[host] = (time.monotonic(), ok)
    return ok


def _offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}=1"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    if not _dns_resolves(host):
        return f"DNS lookup of {host} failed"
    return None


def hub_reachable() -> bool:
    """False when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is 1 or the hub's host name does not resolve."""
    return _offline_reason() is None


# ---------------------------------------------------------------------------------------------
# Source resolution
# ---------------------------------------------------------------------------------------------

SourceKind = Literal["corpus", "folder", "hub", "hf_disk", "parquet", "manifest", "table", "kaldi"]


def _looks_like_path(source: str) -> bool:
    return source in (".", "..") or source.startswith(("/", "./", "../", "~")) or "\\" in source


def source_kind(source: str) -> SourceKind:
    """Classify `source` by its name and the names of its files, reading none; ValueError for a missing path, a
    file of no known kind, an ambiguous folder or a bad name."""
    if not source or not source.strip():
        raise ValueError("data.source: is empty; give an offline corpus name, a folder or a hub data set")
    if source in CORPORA:
        return "corpus"
    from trainables.blocks import data_formats

    kind = data_formats.detect(source)
    if kind is not None:
        return kind  # type: ignore[return-value]
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"data.source: {str(path)!r} is a file of no known kind; give a folder of audio and "
                             "transcripts, a JSONL manifest (.jsonl, .json), a table (.csv, .tsv) or parquet files")
        return "folder"
    if _looks_like_path(source):
        raise ValueError(f"data.source: folder or file {str(path)!r} does not exist")
    if not _HUB_ID.match(source):
        raise ValueError(
            f"data.source: {source!r} is not an offline corpus ({', '.join(CORPORA)}), "
            "an existing folder, or a hub data set name"
        )
    return "hub"


def _hub_offline_error(source: str, reason: str) -> ValueError:
    known = _hub_spec(source) != HubDataset(None, None)
    also = "" if known or "/" not in source else f" (and no folder {source!r} exists)"
    return ValueError(
        f"data.source: {source!r} needs the Hugging Face hub, which is unreachable (offline: {reason})"
        f"{also}; {OFFLINE_HINT}"
    )


def validate_source(source: str, data: DataConfig | None = None) -> None:
    """Check that `source` can be loaded, cheaply (no corpus build, no download, no audio opened); ValueError if not.

    A local data set in one of `data_formats.FORMATS` has its metadata read when `data` (the config naming its
    columns and `on_bad`) is given: a missing column, a bad line or row, an empty transcript or (with on_bad
    error) a missing audio file fails here, naming the file and the line or row."""
    kind = source_kind(source)
    if kind in DATASET_KINDS:
        if data is not None:
            from trainables.blocks import data_formats

            data_formats.check(source, kind, data.audio_column, data.text_column, data.hub_config, data.on_bad)
    elif kind == "folder":
        root = Path(source).expanduser()
        if not _audio_files(root):
            raise ValueError(f"data.source: folder {str(root)!r} holds no .wav or .flac files")
    elif kind == "hub":
        reason = _offline_reason()
        if reason is not None:
            raise _hub_offline_error(source, reason)


# ---------------------------------------------------------------------------------------------
# Local folders
# ---------------------------------------------------------------------------------------------


def check_source(source: str, field: str, data: DataConfig | None = None) -> None:
    """`validate_source` with every problem as a ConfigError of one line naming `field` (what configs raise)."""
    try:
        validate_source(source, data)
    except ConfigError:
        raise
    except ValueError as exc:
        message = str(exc).removeprefix("data.source: ")  # the loader's own messages name data.source
        raise ConfigError(message if message.startswith(field) else f"{field}: {message}") from None


def _audio_files(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _split_base(root: Path, split: str) -> Path | None:
    """The subfolder holding `split`, or None when the folder has no split subfolders at all."""
    present = [name for names in SPLIT_FOLDERS.values() for name in names if (root / name).is_dir()]
    if not present:
        return None
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    raise ValueError(
        f"data.source: folder {str(root)!r} has split subfolders ({', '.join(present)}) but none for {split!r}"
    )


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _read_mapping(path: Path) -> dict[str, str]:
    """File name -> transcript from `transcripts.tsv` (file<TAB>text) or `metadata.csv`.

    metadata.csv is either the `audiofolder` layout (a header with file_name and a text column) or
    the LJSpeech layout (no header, `id|text|normalised text`, the last field used).
    """
    raw = path.read_text(encoding="utf-8-sig")
    first = raw.splitlines()[0] if raw.strip() else ""
    delimiter = "\t" if path.suffix == ".tsv" else "|" if "|" in first else ","
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    rows = [row for row in csv.reader(io.StringIO(raw), delimiter=delimiter, quoting=quoting) if len(row) >= 2]
    if not rows:
        return {}
    file_col, text_col = 0, (len(rows[0]) - 1 if delimiter == "|" else 1)
    header_file, header_text = _pick(rows[0], _FILE_COLUMNS), _pick(rows[0], TEXT_COLUMNS)
    if header_file is not None and header_text is not None:
        file_col, text_col = header_file, header_text
        rows = rows[1:]
    return {row[file_col].strip(): row[text_col].strip() for row in rows if len(row) > max(file_col, text_col)}


def _mappings(dirs: list[Path]) -> list[tuple[Path, dict[str, str]]]:
    found = []
    for directory in dirs:
        for name in ("transcripts.tsv", "metadata.csv"):
            if (directory / name).is_file():
                found.append((directory, _read_mapping(directory / name)))
    return found


def _transcript(audio: Path, mappings: list[tuple[Path, dict[str, str]]]) -> str | None:
    sidecar = audio.with_suffix(".txt")
    if sidecar.is_file():
        return " ".join(sidecar.read_text(encoding="utf-8").split())
    for directory, mapping in mappings:
        rel = audio.relative_to(directory) if audio.is_relative_to(directory) else Path(audio.name)
        for key in (rel.as_posix(), rel.with_suffix("").as_posix(), audio.name, audio.stem):
            if key in mapping:
                return mapping[key]
    return None


@dataclass
class FolderScan:
    """What a driver-side scan of a local data folder found (`scan_folder`)."""

    root: Path
    files: int
    """Audio files (.wav, .flac) under the folder."""
    unreadable: list[tuple[Path, str]]
    """Files soundfile cannot open, with its reason (not audio, truncated header, no samples)."""
    unlabelled: list[Path]
    """Readable files with no transcript (no same-stem .txt, no line in transcripts.tsv or metadata.csv)."""

    @property
    def bad(self) -> int:
        return len(self.unreadable) + len(self.unlabelled)

    def summary(self, first: int = 3) -> str:
        """One line: how many files are unusable and why, naming the first few of each kind."""

        def names(paths: list[Path]) -> str:
            shown = ", ".join(p.relative_to(self.root).as_posix() for p in paths[:first])
            return shown + (f", ... ({len(paths) - first} more)" if len(paths) > first else "")

        parts = []
        if self.unreadable:
            reasons = [(p, r) for p, r in self.unreadable[:first]]
            shown = ", ".join(f"{p.relative_to(self.root).as_posix()} ({r})" for p, r in reasons)
            more = f", ... ({len(self.unreadable) - first} more)" if len(self.unreadable) > first else ""
            parts.append(f"{len(self.unreadable)} unreadable: {shown}{more}")
        if self.unlabelled:
            parts.append(f"{len(self.unlabelled)} without a transcript: {names(self.unlabelled)}")
        return (f"folder {str(self.root)!r}: {self.bad} of {self.files} audio files cannot be used; "
                + "; ".join(parts))


def scan_folder(root: Path) -> FolderScan:
    """Check every audio file of a local data folder on the driver, before any trial: which cannot be read and
    which have no transcript (what a trial would fail on, or silently drop)."""
    root = root.expanduser()
    files = _audio_files(root)
    dirs = {root}
    for f in files:  # every folder between the root and a file may hold transcripts.tsv / metadata.csv
        dirs.update(p for p in f.parents if p == root or p.is_relative_to(root))
    mappings = _mappings(sorted(dirs))
    unreadable, unlabelled = [], []
    for f in files:
        reason = unreadable_reason(f)
        if reason is not None:
            unreadable.append((f, reason))
        elif _transcript(f, mappings) is None:
            unlabelled.append(f)
    return FolderScan(root, len(files), unreadable, unlabelled)


def scan_source(data: DataConfig) -> Any:
    """The driver's scan of `data.source` before any trial: a `FolderScan` for a local folder, a
    `data_formats.RowScan` for a local data set (every row's audio opened), None for a corpus or hub data set.
    Both have `bad` (a count) and `summary()` (one line)."""
    kind = source_kind(data.source)
    if kind == "folder":
        return scan_folder(Path(data.source))
    if kind in DATASET_KINDS:
        from trainables.blocks import data_formats

        return data_formats.scan(data.source, kind, data.audio_column, data.text_column, data.hub_config)
    return None


def _decoded(utterances: list[Utterance], on_bad: OnBad) -> list[Utterance]:
    """Decode each utterance's audio; with on_bad skip, drop the ones that cannot be read, else fail naming the file."""
    out = []
    for utt in utterances:
        try:
            out.append({**utt, "audio": decode_audio(utt["audio"])})
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad files
            if on_bad == "skip":
                continue
            raise ValueError(f"data.source: cannot read {str(utt['audio'])!r} ({' '.join(str(exc).split())}); "
                             "fix or remove it, or set data.on_bad: skip") from None
    return out


def _load_folder(root: Path, split: str, max_items: int | None, on_bad: OnBad = "error") -> list[Utterance]:
    base = _split_base(root, split)
    files = _audio_files(base or root)
    if not files:
        raise ValueError(f"data.source: folder {str(base or root)!r} holds no .wav or .flac files")
    if base is None:
        files = [f for f in files if hash_split(f.relative_to(root).as_posix()) == split]
    mappings = _mappings(sorted({root, base or root}))
    utterances: list[Utterance] = []
    labelled = 0
    for f in files:
        text = _transcript(f, mappings)
        if text is None:
            continue
        labelled += 1
        utterances.append({"id": f.relative_to(root).with_suffix("").as_posix(), "audio": f, "text": text})
        if max_items is not None and len(utterances) >= max_items:
            break
    if files and not labelled:
        raise ValueError(
            f"data.source: folder {str(root)!r} has audio but no transcripts "
            "(same-stem .txt files, transcripts.tsv or metadata.csv)"
        )
    return _decoded(utterances, on_bad)


# ---------------------------------------------------------------------------------------------
# Offline corpora and the hub
# ---------------------------------------------------------------------------------------------


def _load_corpus(name: str, split: str, max_items: int | None) -> list[Utterance]:
    return _load_saved(ensure_corpus(name), split, max_items)


def load_natural(source: str, split: str = "test", max_items: int | None = None) -> list[Utterance] | None:
    """The natural-voice utterances (trainables.assets.natural_voice) of an offline corpus's validation or test
    sentences, built on first use; None where `source` has none (a multilingual corpus, local or hub data).
    For evaluation only: no trial trains on them."""
    from trainables.assets.natural_voice import NATURAL_FOR_CORPUS, SPLITS, ensure_natural

    split = canonical_split(split)
    if source not in NATURAL_FOR_CORPUS or split not in SPLITS:
        return None
    utts = _load_saved(ensure_natural(NATURAL_FOR_CORPUS[source]), split, max_items)
    return [{**u, "language": "en"} for u in utts]


def load_natural_val(cfg: DataConfig) -> list[Utterance] | None:
    """The first `natural_val_items` utterances of the natural-voice validation split of `cfg.source` (None when 0)."""
    return load_natural(cfg.source, "validation", cfg.natural_val_items) if cfg.natural_val_items else None


def _load_saved(path: Path, split: str, max_items: int | None) -> list[Utterance]:
    """One split of a corpus the project saved with `save_to_disk` (float32 audio at 16 kHz in a column)."""
    from datasets import load_from_disk

    ds = load_from_disk(str(path))[split]
    if max_items is not None:
        ds = ds.select(range(min(max_items, len(ds))))
    columns = ["id", "text", "audio", *(["language"] if "language" in ds.column_names else [])]
    rows = ds.select_columns(columns).with_format("numpy")
    return [{"id": str(r["id"]), "audio": r["audio"].astype(np.float32), "text": str(r["text"]),
             **({"language": str(r["language"])} if "language" in r else {})} for r in rows]


PARQUET_REVISION = "refs/convert/parquet"
"""The hub's automatic parquet export of a data set: `{config}/{split}/NNNN.parquet` (`partial-{split}` where the
export holds only the first part of a large split), with no dataset card, so its configurations are folders."""
_SCRIPT_ERROR = "Dataset scripts are no longer supported"
_parquet_warned: set[tuple[str, str | None]] = set()


class HubLoadError(RuntimeError):
    """A hub data set could not be loaded: one line naming the field, the data set, its configuration and split;
    the error `datasets` raised is the cause."""


class ParquetFallbackWarning(UserWarning):
    """A hub data set ships a loading script, which `datasets` >= 4 does not run: its parquet export is read instead."""


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def parquet_export_files(config: str | None, split: str) -> dict[str, list[str]]:
    """`data_files` for one split of one configuration of a data set's parquet export (its folders, not its
    configuration names: the export has no dataset card, so `name=config` finds only `default`)."""
    folder = config or "default"
    return {split: [f"{folder}/{split}/*.parquet", f"{folder}/partial-{split}/*.parquet"]}


def load_hub_split(name: str, config: str | None, split: str, field: str = "data.source") -> Any:
    """One split of hub data set `name` as a `datasets.Dataset`. A data set that still ships a loading script
    (which `datasets` >= 4 refuses) is read from the hub's parquet export instead, with one warning per data set
    and configuration; any other failure is a `HubLoadError` naming `field`, the data set, configuration and split."""
    from datasets import load_dataset

    what = f"{field}: hub data set {name!r}"
    where = f"{what} ({f'config {config!r}, ' if config else ''}split {split!r})"
    try:
        return load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - one line naming the source, the original as its cause
        if _SCRIPT_ERROR not in str(exc):
            raise HubLoadError(f"{where} failed to load: {_one_line(exc)}") from exc
    if (name, config) not in _parquet_warned:
        _parquet_warned.add((name, config))
        warnings.warn(f"{what} ships a loading script, which datasets >= 4 no longer runs; reading its "
                      f"parquet export (revision {PARQUET_REVISION!r}, folder {config or 'default'!r}) instead",
                      ParquetFallbackWarning, stacklevel=2)
    try:
        return load_dataset(name, data_files=parquet_export_files(config, split), revision=PARQUET_REVISION,
                            split=split)
    except Exception as exc:  # noqa: BLE001 - one line naming the source, the original as its cause
        raise HubLoadError(f"{where} ships a loading script, which datasets >= 4 no longer runs, and its parquet "
                           f"export ({PARQUET_REVISION}) failed too: {_one_line(exc)}") from exc


def _load_hub(name: str, split: str, max_items: int | None, hub_config: str | None, audio_column: str | None = None,
              text_column: str | None = None, on_bad: OnBad = "error") -> list[Utterance]:
    reason = _offline_reason()
    if reason is not None:
        raise _hub_offline_error(name, reason)
    from trainables.blocks import data_formats

    spec = _hub_spec(name)
    hub_split = hub_split_name(name, split)
    ds = load_hub_split(name, hub_config_name(name, hub_config), hub_split, "data.source")
    what = f"hub data set {name!r} split {hub_split!r}"
    audio_col, text_col = data_formats.hf_columns(ds.features, audio_column, text_column, spec.text_column, what)
    rows = data_formats.hf_dataset_rows(ds, audio_col, text_col, lambda i: f"{what} row {i}", hub_split, None,
                                        f"{name.rsplit('/', 1)[-1]}-{hub_split}")
    rows = rows[:max_items] if max_items is not None else rows
    return data_formats.hf_decode(ds, audio_col, rows, None, on_bad)


def load_speech(
    source: str, split: str, *, max_items: int | None = None, hub_config: str | None = None, on_bad: OnBad = "error",
    audio_column: str | None = None, text_column: str | None = None,
) -> list[Utterance]:
    """Utterances {"id", "audio" (float32, 16 kHz, mono), "text"} of one split of `source`.

    `source` is a name in `CORPORA` (built on first use), a folder of .wav/.flac files with
    transcripts (same-stem .txt files, `transcripts.tsv` or `metadata.csv`; split subfolders if
    present, else a deterministic 80/10/10 split by file name), a local data set in one of
    `data_formats.FORMATS` (see `DataConfig.source`), or a hub data set name
    (`google/fleurs`, `librispeech_asr`, ...), which fails at once when the hub is unreachable.
    For hub and saved Hugging Face data sets `split` may also be the data set's own split name (e.g. `train.360`).
    `audio_column` / `text_column` name the columns of a data set, manifest or table (None: the usual names).
    Unreadable audio fails the load naming the file (and row), or with `on_bad="skip"` is left out.
    """
    if max_items is not None and max_items < 0:
        raise ValueError(f"max_items: {max_items} is negative")
    kind = source_kind(source)
    if kind == "hub":
        return _load_hub(source, split, max_items, hub_config, audio_column, text_column, on_bad)
    if kind in DATASET_KINDS:
        from trainables.blocks import data_formats

        return data_formats.load(source, kind, split, max_items, audio_column, text_column, hub_config, on_bad)
    split = canonical_split(split)
    if kind == "corpus":
        return _load_corpus(source, split, max_items)
    return _load_folder(Path(source).expanduser(), split, max_items, on_bad)


def load_texts(source: str, *, split: str = "train", max_items: int | None = None, field: str = "text",
               hub_config: str | None = None) -> list[str]:
    """Sentences of a text-only source: a plain-text file (one sentence per line, blank lines skipped), an
    offline corpus's `split`, or a hub data set's `split` (their transcripts only: the audio is never read).
    Errors are one line naming `field` and the file."""
    path = Path(source).expanduser()
    if path.is_file():
        try:
            texts = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{field}: cannot read {str(path)!r} as UTF-8 text ({exc})") from None
        texts = [t for t in texts if t]
        if not texts:
            raise ValueError(f"{field}: {str(path)!r} holds no sentence (one per line expected)")
    elif source in CORPORA:
        from datasets import load_from_disk

        texts = [str(x) for x in load_from_disk(str(ensure_corpus(source)))[canonical_split(split)]["text"]]
    elif _looks_like_path(source) or not _HUB_ID.match(source):
        raise ValueError(f"{field}: {source!r} is neither a text file, an offline corpus ({', '.join(CORPORA)}) "
                         "nor a hub data set")
    else:
        texts = _hub_texts(source, split, hub_config, field)
    return texts[:max_items] if max_items is not None else texts


def _hub_texts(name: str, split: str, hub_config: str | None, field: str) -> list[str]:
    reason = _offline_reason()
    if reason is not None:
        raise ValueError(f"{field}: hub data set {name!r} needs the hub, which is unreachable ({reason}); "
                         "give a text file (one sentence per line) or an offline corpus")
    from trainables.blocks import data_formats

    ds = load_hub_split(name, hub_config_name(name, hub_config), hub_split_name(name, split), field)
    try:
        column = data_formats.pick_text_column(ds.column_names, None, _hub_spec(name).text_column,
                                               f"hub data set {name!r}")
    except ValueError as exc:
        raise ValueError(str(exc).replace("data.source: ", f"{field}: ", 1)) from None
    return [str(x) for x in ds[column]]


@dataclass
class DataConfig:
    """Which speech to train and evaluate on."""

    source: str = "espeak-general"
    """Offline corpus name, local data, or hub data set (gpu preset). Local data, and how its splits are chosen
    (where the layout names no splits: 80/10/10 by a hash of each utterance's audio path, as for a folder):
    - a folder of .wav/.flac files with same-stem .txt, transcripts.tsv or metadata.csv: split subfolders
      (train, dev/valid/validation/val, test), else by hash;
    - a Hugging Face `save_to_disk` folder: a DatasetDict's splits (its own names, or dev/valid for
      validation); a single Dataset by hash;
    - parquet files, a folder or a glob (data/*.parquet): the split each file's path names (train/0000.parquet,
      data/dev-00000-of-00001.parquet, test.parquet), else by hash; a single .parquet file by hash;
    - a NeMo-style JSONL manifest (.jsonl/.json: audio_filepath, text, optional duration, offset) or a CSV/TSV
      table (a header naming an audio path and a transcript column): a `split` column if there is one, else by
      hash; or a folder of split-named files (train.jsonl, dev_manifest.json, test.tsv); relative audio paths
      resolve against the file's folder;
    - a Kaldi data directory (wav.scp listing audio files, text, optional segments): split subdirectories
      (train/, dev/, test/), else by hash of the recording's path.
    Data sets, manifests and tables take the columns audio_column and text_column name."""
    hub_config: str | None = None
    """Hub data set configuration, e.g. en_us for google/fleurs (for a local parquet folder: its subfolder of
    that name, as in the hub's parquet export)."""
    train_split: str = "train"
    """Split to train on."""
    val_split: str = "validation"
    """Split for evaluations during training."""
    eval_split: str = "test"
    """Split for the final evaluation (wer, cer, latency)."""
    max_train_items: int | None = None
    """Use at most this many training utterances (None = all)."""
    max_val_items: int | None = 48
    """Utterances per evaluation during training."""
    max_eval_items: int | None = 200
    """Utterances in the final evaluation."""
    encoder_window_s: float = 0.0
    """Audio window a Whisper encoder sees, in seconds: 0 = the longest utterance of the three splits,
    rounded up to 0.5 s (training and decoding get much cheaper for short utterances); 30 = Whisper's own."""
    on_bad: OnBad = "error"
    """Local audio that is missing, cannot be read or (in a folder) has no transcript: error (the sweep stops
    before any trial, naming the file and row) or skip (left out, with a warning giving the count)."""
    audio_column: str | None = None
    """Column (or manifest key) holding the audio of a data set, manifest or table; None: the first Audio
    column, else the first of audio_filepath, audio, path, audio_path, file, file_name, filename, wav, wav_path."""
    text_column: str | None = None
    """Column (or manifest key) holding the transcript; None: the hub data set's known one, else the first of
    transcription, text, transcript, sentence, normalized_text, raw_transcription."""
    language: str = "en"
    """Language of the speech (a code such as en, de, fr; a name or a locale is read as its code). An utterance's
    own, from a language column (language, lang, locale, language_code) of a data set, manifest or table, wins.
    Whisper is trained and told to transcribe each utterance in its language; an English-only model takes en
    only. A set holding several languages also gets wer_<lang> and cer_<lang>."""

    natural_also: list[str] = field(default_factory=list)
    """Other offline corpora whose natural-voice test sets the trial is also scored on, as natural_wer_<domain> and
    natural_cer_<domain> (e.g. espeak-general for a trial adapted to clinical speech: does it still transcribe
    everyday speech?). Evaluation only, like natural_wer."""

    natural_val_items: int = 0
    """Utterances of the natural-voice validation split (the corpus's validation sentences in the neural voice)
    scored at the trial's end as natural_val_wer and natural_val_cer, which a sweep may select on
    (`metric: natural_val_wer`) to prefer what carries to natural speech over what fits espeak-ng; 0: not scored.
    Evaluation only, like natural_wer."""

    replay_source: str | None = None
    """Another source (an offline corpus or local data, as `source`) whose training utterances are mixed into the
    training split, e.g. espeak-general while adapting to clinical speech: the model keeps hearing everyday speech
    while it learns the domain, which limits what it forgets. Training only: validation and test stay `source`'s."""
    replay_fraction: float = 0.25
    """Share of the training split that `replay_source`'s utterances make up (its first ones, in its own order)."""

    def check(self) -> None:
        from trainables.assets.natural_voice import NATURAL_FOR_CORPUS

        for i, corpus in enumerate(self.natural_also):
            require(corpus in NATURAL_FOR_CORPUS, f"natural_also[{i}]",
                    f"{corpus!r} has no natural-voice set (those that do: {', '.join(NATURAL_FOR_CORPUS)})")
        require(self.natural_val_items >= 0, "natural_val_items", f"must be 0 or more, got {self.natural_val_items}")
        if self.natural_val_items:
            require(self.source in NATURAL_FOR_CORPUS, "natural_val_items",
                    f"source {self.source!r} has no natural-voice set (those that do: {', '.join(NATURAL_FOR_CORPUS)})")
        for name in ("max_train_items", "max_val_items", "max_eval_items"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, f"must be at least 1 or null, got {value}")
        require(0 < self.replay_fraction < 1, "replay_fraction", f"must be in (0, 1), got {self.replay_fraction}")
        if self.replay_source is not None:
            require(self.replay_source != self.source, "replay_source", "is the same as source: nothing to replay")
            try:
                replay_kind = source_kind(self.replay_source)
            except ValueError as exc:
                raise ConfigError(f"replay_source: {str(exc).removeprefix('data.source: ')}") from None
            if replay_kind in DATASET_KINDS:
                check_source(self.replay_source, "replay_source", self)
        require(0 <= self.encoder_window_s <= 30, "encoder_window_s", f"must be in [0, 30], got {self.encoder_window_s}")
        for name in ("audio_column", "text_column"):
            value = getattr(self, name)
            require(value is None or bool(value.strip()), name, "must name a column or be null")
        try:
            self.language = language_code(self.language, "language")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            kind = source_kind(self.source)
        except ValueError:
            return  # the method's own check of data.source names the problem
        if kind in DATASET_KINDS:
            check_source(self.source, "source", self)


@dataclass
class Splits:
    """The three splits of a trial's data, and the encoder window they call for."""

    train: list[Utterance]
    val: list[Utterance]
    test: list[Utterance]
    encoder_window_s: float
    """The configured window, or (when that is 0) the longest utterance rounded up to 0.5 s."""


def load_splits(cfg: DataConfig) -> Splits:
    """Load the train, validation and test splits `cfg` names and choose the encoder window."""
    kw = {"hub_config": cfg.hub_config, "on_bad": cfg.on_bad, "audio_column": cfg.audio_column,
          "text_column": cfg.text_column}
    train = load_speech(cfg.source, cfg.train_split, max_items=cfg.max_train_items, **kw)
    val = load_speech(cfg.source, cfg.val_split, max_items=cfg.max_val_items, **kw)
    test = load_speech(cfg.source, cfg.eval_split, max_items=cfg.max_eval_items, **kw)
    if cfg.replay_source is not None:
        # n replayed utterances make up replay_fraction of the mixed split: n / (len(train) + n) = fraction.
        n = max(1, round(len(train) * cfg.replay_fraction / (1 - cfg.replay_fraction)))
        train = train + load_speech(cfg.replay_source, "train", max_items=n, **kw)
    longest_s = max(len(u["audio"]) for u in train + val + test) / SAMPLE_RATE
    train, val, test = (with_language(split, cfg.language) for split in (train, val, test))
    return Splits(train, val, test, cfg.encoder_window_s or math.ceil(2 * longest_s) / 2)


def with_language(utts: list[Utterance], language: str) -> list[Utterance]:
    """`utts` with `language` where the data gave none (new dicts: loaded splits may be shared)."""
    return [u if u.get("language") else {**u, "language": language} for u in utts]


# ---------------------------------------------------------------------------------------------
# Describing and labelling audio without loading it (tracking, platform.transcribe)
# ---------------------------------------------------------------------------------------------


def audio_files(root: Path) -> list[Path]:
    """Every .wav/.flac file under `root`, sorted."""
    return _audio_files(root)


def transcripts(files: list[Path], root: Path) -> list[str | None]:
    """Each file's transcript as a local data folder gives it (a same-stem .txt file, or its line in
    transcripts.tsv or metadata.csv in `root` or the file's own folder); None where there is none."""
    dirs = sorted({root, *(f.parent for f in files)})
    mappings = _mappings(dirs)
    return [_transcript(f, mappings) for f in files]


def describe_split(source: str, split: str, max_items: int | None = None, hub_config: str | None = None,
                   audio_column: str | None = None, text_column: str | None = None) -> dict[str, Any]:
    """What one split of `source` is, cheaply (no audio decoded, nothing built or downloaded), for tracking:
    `kind`, `uri`, `split`, `size` (utterances; None when only loading a hub data set would tell) and
    `digest`, of the content where it is known without loading (an offline corpus is named by its build
    inputs, a folder by its files and transcripts, a local data set by its rows), else of the definition (a hub
    data set)."""
    kind = source_kind(source)
    size: int | None
    identity: Any
    if kind in DATASET_KINDS:
        from trainables.blocks import data_formats

        size, identity, canonical = data_formats.describe(source, kind, split, max_items, audio_column, text_column,
                                                          hub_config)
        uri = Path(source).expanduser().resolve().as_posix() if not data_formats.is_glob(source) else source
    elif kind == "corpus":
        from trainables.assets.corpus import corpus_dir

        spec = CORPORA[source]
        canonical = canonical_split(split)
        per_language = {"train": spec.n_train, "validation": spec.n_validation, "test": spec.n_test}[canonical]
        n = per_language * len(spec.languages)
        size = n if max_items is None else min(n, max_items)
        uri = corpus_dir(source).as_posix()
        identity = [corpus_dir(source).name, canonical, size]
    elif kind == "folder":
        root = Path(source).expanduser().resolve()
        canonical = canonical_split(split)
        base = _split_base(root, canonical)
        files = _audio_files(base or root)
        if base is None:
            files = [f for f in files if hash_split(f.relative_to(root).as_posix()) == canonical]
        labelled = [(f, t) for f, t in zip(files, transcripts(files, root), strict=True) if t is not None]
        labelled = labelled[:max_items] if max_items is not None else labelled
        size, uri = len(labelled), root.as_posix()
        identity = [(f.relative_to(root).as_posix(), f.stat().st_size, t) for f, t in labelled]
    else:
        spec_hub = _hub_spec(source)
        canonical = split
        size, uri = None, f"https://huggingface.co/datasets/{source}"
        identity = [source, hub_config or spec_hub.config, split, max_items]
    digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:10]
    return {"kind": kind, "uri": uri, "split": canonical, "size": size, "digest": digest}

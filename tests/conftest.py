"""Shared fixtures: tiny random models built from configs, and an offline environment."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# Tests never touch the network: the hub counts as unreachable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
def run_sweep_file(spec: dict, name: str, tmp_path: Path) -> tuple[list[str], list]:
    """Run the search-space `spec` as `python -m platform.sweep` would (local preset, its own asset cache, MLflow
    store and results under `tmp_path`), assert it exits 0, and return (the cache's build log targets, the
    experiment's MLflow runs)."""
    import subprocess
    import sys

    import yaml
    from mlflow.tracking import MlflowClient

    from trainables.assets.cache import CACHE_ENV

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    cache = tmp_path / "cache"
    env = {**os.environ, "RAY_ADDRESS": "", CACHE_ENV: str(cache)}
    out = subprocess.run([sys.executable, "-m", "platform.sweep", str(path), "--preset", "local", "--tracking-uri",
                          f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "results")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = [json.loads(x)["target"] for x in (cache / "builds.jsonl").read_text().splitlines()]
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return log, c.search_runs([c.get_experiment_by_name(name).experiment_id])


CONTRACT_METRICS = [
    "wer", "cer", "train_samples_per_s", "peak_vram_mb", "peak_host_mem_mb", "model_size_mb",
    "compression_ratio", "trainable_params", "total_params", "trainable_param_ratio", "latency_ms_per_utt", "rtf",
    "val_wer", "val_cer", "natural_wer", "natural_cer",
]


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    from trainables import assets

    return Path(assets.resolve_model("whisper-tiny.en"))


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory, tiny_en_dir: Path) -> Path:
    """A randomly initialised 2+2-layer Whisper (d_model 64) with tiny.en's tokenizer and features.

    64 wide, not less: bitsandbytes' CPU 4-bit kernels work in blocks of 64 input features.
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    out = tmp_path_factory.mktemp("tiny-whisper")
    base = json.loads((tiny_en_dir / "config.json").read_text())
    small = {**base, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**{k: v for k, v in small.items() if k != "architectures"}))
    model.half().save_pretrained(out)
    for f in tiny_en_dir.iterdir():
        if f.suffix in (".json", ".txt") and f.name not in ("config.json", "inputs.json"):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_wav2vec2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer wav2vec2 CTC model with an upper-case character vocabulary."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    out = tmp_path_factory.mktemp("tiny-wav2vec2")
    chars = ["<pad>", "<s>", "</s>", "<unk>", "|", "'"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    (out / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), word_delimiter_token="|")
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    config = Wav2Vec2Config(
        vocab_size=len(chars), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, pad_token_id=0, ctc_loss_reduction="mean", do_stable_layer_norm=True,
        feat_extract_norm="layer",
    )
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainables import assets

    smol = Path(assets.resolve_model("smollm2-135m-instruct"))
    out = tmp_path_factory.mktemp("tiny-llm")
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    for f in smol.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_multilingual_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2+2-layer multilingual Whisper (d_model 64) with whisper-base's tokenizer (its
    language and task tokens) and generation config; skipped where the whisper-base packages are missing."""
    from trainables.assets.ct2_whisper import MissingSourceError, base_source, write_tiny_random

    try:
        source = base_source()
    except MissingSourceError as err:
        pytest.skip(str(err))
    return write_tiny_random(source, tmp_path_factory.mktemp("tiny-multilingual"))


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's own status once every report is written. A full run's interpreter teardown (Ray's,
    onnxruntime's and torch's threads still alive) has segfaulted after all tests passed (rc 139 on 2026-12-06)."""
    if _EXIT_STATUS:
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])

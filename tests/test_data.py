"""The speech loader: local folders, offline corpora, the hub's offline behaviour and noisy copies."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from trainables.assets.cache import CACHE_ENV
from trainables.assets.corpus import CORPORA, CorpusSpec, corpus_dir
from trainables.blocks import data
from trainables.blocks.data import canonical_split, hash_split, hub_reachable, load_speech, source_kind, validate_source
from trainables.blocks.noise import noisy_copies


def _tone(seconds: float, sr: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: Path, seconds: float = 0.5, sr: int = 22_050, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _tone(seconds, sr), sr, format=fmt)


@pytest.fixture
def sidecar_folder(tmp_path: Path) -> Path:
    root = tmp_path / "speech"
    for i in range(30):
        suffix = ".flac" if i % 3 == 0 else ".wav"
        _write(root / f"clip{i:02d}{suffix}", seconds=0.25 + 0.01 * i)
        (root / f"clip{i:02d}.txt").write_text(f"sentence number {i}\n")
    _write(root / "unlabelled.wav")
    return root


def test_folder_with_sidecars_splits_by_hash(sidecar_folder: Path) -> None:
    splits = {s: load_speech(str(sidecar_folder), s) for s in ("train", "validation", "test")}
    ids = [u["id"] for utts in splits.values() for u in utts]
    assert len(ids) == len(set(ids)) == 30
    assert len(splits["train"]) > len(splits["test"])
    for split, utts in splits.items():
        for utt in utts:
            assert set(utt) == {"id", "audio", "text"}
            i = int(utt["id"][-2:])
            assert hash_split(utt["id"] + (".flac" if i % 3 == 0 else ".wav")) == split
            assert utt["audio"].dtype == np.float32 and utt["audio"].ndim == 1
            assert utt["text"] == f"sentence number {i}"
            assert len(utt["audio"]) == pytest.approx((0.25 + 0.01 * i) * 16_000, abs=2)
    assert [u["id"] for u in load_speech(str(sidecar_folder), "dev")] == [u["id"] for u in splits["validation"]]
    assert len(load_speech(str(sidecar_folder), "train", max_items=3)) == 3


def test_folder_with_split_subfolders_and_transcripts_tsv(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    lines = []
    for split, n in (("train", 4), ("dev", 2), ("test", 3)):
        for i in range(n):
            _write(root / split / f"{split}_{i}.wav", sr=48_000)
            lines.append(f"{split}_{i}.wav\t{split} utterance {i}")
    (root / "transcripts.tsv").write_text("file\ttext\n" + "\n".join(lines) + "\n")
    assert [len(load_speech(str(root), s)) for s in ("train", "validation", "test")] == [4, 2, 3]
    test = load_speech(str(root), "test")
    assert (test[0]["id"], test[0]["text"]) == ("test/test_0", "test utterance 0")
    assert len(test[0]["audio"]) == 8_000


def test_metadata_csv_layouts(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    for i in range(12):
        _write(hf / "train" / f"a{i}.wav")
    (hf / "train" / "metadata.csv").write_text(
        "file_name,transcription\n" + "".join(f"a{i}.wav,hello {i}\n" for i in range(12))
    )
    assert sorted(u["text"] for u in load_speech(str(hf), "train")) == sorted(f"hello {i}" for i in range(12))

    lj = tmp_path / "lj"
    for i in range(40):
        _write(lj / "wavs" / f"LJ{i:03d}.wav", seconds=0.1)
    (lj / "metadata.csv").write_text("".join(f"LJ{i:03d}|Raw {i}.|raw {i}\n" for i in range(40)))
    texts = [u["text"] for s in ("train", "validation", "test") for u in load_speech(str(lj), s)]
    assert sorted(texts) == sorted(f"raw {i}" for i in range(40))


def test_folder_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for call in (lambda: load_speech(str(missing), "train"), lambda: validate_source(str(missing))):
        with pytest.raises(ValueError, match="does not exist") as err:
            call()
        assert str(missing) in str(err.value) and "\n" not in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .wav or .flac"):
        validate_source(str(empty))
    unlabelled = tmp_path / "unlabelled"
    _write(unlabelled / "x.wav")
    with pytest.raises(ValueError, match="no transcripts"):
        load_speech(str(unlabelled), hash_split("x.wav"))
    partial = tmp_path / "partial"
    _write(partial / "train" / "x.wav")
    with pytest.raises(ValueError, match="none for 'test'"):
        load_speech(str(partial), "test")


def test_hub_source_fails_fast_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
    start = time.perf_counter()
    for source in ("google/fleurs", "librispeech_asr", "mozilla-foundation/common_voice_17_0"):
        assert source_kind(source) == "hub"
        for call in (lambda s=source: load_speech(s, "test"), lambda s=source: validate_source(s)):
            with pytest.raises(ValueError) as err:
                call()
            message = str(err.value)
            assert "\n" not in message and repr(source) in message
            assert "offline" in message and "espeak-general" in message and "local folder" in message
    assert time.perf_counter() - start < 1.0


def test_dns_failure_means_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(data, "_dns_cache", {})
    looked_up: list[str] = []

    def no_dns(host: str, *args: object, **kwargs: object) -> list:
        looked_up.append(host)
        raise socket.gaierror("no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert not hub_reachable()
    assert looked_up == ["huggingface.co"]
    with pytest.raises(ValueError, match="DNS lookup of huggingface.co failed"):
        validate_source("google/fleurs")

    monkeypatch.setattr(data, "_dns_cache", {})
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [("resolved",)])
    assert hub_reachable()


def test_source_kinds_and_splits(tmp_path: Path) -> None:
    assert source_kind("espeak-general") == "corpus"
    assert source_kind(str(tmp_path)) == "folder"
    with pytest.raises(ValueError, match="data.source"):
        source_kind("no such thing!")
    assert canonical_split("dev") == "validation"
    with pytest.raises(ValueError, match="data.split: 'eval'"):
        canonical_split("eval")


def test_validate_corpus_source_builds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    validate_source("espeak-general")
    assert not corpus_dir("espeak-general").exists()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_corpus_source_and_noisy_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(CORPORA, "unit-data", CorpusSpec(domain="general", n_train=5, n_validation=1, n_test=2))
    train = load_speech("unit-data", "train")
    assert len(train) == 5 and len(load_speech("unit-data", "test", max_items=1)) == 1
    for utt in train:
        assert isinstance(utt["id"], str) and isinstance(utt["text"], str) and utt["text"]
        assert utt["audio"].dtype == np.float32 and len(utt["audio"]) > 16_000

    for kind in ("white", "babble"):
        noisy = noisy_copies(train, kind, 5.0, seed=3)
        again = noisy_copies(train, kind, 5.0, seed=3)
        for clean, a, b in zip(train, noisy, again, strict=True):
            assert a["id"] == clean["id"] and a["text"] == clean["text"]
            assert np.array_equal(a["audio"], b["audio"])
            residual = a["audio"].astype(np.float64) - clean["audio"]
            snr = 10 * np.log10(np.mean(clean["audio"].astype(np.float64) ** 2) / np.mean(residual**2))
            assert abs(snr - 5.0) < 0.1
    other_seed = noisy_copies(train, "white", 5.0, seed=4)
    assert not np.array_equal(other_seed[0]["audio"], noisy_copies(train, "white", 5.0, seed=3)[0]["audio"])


def test_hub_loader_decodes_bytes_without_torchcodec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path with a stand-in for `load_dataset`: audio cast to Audio(decode=False), read by soundfile."""
    import io

    import datasets

    def encoded(seconds: float, sr: int) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, _tone(seconds, sr), sr, format="WAV")
        return buf.getvalue()

    calls: list[tuple] = []

    def fake_load_dataset(name: str, config: str | None, split: str) -> datasets.Dataset:
        calls.append((name, config, split))
        rows = {"audio": [{"bytes": encoded(0.5, 48_000), "path": None}, {"bytes": encoded(0.25, 8_000), "path": None}],
                "transcription": ["first one", "second one"], "text": ["a", "b"], "id": [7, 7]}
        # Encoding through the Audio feature needs torchcodec; casting the raw struct does not.
        return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(sampling_rate=None))

    monkeypatch.setattr(data, "_offline_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    utts = load_speech("google/fleurs", "dev")
    assert calls == [("google/fleurs", "en_us", "validation")]
    assert [u["text"] for u in utts] == ["first one", "second one"]
    assert [len(u["audio"]) for u in utts] == [8_000, 4_000]
    assert len({u["id"] for u in utts}) == 2 and all(u["audio"].dtype == np.float32 for u in utts)
    load_speech("librispeech_asr", "train", max_items=1, hub_config="other")
    assert calls[-1] == ("librispeech_asr", "other", "train.100")


def test_replay_mixes_another_sources_training_utterances_into_training_only(tmp_path: Path) -> None:
    """data.replay_source: its first utterances make up replay_fraction of the training split; val and test stay
    the source's; bad values are one-line errors naming the field."""
    from trainables.blocks.config import ConfigError, build
    from trainables.blocks.data import DataConfig, load_splits

    other = tmp_path / "other"
    for split in ("train", "validation", "test"):
        for i in range(4):
            _write(other / split / f"{split}{i}.wav", seconds=0.3)
            (other / split / f"{split}{i}.txt").write_text(f"other {split} {i}\n")
    own = tmp_path / "own"
    for split in ("train", "validation", "test"):
        for i in range(6):
            _write(own / split / f"{split}{i}.wav", seconds=0.3)
            (own / split / f"{split}{i}.txt").write_text(f"own {split} {i}\n")
    plain = load_splits(build(DataConfig, {"source": str(own)}))
    mixed = load_splits(build(DataConfig, {"source": str(own), "replay_source": str(other), "replay_fraction": 0.25}))
    assert [u["text"] for u in mixed.train[:6]] == [u["text"] for u in plain.train]
    replayed = [u["text"] for u in mixed.train[6:]]
    assert replayed == ["other train 0", "other train 1"]  # 2 / (6 + 2) = 0.25
    assert [u["text"] for u in mixed.val] == [u["text"] for u in plain.val]
    assert [u["text"] for u in mixed.test] == [u["text"] for u in plain.test]
    with pytest.raises(ConfigError, match=r"^replay_fraction: must be in \(0, 1\), got 1.0$"):
        build(DataConfig, {"source": str(own), "replay_source": str(other), "replay_fraction": 1.0})
    with pytest.raises(ConfigError, match=r"^replay_source: folder or file .*nowhere' does not exist$"):
        build(DataConfig, {"source": str(own), "replay_source": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="^replay_source: is the same as source"):
        build(DataConfig, {"source": str(own), "replay_source": str(own)})

"""Hub data sets that still ship a loading script (refused by `datasets` >= 4) are read from the hub's parquet
export; other load failures stay errors, one line naming the source; `--dry-run` lists what a sweep will fetch.

No network: `datasets.load_dataset` is replaced, and the hub counts as reachable only where a test says so."""

from __future__ import annotations

import io
import socket
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from platform import spaces, sweep
from platform.fetches import HubFetch, hub_fetches, sweep_configs
from trainables.blocks import data
from trainables.blocks.data import PARQUET_REVISION, HubLoadError, ParquetFallbackWarning, load_speech, load_texts

SCRIPT_ERROR = RuntimeError("Dataset scripts are no longer supported, but found fleurs.py")


def _wav(seconds: float, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(np.arange(int(seconds * sr)) / 7)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def _export(root: Path) -> Path:
    """A folder laid out as the hub's parquet export of google/fleurs: `{config}/{split}/0000.parquet`, with
    FLEURS's columns (`audio`, `transcription`, `raw_transcription`, ...) and two configurations."""
    import datasets

    for config in ("en_us", "fr_fr"):
        for split, n in (("train", 3), ("validation", 2), ("test", 2)):
            rows = {"id": list(range(n)), "num_samples": [8_000 * (i + 1) for i in range(n)],
                    "audio": [{"bytes": _wav(0.5 * (i + 1)), "path": None} for i in range(n)],
                    "transcription": [f"{config} {split} {i}" for i in range(n)],
                    "raw_transcription": [f"{config.upper()} {split} {i}." for i in range(n)]}
            folder = root / config / split
            folder.mkdir(parents=True)
            # Casting the raw struct to Audio needs no codec (encoding through the feature would).
            ds = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(sampling_rate=None))
            ds.to_parquet(str(folder / "0000.parquet"))
    return root


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub counts as reachable (nothing is fetched: every test replaces what would fetch), and the
    once-per-data-set fallback warning starts afresh."""
    monkeypatch.setattr(data, "_offline_reason", lambda: None)
    monkeypatch.setattr(data, "_parquet_warned", set())


def test_script_dataset_falls_back_to_the_parquet_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         hub: None) -> None:
    import datasets

    real_load_dataset = datasets.load_dataset
    export = _export(tmp_path / "export")
    calls: list[tuple[tuple, dict]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        if kwargs.get("revision") != PARQUET_REVISION:
            raise SCRIPT_ERROR
        # The export's files as the hub serves them: the same data_files and split, read from the local copy.
        return real_load_dataset(str(export), data_files=kwargs["data_files"], split=kwargs["split"])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.warns(ParquetFallbackWarning) as caught:
        test = load_speech("google/fleurs", "test")
        dev = load_speech("google/fleurs", "dev", max_items=1)
    assert len(caught) == 1, [str(w.message) for w in caught]  # once per data set and configuration
    message = str(caught[0].message)
    assert "'google/fleurs'" in message and PARQUET_REVISION in message and "\n" not in message

    assert calls[0] == (("google/fleurs", "en_us"), {"split": "test"})  # the plain load comes first
    args, kwargs = calls[1]
    assert args == ("google/fleurs",) and kwargs["revision"] == PARQUET_REVISION and kwargs["split"] == "test"
    # The export has no dataset card: the configuration is its folder, not a builder config name.
    assert kwargs["data_files"] == {"test": ["en_us/test/*.parquet", "en_us/partial-test/*.parquet"]}
    assert "name" not in kwargs and len(args) == 1
    assert calls[3][1]["split"] == "validation" and len(calls) == 4

    # What the export held is what the trials get: en_us only, FLEURS's `transcription` column, decoded audio.
    assert [u["text"] for u in test] == ["en_us test 0", "en_us test 1"]
    assert [len(u["audio"]) for u in test] == [8_000, 16_000]
    assert all(u["audio"].dtype == np.float32 for u in test)
    assert [u["text"] for u in dev] == ["en_us validation 0"]

    # Target text (WhisTLE) goes through the same fallback: transcripts of the train split.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned already for google/fleurs en_us
        assert load_texts("google/fleurs", hub_config="en_us") == ["en_us train 0", "en_us train 1", "en_us train 2"]
    assert calls[-1][1]["data_files"] == {"train": ["en_us/train/*.parquet", "en_us/partial-train/*.parquet"]}


def test_an_unrelated_error_is_not_swallowed(monkeypatch: pytest.MonkeyPatch, hub: None) -> None:
    import datasets

    calls: list[tuple[tuple, dict]] = []
    original = ConnectionError("Couldn't reach 'google/fleurs' on the Hub (ConnectTimeout)\n  more detail")

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        raise original

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, so no fallback warning
        with pytest.raises(HubLoadError) as err:
            load_speech("google/fleurs", "test")
    assert len(calls) == 1 and "revision" not in calls[0][1]  # the parquet export was not tried
    line = str(err.value)
    assert "\n" not in line and line.startswith("data.source: hub data set 'google/fleurs'")
    assert "config 'en_us'" in line and "split 'test'" in line and "ConnectionError: Couldn't reach" in line
    assert err.value.__cause__ is original

    with pytest.raises(HubLoadError, match=r"^target\.text: hub data set 'google/fleurs' \(config 'en_us'"):
        load_texts("google/fleurs", hub_config="en_us", field="target.text")


def test_a_failing_parquet_export_is_one_line_naming_both(monkeypatch: pytest.MonkeyPatch, hub: None) -> None:
    import datasets

    def no_export(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("revision") == PARQUET_REVISION:
            raise FileNotFoundError("Unable to find 'hf://datasets/x/y@refs/convert/parquet/default/train/*.parquet'")
        raise SCRIPT_ERROR

    monkeypatch.setattr(datasets, "load_dataset", no_export)
    with pytest.warns(ParquetFallbackWarning), pytest.raises(HubLoadError) as err:
        load_speech("someone/scripted_speech", "train")
    line = str(err.value)
    assert "\n" not in line and "'someone/scripted_speech'" in line and "split 'train'" in line
    assert "loading script" in line and PARQUET_REVISION in line and "FileNotFoundError" in line


# ---------------------------------------------------------------------------------------------
# What `--preset gpu --dry-run` says the sweep will fetch
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_fetching(monkeypatch: pytest.MonkeyPatch, hub: None) -> None:
    """The hub counts as reachable, but any attempt to fetch or connect fails the test."""
    import datasets
    import huggingface_hub

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"fetched: {args} {kwargs}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_dry_run_lists_the_fetches_of_dq_whisper_bits(capsys: pytest.CaptureFixture[str], no_fetching: None) -> None:
    resolved = spaces.resolve(spaces.find("dq_whisper_bits"), "gpu")
    labels = [label for label, _ in sweep_configs(resolved)]
    assert labels == ["trials"] * (1 + 4 + 2) + ["baseline"]  # 5 bit widths x 3 matchings, one change at a time
    assert hub_fetches(resolved) == [
        HubFetch("model", "openai/whisper-small", fields=("teacher",)),
        HubFetch("dataset", "google/fleurs", "en_us", ("train", "validation", "test"), ("data.source",)),
    ]
    assert sweep.main(["dq_whisper_bits", "--preset", "gpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "hub fetches (listed, not fetched):" in out
    assert "  model    openai/whisper-small  (teacher)" in out
    assert "  dataset  google/fleurs  config en_us, splits train, validation, test  (data.source)" in out
    assert PARQUET_REVISION in out


def test_dry_run_lists_the_fetches_of_adaptor_llm(capsys: pytest.CaptureFixture[str], no_fetching: None) -> None:
    resolved = spaces.resolve(spaces.find("adaptor_llm"), "gpu")
    assert hub_fetches(resolved) == [
        HubFetch("model", "openai/whisper-small", fields=("encoder.model",)),
        HubFetch("model", "Qwen/Qwen3-4B", fields=("llm.model",)),
        HubFetch("dataset", "librispeech_asr", "clean", ("train.100", "validation", "test"), ("data.source",)),
    ]
    assert sweep.main(["adaptor_llm", "--preset", "gpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  model    Qwen/Qwen3-4B  (llm.model)" in out
    assert "  dataset  librispeech_asr  config clean, splits train.100, validation, test  (data.source)" in out


def test_every_searched_value_and_named_level_is_listed(tmp_path: Path, no_fetching: None) -> None:
    """A model among a grid's values, a data set inside a named level, WhisTLE's target text and speech, and the
    offline assets and corpora left out."""
    path = tmp_path / "mixed.yaml"
    path.write_text("""
method: whistle
metric: wer
mode: min
config:
  model: whisper-tiny.en
  data: {source: espeak-general, max_train_items: 8}
  target: {text: google/fleurs, eval_source: google/fleurs, hub_config: en_us, eval_split: validation}
space:
  model: {type: grid, values: [whisper-tiny.en, openai/whisper-small]}
  corpus:
    type: grid
    named:
      synthetic: {data: {source: espeak-general}}
      libri_other: {data: {source: openslr/librispeech_asr, hub_config: other, train_split: train.500}}
searcher: {type: grid}
num_samples: 4
baseline: false
""")
    fetches = hub_fetches(spaces.resolve(path, "local"))
    assert fetches == [
        HubFetch("model", "openai/whisper-small", fields=("model",)),
        HubFetch("dataset", "google/fleurs", "en_us", ("train", "validation"), ("target.text", "target.eval_source")),
        HubFetch("dataset", "openslr/librispeech_asr", "other", ("train.500", "validation", "test"), ("data.source",)),
    ]

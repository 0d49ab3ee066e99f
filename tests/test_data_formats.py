"""The data formats users bring: a saved Hugging Face data set, parquet files, a JSONL manifest, a CSV/TSV table and
a Kaldi data directory each load the same utterances (ids, transcripts, audio) as the local folder layout holding
the same files, with the same split convention; each malformed input is one line naming the file and the line or
row, raised by the config check or the driver's scan before any trial."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import soundfile as sf
import yaml

from platform import cluster, sweep
from trainables import assets
from trainables.blocks.config import ConfigError, build
from trainables.blocks.data import DataConfig, describe_split, hash_split, load_speech, scan_source, source_kind

SPLITS = ("train", "validation", "test")
N = 30


def _tone(i: int, sr: int = 22_050) -> np.ndarray:
    t = np.arange(int((0.1 + 0.005 * i) * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * (150 + 20 * i) * t)).astype(np.float32)


def _wav_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _tone(i), 22_050, format="WAV")
    return buf.getvalue()


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """The folder layout: N clips with same-stem .txt transcripts, split 80/10/10 by hash of the file name."""
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(N):
        (root / f"utt_{i:03d}.wav").write_bytes(_wav_bytes(i))
        (root / f"utt_{i:03d}.txt").write_text(f"utterance number {i}\n")
    return root


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """The folder layout with split subfolders (train, dev, test) and .txt transcripts."""
    root = tmp_path / "splits"
    for i in range(12):
        split = ("train", "train", "dev", "test")[i % 4]
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / f"s{i:02d}.wav").write_bytes(_wav_bytes(i))
        (root / split / f"s{i:02d}.txt").write_text(f"{split} sentence {i}")
    return root


def _items(root: Path) -> list[tuple[str, str, str]]:
    """(relative audio path, transcript, canonical split) of every clip of a folder layout, sorted."""
    out = []
    for wav in sorted(root.rglob("*.wav")):
        rel = wav.relative_to(root).as_posix()
        split = {"dev": "validation"}.get(rel.split("/")[0], rel.split("/")[0]) if "/" in rel else hash_split(rel)
        out.append((rel, wav.with_suffix(".txt").read_text().strip(), split))
    return out


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [u["id"] for u in got] == [u["id"] for u in want]
    assert [u["text"] for u in got] == [u["text"] for u in want]
    for a, b in zip(got, want, strict=True):
        assert a["audio"].dtype == np.float32 and np.array_equal(a["audio"], b["audio"]), a["id"]


def _same_as_folder(source: Path | str, folder: Path, **kw: Any) -> None:
    sizes = []
    for split in SPLITS:
        want = load_speech(str(folder), split)
        _same(load_speech(str(source), split, **kw), want)
        sizes.append(len(want))
    assert all(sizes), sizes  # every split holds utterances, so the comparison covers all three


def _one_line(exc: pytest.ExceptionInfo[BaseException], *parts: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)
    return message


# --------------------------------------------------------------------------- formats that load like the folder


def test_jsonl_manifest_loads_the_folder_utterances(flat: Path) -> None:
    lines = [{"audio_filepath": rel, "text": text, "duration": 0.1} for rel, text, _ in _items(flat)]
    manifest = flat / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert source_kind(str(manifest)) == "manifest" and source_kind(str(flat)) == "folder"
    _same_as_folder(manifest, flat)
    # Absolute paths elsewhere resolve as written; relative ones against the manifest's folder, not the cwd.
    elsewhere = flat.parent / "manifests" / "all.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text("".join(json.dumps({**line, "audio_filepath": str(flat / line["audio_filepath"])}) + "\n"
                                 for line in lines))
    everything = [u for s in SPLITS for u in load_speech(str(elsewhere), s)]
    assert sorted(u["text"] for u in everything) == sorted(line["text"] for line in lines)


def test_folder_of_split_manifests_keeps_their_splits(split_folder: Path) -> None:
    want = {s: load_speech(str(split_folder), s) for s in SPLITS}
    by_split: dict[str, list[str]] = {}
    for rel, text, split in _items(split_folder):
        by_split.setdefault(split, []).append(json.dumps({"audio_filepath": rel, "text": text}))
    names = {"train": "train_manifest.json", "validation": "dev_manifest.json", "test": "test_manifest.json"}
    for split, lines in by_split.items():
        (split_folder / names[split]).write_text("\n".join(lines) + "\n")
    assert source_kind(str(split_folder)) == "manifest"
    for split in SPLITS:
        _same(load_speech(str(split_folder), split), want[split])
    assert [u["id"] for u in load_speech(str(split_folder), "dev")] == [u["id"] for u in want["validation"]]


@pytest.mark.parametrize(("suffix", "delimiter", "header"), [(".csv", ",", ("path", "text")),
                                                             (".tsv", "\t", ("file", "sentence")),
                                                             (".csv", ",", ("Audio", "Transcript"))])
def test_table_loads_the_folder_utterances(flat: Path, suffix: str, delimiter: str, header: tuple[str, str]) -> None:
    table = flat / f"table{suffix}"
    with table.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow([header[0], "speaker", header[1]])
        writer.writerows([rel, "spk, one", text] for rel, text, _ in _items(flat))
    assert source_kind(str(table)) == "table"
    _same_as_folder(table, flat)


def test_table_with_configured_columns_and_a_split_column(split_folder: Path) -> None:
    want = {s: load_speech(str(split_folder), s) for s in SPLITS}
    table = split_folder / "all.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["wave_file", "words", "Split", "text"])  # `text` is there but is not the transcript
        writer.writerows([rel, text, {"validation": "dev"}.get(split, split), "decoy"]
                         for rel, text, split in _items(split_folder))
    kw = {"audio_column": "wave_file", "text_column": "words"}
    for split in SPLITS:
        _same(load_speech(str(table), split, **kw), want[split])
    with pytest.raises(ValueError) as err:
        load_speech(str(table), "train")
    _one_line(err, str(table), "line 1", "no audio path column", "data.audio_column")


def test_kaldi_directory_loads_the_folder_utterances(flat: Path) -> None:
    kaldi = flat / "data"
    kaldi.mkdir()
    items = _items(flat)
    (kaldi / "wav.scp").write_text("".join(f"{Path(rel).stem} ../{rel}\n" for rel, _, _ in items))
    (kaldi / "text").write_text("".join(f"{Path(rel).stem} {text}\n" for rel, text, _ in items))
    assert source_kind(str(kaldi)) == "kaldi"
    for split in SPLITS:  # the hash of each recording's path relative to the directory: ../u00.wav, not u00.wav
        want = [u for s in SPLITS for u in load_speech(str(flat), s) if hash_split(f"../{u['id']}.wav") == split]
        assert want
        _same(load_speech(str(kaldi), split), sorted(want, key=lambda u: u["id"]))


def test_kaldi_split_directories_with_segments(tmp_path: Path, split_folder: Path) -> None:
    """Each split a Kaldi directory; one recording per split holds every utterance, cut by `segments`."""
    want = {s: load_speech(str(split_folder), s) for s in SPLITS}
    data = tmp_path / "kaldi"
    for split, utts in want.items():
        folder = data / {"validation": "dev"}.get(split, split)
        folder.mkdir(parents=True)
        sf.write(folder / "rec.wav", np.concatenate([u["audio"] for u in utts]), 16_000, subtype="FLOAT")
        (folder / "wav.scp").write_text(f"rec {folder / 'rec.wav'}\n")
        start, segments, texts = 0, [], []
        for u in utts:
            end = start + len(u["audio"])
            segments.append(f"{u['id']} rec {start / 16_000} {end / 16_000 if u is not utts[-1] else -1}")
            texts.append(f"{u['id']} {u['text']}")
            start = end
        (folder / "segments").write_text("\n".join(segments) + "\n")
        (folder / "text").write_text("\n".join(texts) + "\n")
    assert source_kind(str(data)) == "kaldi"
    for split in SPLITS:
        _same(load_speech(str(data), split), want[split])


def test_manifest_offsets_cut_segments(tmp_path: Path) -> None:
    parts = [_tone(i, 16_000) for i in range(3)]
    sf.write(tmp_path / "long.wav", np.concatenate(parts), 16_000, subtype="FLOAT")
    offsets = np.cumsum([0] + [len(p) for p in parts]) / 16_000
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": "long.wav", "text": f"part {i}", "offset": offsets[i],
                                            "duration": offsets[i + 1] - offsets[i], "split": "test"}) + "\n"
                                for i in range(3)))
    utts = load_speech(str(manifest), "test")
    assert [u["text"] for u in utts] == ["part 0", "part 1", "part 2"] and len({u["id"] for u in utts}) == 3
    for u, part in zip(utts, parts, strict=True):
        assert np.array_equal(u["audio"], part)
    with pytest.raises(ValueError, match="none for 'train'"):
        load_speech(str(manifest), "train")


def test_saved_dataset_loads_the_folder_utterances(flat: Path, tmp_path: Path) -> None:
    import datasets

    items = _items(flat)
    ds = datasets.Dataset.from_dict({"audio": [str(flat / rel) for rel, _, _ in items],
                                     "transcription": [text for _, text, _ in items],
                                     "id": [7] * len(items)})  # FLEURS-like: an id column that is not unique
    ds.cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "saved"))
    assert source_kind(str(tmp_path / "saved")) == "hf_disk"
    _same_as_folder(tmp_path / "saved", flat)


def test_saved_dataset_dict_keeps_its_splits(split_folder: Path, tmp_path: Path) -> None:
    import datasets

    want = {s: load_speech(str(split_folder), s) for s in SPLITS}
    parts = {}
    for split, own in (("train", "train.100"), ("validation", "dev"), ("test", "test")):
        rows = [(rel, text) for rel, text, s in _items(split_folder) if s == split]
        parts[own] = datasets.Dataset.from_dict({
            "file": [{"bytes": (split_folder / rel).read_bytes(), "path": rel} for rel, _ in rows],
            "text": [text for _, text in rows]}).cast_column("file", datasets.Audio(sampling_rate=None))
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "dict"))
    for split, own in (("train", "train.100"), ("validation", "validation"), ("test", "test")):
        got = load_speech(str(tmp_path / "dict"), own)
        # save_to_disk keeps only a stored path's file name: the ids are the folder's without the split folder
        _same([{**u, "id": f"{Path(w['id']).parent}/{u['id']}"} for u, w in zip(got, want[split], strict=True)],
              want[split])
    with pytest.raises(ValueError) as err:
        load_speech(str(tmp_path / "dict"), "train")
    _one_line(err, "has splits (train.100, dev, test) but none for 'train'")


def test_parquet_folder_glob_and_file(split_folder: Path, flat: Path, tmp_path: Path) -> None:
    import datasets

    def write(path: Path, rows: list[tuple[str, str]], root: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict({
            "audio": [{"bytes": (root / rel).read_bytes(), "path": rel} for rel, _ in rows],
            "sentence": [text for _, text in rows]}).cast_column("audio", datasets.Audio(sampling_rate=None)
                                                                 ).to_parquet(str(path))

    # The hub's layout, with a configuration folder as in its parquet export: en/{split}/0000.parquet.
    export = tmp_path / "export"
    for split, name in (("train", "train"), ("validation", "validation"), ("test", "test")):
        rows = [(rel, text) for rel, text, s in _items(split_folder) if s == split]
        write(export / "en" / name / "0000.parquet", rows[: len(rows) // 2 or 1], split_folder)
        if len(rows) > 1:
            write(export / "en" / name / "0001.parquet", rows[len(rows) // 2:], split_folder)
        write(export / "fr" / name / "0000.parquet", rows[:1], split_folder)
    assert source_kind(str(export)) == "parquet"
    _same_as_folder(export, split_folder, hub_config="en")
    with pytest.raises(ValueError) as err:
        load_speech(str(export), "train", hub_config="de")
    _one_line(err, str(export), "no subfolder 'de'")

    # Unsplit shards (a glob, or one file): 80/10/10 by the hash of the stored path, as the folder does.
    items = _items(flat)
    write(tmp_path / "shards" / "part-a.parquet", [(rel, text) for rel, text, _ in items[:13]], flat)
    write(tmp_path / "shards" / "part-b.parquet", [(rel, text) for rel, text, _ in items[13:]], flat)
    assert source_kind(str(tmp_path / "shards" / "*.parquet")) == "parquet"
    _same_as_folder(tmp_path / "shards" / "*.parquet", flat)
    write(tmp_path / "one.parquet", [(rel, text) for rel, text, _ in items], flat)
    _same_as_folder(tmp_path / "one.parquet", flat)


def test_describe_and_check_read_no_audio(flat: Path) -> None:
    table = flat / "t.tsv"
    table.write_text("path\ttext\n" + "".join(f"{rel}\t{text}\n" for rel, text, _ in _items(flat)))
    sizes = [describe_split(str(table), s)["size"] for s in SPLITS]
    assert sizes == [len(load_speech(str(flat), s)) for s in SPLITS]
    d = describe_split(str(table), "dev", max_items=1)
    assert (d["kind"], d["split"], d["size"]) == ("table", "validation", 1)
    (flat / "utt_000.wav").write_bytes(b"not audio at all")  # the config check opens no audio; the driver's scan does
    assets.check_data_source(str(table), "data.source", DataConfig(source=str(table)))
    assert scan_source(DataConfig(source=str(table))).bad == 1


# --------------------------------------------------------------------------- malformed inputs: one line each


def _manifest(tmp_path: Path, lines: list[str]) -> Path:
    for i in range(3):
        (tmp_path / f"a{i}.wav").write_bytes(_wav_bytes(i))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"audio_filepath": "a0.wav", "text": "fine"})


@pytest.mark.parametrize(("lines", "parts"), [
    ([GOOD, '{"audio_filepath": "a1.wav", "text": "x"', GOOD], ["line 2", "not valid JSON"]),
    ([GOOD, json.dumps({"audio_filepath": "a1.wav", "transcript": "x"})], ["line 2", "no 'text'"]),
    ([json.dumps({"sound": 3, "words": "x"})], ["line 1", "no audio path column", "audio_filepath", "data.audio_column"]),
    ([GOOD, json.dumps({"audio_filepath": "a1.wav", "text": "   "})], ["line 2", "empty transcript in 'text'"]),
    ([GOOD, json.dumps(["a1.wav", "x"])], ["line 2", "expected a JSON object"]),
    ([GOOD, json.dumps({"audio_filepath": "a1.wav", "text": "x", "duration": "long"})], ["line 2", "duration"]),
    ([GOOD, json.dumps({"audio_filepath": "a0.wav", "text": "again"})], ["line 2", "'a0' appears twice", "line 1"]),
    ([json.dumps({"audio_filepath": "a0.wav", "text": "x", "split": "eval"})], ["line 1", "split 'eval'"]),
], ids=["bad-json", "missing-key", "no-audio-column", "empty-text", "not-object", "bad-duration", "duplicate",
        "bad-split"])
def test_malformed_manifest(tmp_path: Path, lines: list[str], parts: list[str]) -> None:
    path = _manifest(tmp_path, lines)
    with pytest.raises(ConfigError) as err:
        build(DataConfig, {"source": str(path)}, "data")  # the config check, before any trial
    _one_line(err, "data.source:", str(path), *parts)
    with pytest.raises(ValueError) as err:
        load_speech(str(path), "train")
    _one_line(err, str(path), *parts)


def test_missing_audio_file_fails_the_check_or_is_skipped(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [GOOD, json.dumps({"audio_filepath": "gone/a9.wav", "text": "lost"})])
    with pytest.raises(ConfigError) as err:
        build(DataConfig, {"source": str(path)}, "data")
    _one_line(err, "data.source:", f"{path} line 2", str(tmp_path / "gone" / "a9.wav"), "does not exist",
              "data.on_bad: skip")
    build(DataConfig, {"source": str(path), "on_bad": "skip"}, "data")
    scan = scan_source(DataConfig(source=str(path)))
    assert scan.bad == 1 and f"{path} line 2" in scan.summary()
    kept = [u["id"] for s in SPLITS for u in load_speech(str(path), s, on_bad="skip")]
    assert kept == ["a0"]


def test_unreadable_audio_stops_the_sweep_before_any_trial(tmp_path: Path, tiny_en_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cluster, "running_cluster", lambda: False)
    path = _manifest(tmp_path, [GOOD, json.dumps({"audio_filepath": "a1.wav", "text": "broken"}),
                                json.dumps({"audio_filepath": "a2.wav", "text": "fine too"})])
    (tmp_path / "a1.wav").write_text("this is text, not audio")
    spec = tmp_path / "manifest_sweep.yaml"
    spec.write_text(yaml.safe_dump({"method": "qlora", "config": {"model": str(tiny_en_dir), "data": {"source": str(path)}},
                                    "space": {"lora.r": {"type": "choice", "values": [2, 4]}}}))
    assert sweep.main([str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for part in ("data.source", "1 of 3 utterances", f"{path} line 2", "cannot read", "data.on_bad: skip"):
        assert part in err, (part, err)
    assert not ray.is_initialized()
    with pytest.raises(ValueError) as exc:
        load_speech(str(path), hash_split("a1.wav"))
    _one_line(exc, f"{path} line 2", "cannot read", "a1.wav")


def _table(tmp_path: Path, text: str, suffix: str = ".csv") -> Path:
    for i in range(2):
        (tmp_path / f"a{i}.wav").write_bytes(_wav_bytes(i))
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "kw", "parts"), [
    ("path,speaker\na0.wav,x\n", {}, ["line 1", "no transcript column", "it has path, speaker", "data.text_column"]),
    ("path,text\na0.wav,fine\na1.wav,fine,extra\n", {}, ["line 3", "3 fields where the header has 2"]),
    ("path,text\na0.wav,fine\n,no file\n", {}, ["line 3", "no audio path in 'path'"]),
    ("path,text\na0.wav,fine\na1.wav,\n", {}, ["line 3", "empty transcript in 'text'"]),
    ("path,text\na0.wav,fine\n", {"text_column": "words"}, ["line 1", "no transcript column 'words'",
                                                           "data.text_column"]),
    ("", {}, ["is empty"]),
], ids=["no-text-column", "extra-field", "empty-path", "empty-text", "configured-column-missing", "empty-file"])
def test_malformed_table(tmp_path: Path, text: str, kw: dict[str, str], parts: list[str]) -> None:
    path = _table(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        build(DataConfig, {"source": str(path), **kw}, "data")
    _one_line(err, "data.source:", str(path), *parts)


def _kaldi(tmp_path: Path, wav_scp: str, text: str, segments: str | None = None) -> Path:
    folder = tmp_path / "kaldi"
    folder.mkdir()
    for i in range(2):
        (folder / f"a{i}.wav").write_bytes(_wav_bytes(i))
    (folder / "wav.scp").write_text(wav_scp)
    (folder / "text").write_text(text)
    if segments is not None:
        (folder / "segments").write_text(segments)
    return folder


@pytest.mark.parametrize(("files", "bad_file", "parts"), [
    (("a0 a0.wav\na1 sox a1.wav -t wav -r 16000 - |\n", "a0 hello\na1 world\n"), "wav.scp",
     ["line 2", "piped command", "not supported"]),
    (("a0 a0.wav\na1 feats.ark:1234\n", "a0 hello\na1 world\n"), "wav.scp", ["line 2", "Kaldi archive"]),
    (("a0 a0.wav\na1 a1.wav\n", "a0 hello\n"), "wav.scp", ["line 2", "'a1' has no transcript"]),
    (("a0 a0.wav\n", "a0 hello\na9 stray\n"), "text", ["line 2", "'a9' has a transcript but is not in wav.scp"]),
    (("a0 a0.wav\na1 a1.wav\n", "a0 hello\na1\n"), "text", ["line 2", "empty transcript"]),
    (("a0 a0.wav\na0 a1.wav\n", "a0 hello\n"), "wav.scp", ["line 2", "'a0' appears twice"]),
    (("r a0.wav\n", "u1 hello\nu2 world\n", "u1 r 0 0.05\nu2 r 0.05\n"), "segments", ["line 2", "expected"]),
    (("r a0.wav\n", "u1 hello\nu2 world\n", "u1 r 0 0.05\nu2 q 0.05 0.1\n"), "segments",
     ["line 2", "'q' is not in wav.scp"]),
    (("r a0.wav\n", "u1 hello\n", "u1 r 0.2 0.1\n"), "segments", ["line 1", "empty or negative"]),
], ids=["pipe", "ark", "no-text", "stray-text", "empty-text", "duplicate", "short-segment", "unknown-recording",
        "empty-segment"])
def test_malformed_kaldi(tmp_path: Path, files: tuple[str, ...], bad_file: str, parts: list[str]) -> None:
    folder = _kaldi(tmp_path, *files)
    with pytest.raises(ConfigError) as err:
        build(DataConfig, {"source": str(folder)}, "data")
    _one_line(err, "data.source:", str(folder / bad_file), *parts)


def test_kaldi_without_text_file(tmp_path: Path) -> None:
    folder = _kaldi(tmp_path, "a0 a0.wav\n", "a0 hello\n")
    (folder / "text").unlink()
    with pytest.raises(ConfigError) as err:
        build(DataConfig, {"source": str(folder)}, "data")
    _one_line(err, str(folder), "has wav.scp but no text file")


def test_malformed_hugging_face_data_sets(tmp_path: Path) -> None:
    import datasets

    audio = [{"bytes": _wav_bytes(i), "path": f"c{i}.wav"} for i in range(3)]
    no_text = datasets.Dataset.from_dict({"audio": audio, "speaker": ["a", "b", "c"]})
    no_text.cast_column("audio", datasets.Audio(sampling_rate=None)).save_to_disk(str(tmp_path / "no_text"))
    with pytest.raises(ConfigError) as err:
        build(DataConfig, {"source": str(tmp_path / "no_text")}, "data")
    _one_line(err, str(tmp_path / "no_text"), "no transcript column", "columns: audio, speaker", "data.text_column")

    empty = datasets.Dataset.from_dict({"audio": audio, "text": ["a", "b", ""]})  # audio as a plain struct column
    datasets.DatasetDict({"test": empty}).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as err:
        build(DataConfig, {"source": str(tmp_path / "empty")}, "data")
    _one_line(err, str(tmp_path / "empty"), "split 'test' row 2", "empty transcript in 'text'")

    broken = [audio[0], {"bytes": b"RIFF but not really", "path": "c1.wav"}, audio[2]]
    pq = tmp_path / "pq" / "test-00000-of-00001.parquet"
    pq.parent.mkdir()
    datasets.Dataset.from_dict({"audio": broken, "text": ["a", "b", "c"]}).cast_column(
        "audio", datasets.Audio(sampling_rate=None)).to_parquet(str(pq))
    build(DataConfig, {"source": str(tmp_path / "pq")}, "data")  # the metadata is sound; the audio is not
    scan = scan_source(DataConfig(source=str(tmp_path / "pq")))
    assert scan.bad == 1 and f"{pq} row 1" in scan.summary() and "\n" not in scan.summary()
    with pytest.raises(ValueError) as err:
        load_speech(str(tmp_path / "pq"), "test")
    _one_line(err, f"{pq} row 1", "cannot read its audio 'c1.wav'", "data.on_bad: skip")
    assert [u["id"] for u in load_speech(str(tmp_path / "pq"), "test", on_bad="skip")] == ["c0", "c2"]


def test_ambiguous_and_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        source_kind(str(tmp_path / "nothing" / "*.parquet"))
    _one_line(err, "matches no files")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError) as err:
        source_kind(str(tmp_path / "notes.txt"))
    _one_line(err, "notes.txt", "no known kind", ".jsonl")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "train.jsonl").write_text(GOOD + "\n")
    (mixed / "test.csv").write_text("path,text\n")
    with pytest.raises(ValueError) as err:
        source_kind(str(mixed))
    _one_line(err, "mixes split manifests and split tables")
    both = tmp_path / "both"
    both.mkdir()
    (both / "x.parquet").write_bytes(b"")
    (both / "x.wav").write_bytes(_wav_bytes(0))
    with pytest.raises(ValueError) as err:
        source_kind(str(both))
    _one_line(err, "both parquet files and audio files")

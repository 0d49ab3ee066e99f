"""The synthetic corpus: sentence generator, espeak-ng synthesis, splits and the named-corpus cache."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from trainables.assets import corpus
from trainables.assets.cache import CACHE_ENV, cache_root
from trainables.assets.corpus import CORPORA, CorpusSpec, build_corpus, corpus_dir, ensure_corpus
from trainables.assets.sentences import DOMAINS, MAX_WORDS, MIN_WORDS, make_sentences, number_words

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _vocabulary(sentences: list[str]) -> set[str]:
    return {w for s in sentences for w in s.split()}


@pytest.mark.parametrize("domain", DOMAINS)
def test_sentences_are_distinct_plain_words_and_deterministic(domain: str) -> None:
    first = make_sentences(domain, 600, seed=3)
    assert first == make_sentences(domain, 600, seed=3)
    assert len(set(first)) == 600
    assert first != make_sentences(domain, 600, seed=4)
    for sentence in first:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", sentence), sentence
        assert MIN_WORDS <= len(sentence.split()) <= MAX_WORDS


def test_general_domain_is_large_and_varied() -> None:
    sentences = make_sentences("general", 3000, seed=0)
    assert len(set(sentences)) == 3000
    openings = {" ".join(s.split()[:2]) for s in sentences}
    assert len(openings) > 60
    assert len(_vocabulary(sentences)) > 500


def test_domains_share_little_vocabulary() -> None:
    general = _vocabulary(make_sentences("general", 1000, seed=0))
    clinical = _vocabulary(make_sentences("clinical", 1000, seed=0))
    assert len(general & clinical) / len(general | clinical) < 0.15
    assert {"milligrams", "patient"} <= clinical
    assert not {"milligrams", "patient"} & general


def test_unknown_domain_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="domain: 'legal'"):
        make_sentences("legal", 5, seed=0)


def test_number_words() -> None:
    assert number_words(0) == "zero"
    assert number_words(47) == "forty seven"
    assert number_words(115) == "one hundred and fifteen"
    assert number_words(2024) == "two thousand and twenty four"
    assert number_words(3500) == "three thousand five hundred"


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from datasets import load_from_disk

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    build_corpus(out, domain="general", n_train=6, n_validation=2, n_test=3, seed=0, workers=2, progress=False)
    return load_from_disk(str(out))


def test_splits_share_no_sentence_and_test_voices_are_held_out(tiny_corpus) -> None:
    assert {k: len(v) for k, v in tiny_corpus.items()} == {"train": 6, "validation": 2, "test": 3}
    texts = {split: set(tiny_corpus[split]["text"]) for split in tiny_corpus}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    train_voices = set(tiny_corpus["train"]["voice"])
    assert train_voices <= set(corpus.TRAIN_VOICES)
    assert set(tiny_corpus["validation"]["voice"]) <= set(corpus.TRAIN_VOICES)
    assert set(tiny_corpus["test"]["voice"]) <= set(corpus.TEST_VOICES)
    assert not set(corpus.TRAIN_VOICES) & set(corpus.TEST_VOICES)


def test_audio_is_16k_mono_float32_of_plausible_length(tiny_corpus) -> None:
    for split in tiny_corpus:
        for row in tiny_corpus[split].with_format("numpy"):
            audio = row["audio"]
            assert audio.dtype == np.float32 and audio.ndim == 1
            assert row["sampling_rate"] == 16_000
            assert 0.8 < len(audio) / 16_000 <= 6.5
            assert row["duration_s"] == pytest.approx(len(audio) / 16_000, abs=1e-3)
            assert np.abs(audio).max() == pytest.approx(0.95, abs=1e-3)
            assert 150 <= row["rate"] <= 260 and 30 <= row["pitch"] <= 70


def test_overlapping_voice_sets_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_voices"):
        build_corpus(tmp_path / "x", domain="general", n_train=1, n_validation=1, n_test=1, seed=0,
                     train_voices=("en-us+m1",), test_voices=("en-us+m1",), progress=False)


def test_corpus_dir_is_keyed_by_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(CORPORA, "unit-a", CorpusSpec(domain="general", n_train=2, n_validation=1, n_test=1))
    monkeypatch.setitem(CORPORA, "unit-b", CorpusSpec(domain="general", n_train=3, n_validation=1, n_test=1))
    a = corpus_dir("unit-a")
    assert a.parent == cache_root() / "corpora" and a.name.startswith("unit-a-")
    assert corpus_dir("unit-a") == a
    assert corpus_dir("unit-b").name.split("-")[-1] != a.name.split("-")[-1]
    with pytest.raises(ValueError, match="corpus: 'nope'"):
        corpus_dir("nope")


@needs_espeak
def test_ensure_corpus_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets import load_from_disk

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(CORPORA, "unit-tiny", CorpusSpec(domain="clinical", n_train=2, n_validation=1, n_test=1))
    path = ensure_corpus("unit-tiny", progress=False)
    assert path == corpus_dir("unit-tiny") and (path / "inputs.json").is_file()
    stamp = (path / ".complete").stat().st_mtime_ns
    assert ensure_corpus("unit-tiny", progress=False) == path
    assert (path / ".complete").stat().st_mtime_ns == stamp
    ds = load_from_disk(str(path))
    assert len(ds["train"]) == 2 and ds["test"][0]["text"]


@pytest.mark.parametrize("language", ["de", "fr", "es"])
def test_other_languages_have_their_own_distinct_sentences(language: str) -> None:
    first = make_sentences("general", 300, seed=3, language=language)
    assert first == make_sentences("general", 300, seed=3, language=language) and len(set(first)) == 300
    assert all(MIN_WORDS <= len(s.split()) <= MAX_WORDS and not re.search(r"[0-9A-Z]", s) for s in first)
    english = _vocabulary(make_sentences("general", 300, seed=3))
    assert len(_vocabulary(first) & english) / len(_vocabulary(first)) < 0.1  # city names, little else
    with pytest.raises(ValueError, match="language: the 'clinical' domain has no 'de' grammar"):
        make_sentences("clinical", 5, seed=0, language="de")


@needs_espeak
def test_a_multilingual_corpus_interleaves_languages_with_their_own_voices(tmp_path: Path) -> None:
    from datasets import load_from_disk

    languages = ("en", "de", "fr", "es")
    build_corpus(tmp_path / "m", domain="general", n_train=2, n_validation=1, n_test=2, seed=0, workers=2,
                 progress=False, languages=languages)
    ds = load_from_disk(str(tmp_path / "m"))
    assert ds["train"]["language"] == list(languages) * 2  # languages take turns: max_items keeps them balanced
    for split, which in (("train", 0), ("validation", 0), ("test", 1)):
        for row in ds[split]:
            assert row["voice"] in corpus.VOICES_BY_LANGUAGE[row["language"]][which], row
            assert row["id"].startswith(f"general-{row['language']}-{split}-")
    for train, test in corpus.VOICES_BY_LANGUAGE.values():
        assert not set(train) & set(test)
    # The English corpora keep their cache keys: languages enter a corpus's inputs only when it has others.
    assert "languages" not in corpus._inputs("espeak-general")
    assert corpus._inputs("espeak-multilingual")["languages"] == languages

"""The natural-voice evaluation sets: built once and keyed by their inputs, spoken by the neural voice (not
espeak-ng), the espeak-ng test split's own sentences, and scored at a window that holds their clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.assets import corpus, natural_voice
from trainables.assets.cache import CACHE_ENV, builds
from trainables.assets.natural_voice import NATURAL_SETS, NaturalSpec, ensure_natural, natural_dir
from trainables.blocks.audio import SAMPLE_RATE
from trainables.blocks.data import load_natural, load_speech

pytest.importorskip("piper", reason="the natural voice needs piper-tts (setup.sh installs it)")


@pytest.fixture
def tiny_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A four-utterance natural-voice set without Piper's noise (so synthesis is deterministic), in a fresh cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(NATURAL_SETS, "natural-tiny",
                        NaturalSpec("espeak-smoke", n_validation=2, n_test=2, noise_scale=0.0, noise_w_scale=0.0))
    return "natural-tiny"


def test_a_set_is_built_once_and_keyed_by_its_voice_rates_and_sentences(tiny_set: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_natural(tiny_set, progress=False)
    assert ensure_natural(tiny_set, progress=False) == first
    assert [b["target"] for b in builds("natural/")] == [f"natural/{first.name}"]  # the second call built nothing
    inputs = json.loads((first / "inputs.json").read_text())
    assert inputs["voice"] == natural_voice.VOICE and inputs["length_scales"] == [1.0, 0.85, 1.15]
    assert len(inputs["voice_model"]) == 16 and len(inputs["sentences"]) == 16

    spec = NATURAL_SETS[tiny_set]
    monkeypatch.setitem(NATURAL_SETS, tiny_set, NaturalSpec(spec.corpus, 2, 2, length_scales=(1.0, 0.7),
                                                            noise_scale=0.0, noise_w_scale=0.0))
    other = natural_dir(tiny_set)
    assert other != first  # other rates: another set
    monkeypatch.setitem(corpus.CORPORA, "espeak-smoke", corpus.CorpusSpec(
        domain="general", n_train=48, n_validation=8, n_test=8, seed=5))
    assert natural_dir(tiny_set) not in (first, other)  # other sentences: another set


def test_a_rebuilt_set_holds_the_same_audio_with_pipers_noise_on(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """Piper's noise is seeded per set: two builds (another synthesis between them, as in a process that spoke
    before) are identical, and another seed speaks other audio and is another set."""
    from datasets import load_from_disk

    spec = NaturalSpec("espeak-smoke", n_validation=1, n_test=2)  # the voice's own noise
    natural_voice.build_natural(tmp_path / "a", spec, "natural-tiny", progress=False)
    natural_voice.synthesise("something else first")  # advances the shared voice's noise, not the set's
    natural_voice.build_natural(tmp_path / "b", spec, "natural-tiny", progress=False)
    natural_voice.build_natural(tmp_path / "c", NaturalSpec("espeak-smoke", 1, 2, seed=1), "natural-tiny",
                                progress=False)
    a, b, c = (load_from_disk(str(tmp_path / x))["test"]["audio"] for x in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(NATURAL_SETS, "natural-tiny", spec)
    seeded_0 = natural_dir("natural-tiny")
    monkeypatch.setitem(NATURAL_SETS, "natural-tiny", NaturalSpec("espeak-smoke", 1, 2, seed=1))
    assert natural_dir("natural-tiny") != seeded_0


def test_the_neural_voice_speaks_it_not_espeak(tiny_set: str) -> None:
    from datasets import load_from_disk

    test = load_from_disk(str(ensure_natural(tiny_set, progress=False)))["test"]
    audio = np.asarray(test[0]["audio"], dtype=np.float32)
    text, scale = test[0]["text"], test[0]["length_scale"]
    # Without its noise Piper is deterministic: the stored clip is exactly what the voice says.
    again = natural_voice.synthesise(text, scale, 0.0, 0.0)
    assert len(again) == len(audio) and np.allclose(again, audio, atol=1e-5)
    # espeak-ng saying the same words (any of the corpus's voices) is another signal altogether.
    for voice in corpus.TEST_VOICES[:2]:
        robot = corpus.synthesise(text, voice, 170, 50)
        n = min(len(robot), len(audio))
        assert abs(np.corrcoef(robot[:n], audio[:n])[0, 1]) < 0.2
    assert test[0]["voice"] == natural_voice.VOICE and test[1]["length_scale"] == pytest.approx(0.85, abs=0.01)
    assert 0.5 < len(audio) / SAMPLE_RATE <= NATURAL_SETS[tiny_set].max_duration_s


def test_the_test_split_speaks_the_espeak_test_sentences_and_validation_others() -> None:
    spec = NATURAL_SETS["natural-smoke"]
    spoken = natural_voice.sentences(spec)
    assert spoken["test"] == [u["text"] for u in load_speech("espeak-smoke", "test")][: spec.n_test]
    assert spoken["validation"] == [u["text"] for u in load_speech("espeak-smoke", "validation")][: spec.n_validation]
    assert not set(spoken["test"]) & set(spoken["validation"])
    # the shipped sets cover the whole test split of their corpus
    for name in ("natural-general", "natural-clinical"):
        s = NATURAL_SETS[name]
        assert s.n_test == corpus.CORPORA[s.corpus].n_test and len(s.length_scales) >= 2


def test_load_natural_gives_english_utterances_or_none() -> None:
    utts = load_natural("espeak-smoke", "test", max_items=3)
    assert utts is not None and len(utts) == 3
    assert all(u["language"] == "en" and u["audio"].dtype == np.float32 and u["id"].startswith("natural-smoke-test")
               for u in utts)
    assert load_natural("espeak-multilingual", "test") is None  # the voice speaks English only
    assert load_natural("/some/folder/of/my/audio", "test") is None
    assert load_natural("espeak-smoke", "train") is None  # never a training split


def test_a_set_longer_than_the_trial_window_is_scored_at_a_window_that_holds_it(tiny_whisper_dir: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    from trainables.blocks.evaluation import NATURAL_WINDOW_S, window_fitting
    from trainables.blocks.tasks import WhisperSeq2Seq

    model = WhisperForConditionalGeneration.from_pretrained(str(tiny_whisper_dir), dtype=torch.float32)
    task = WhisperSeq2Seq(str(tiny_whisper_dir), 2.0, 4)
    task.use_window(model, 2.0)
    long = [{"id": "a", "text": "x", "audio": np.zeros(int(3.2 * SAMPLE_RATE), np.float32)}]
    with window_fitting(task, model, long):
        assert task.window_s == 3.5 and model.get_encoder().embed_positions.num_embeddings == 175
        assert len(task.transcribe(model, long, torch.device("cpu"), torch.float32)) == 1
    assert task.window_s == 2.0 and model.get_encoder().embed_positions.num_embeddings == 100
    short = [{**long[0], "audio": long[0]["audio"][: SAMPLE_RATE]}]
    with window_fitting(task, model, short):
        assert task.window_s == 2.0  # a set that fits is decoded as the trial was
    with window_fitting(task, model, short, least_s=NATURAL_WINDOW_S):  # unless it asks for a longer window
        assert task.window_s == NATURAL_WINDOW_S and model.get_encoder().embed_positions.num_embeddings == 500
    with window_fitting(task, model, long, least_s=3.0):  # the longest clip still decides when it is longer
        assert task.window_s == 3.5
    assert task.window_s == 2.0


def test_a_sweep_prepares_the_natural_voice_sets_its_trials_are_scored_on(monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The quick start's preset trains on espeak-clinical, replays espeak-general and names it in data.natural_also:
    both corpora and both natural-voice sets are built before any trial."""
    from platform import runner, spaces
    from trainables import assets

    built: list[str] = []
    monkeypatch.setattr(corpus, "ensure_corpus", lambda name: built.append(name))
    monkeypatch.setattr(natural_voice, "ensure_natural", lambda name: built.append(name))
    monkeypatch.setitem(assets.ASSETS, "whisper-tiny.en",
                        assets.Asset("model", "", "", lambda: built.append("whisper-tiny.en")))  # type: ignore[arg-type,return-value]
    runner.prepare_assets(spaces.resolve(spaces.find("qlora_rank"), "local", {}))
    assert built == ["whisper-tiny.en", "espeak-clinical", "espeak-general", "natural-clinical", "natural-general"]
    assert "preparing natural-general" in capsys.readouterr().out

"""Languages (trainables/blocks/languages.py and where they are used): a language setting for data and decoding,
a data set's own language column, multilingual labels and decoding, English-only models refusing other
languages before work starts, per-language error rates, and exports that decode in the trial's language."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from trainables.assets import check_model_language, english_only
from trainables.blocks.config import ConfigError, build
from trainables.blocks.data import DataConfig, load_speech, with_language
from trainables.blocks.evaluation import evaluate
from trainables.blocks.languages import headline, language_code, per_language
from trainables.blocks.metrics import error_rates, normalize_text
from trainables.blocks.tasks import WhisperSeq2Seq

CPU = torch.device("cpu")


@pytest.mark.parametrize("given, code", [("de", "de"), ("German", "de"), ("de_de", "de"), ("pt-BR", "pt"),
                                         ("Mandarin Chinese", "zh"), (" FRENCH ", "fr"), ("castilian", "es")])
def test_codes_names_and_locales_read_as_whispers_codes(given: str, code: str) -> None:
    assert language_code(given, "data.language") == code


def test_an_unknown_language_is_one_line_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^data\.language: 'klingon' is not a language Whisper knows") as exc:
        language_code("klingon", "data.language")
    assert "\n" not in str(exc.value)
    cfg = DataConfig(language="German")
    cfg.check()
    assert cfg.language == "de"
    with pytest.raises(ConfigError, match=r"^language: 'xx' is not a language"):
        DataConfig(language="xx").check()


def test_unspaced_scripts_take_cer_as_their_headline() -> None:
    assert (headline("ja"), headline("zh"), headline("th"), headline("de"), headline("en")) == ("cer", "cer", "cer", "wer", "wer")


def test_other_languages_are_not_normalised_as_english() -> None:
    # The English normaliser rewrites spellings and numbers; another language keeps its words as written.
    assert normalize_text("Guten Tag, Straße!", "de") == "guten tag straße"
    assert normalize_text("colour", "en") == "color" and normalize_text("colour", "fr") == "colour"
    assert error_rates(["the colour"], ["the color"], "en")["wer"] == 0.0
    assert error_rates(["the colour"], ["the color"], ["fr"])["wer"] == 0.5


def test_per_language_rates_only_where_a_set_mixes_languages() -> None:
    rows = [{"reference": "one two", "hypothesis": "one two", "language": "en"},
            {"reference": "eins zwei", "hypothesis": "eins drei", "language": "de"},
            {"reference": "drei vier", "hypothesis": "drei vier", "language": "de"}]
    got = per_language(rows)
    assert got == {"wer_de": 0.25, "cer_de": pytest.approx(error_rates(["eins zwei", "drei vier"], ["eins drei", "drei vier"], "de")["cer"]),
                   "wer_en": 0.0, "cer_en": 0.0}
    assert per_language(rows[1:]) == {}


def test_a_multilingual_whisper_learns_and_decodes_each_utterance_in_its_language(tiny_multilingual_dir: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_multilingual_dir, dtype=torch.float32).eval()
    task = WhisperSeq2Seq(str(tiny_multilingual_dir), 30.0, 4, language="fr")
    tok = task.tokenizer
    labels = task.labels(model, ["hallo welt", "bonjour"], ["de", "fr"])
    first = [tok.convert_ids_to_tokens(int(i)) for i in labels[:, :3].flatten()]
    assert first == ["<|de|>", "<|transcribe|>", "<|notimestamps|>", "<|fr|>", "<|transcribe|>", "<|notimestamps|>"]
    # Each language decodes in its own generate call, told that language; utterances without one get the task's.
    told: list[dict] = []
    generate = model.generate

    def recording(**kw: object) -> torch.Tensor:
        told.append({k: kw[k] for k in ("language", "task")} | {"n": len(kw["input_features"])})
        return generate(**kw)

    model.generate = recording  # our own spy around the real generate, which still runs
    silence = np.zeros(8000, np.float32)
    utts = [{"id": "a", "audio": silence, "text": "x", "language": "de"}, {"id": "b", "audio": silence, "text": "y"},
            {"id": "c", "audio": silence, "text": "z", "language": "de"}]
    texts = task.transcribe(model, utts, CPU, torch.float32)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert told == [{"language": "de", "task": "transcribe", "n": 2}, {"language": "fr", "task": "transcribe", "n": 1}]
    loss = task.loss(model.train(), utts, CPU, torch.float32)
    assert torch.isfinite(loss)


def test_an_english_only_whisper_refuses_other_languages(tiny_whisper_dir: Path, tiny_multilingual_dir: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    assert english_only(str(tiny_whisper_dir)) is True and english_only(str(tiny_multilingual_dir)) is False
    assert english_only("openai/whisper-tiny.en") is True and english_only("openai/whisper-small") is None
    with pytest.raises(ConfigError, match=r"^data\.language: 'de', but model .* is English-only; use a multilingual"):
        check_model_language(str(tiny_whisper_dir), "de", "model")
    check_model_language(str(tiny_whisper_dir), "en", "model")
    check_model_language(str(tiny_multilingual_dir), "de", "model")
    # The methods' config checks refuse it before anything loads.
    from trainables import qlora

    with pytest.raises(ConfigError, match=r"data\.language: 'de', but model"):
        build(qlora.CONFIG, {"model": str(tiny_whisper_dir), "data": {"source": "espeak-smoke", "language": "de"}}).check()
    # And a task never decodes another language with one, should data name it.
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    task = WhisperSeq2Seq(str(tiny_whisper_dir), 30.0, 4)
    assert task.generate_kwargs(model) == {}
    with pytest.raises(ValueError, match="English-only Whisper; it cannot transcribe de"):
        task.transcribe(model, [{"id": "a", "audio": np.zeros(800, np.float32), "text": "x", "language": "de"}], CPU,
                        torch.float32)


def test_the_sweep_refuses_before_any_trial(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "platform.sweep", "qlora_rank", "--dry-run", "--set", "data.language=de"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    last = [line for line in out.stderr.strip().splitlines() if line.strip()][-1]
    assert "data.language: 'de', but model 'whisper-tiny.en' is English-only" in last, out.stderr


def _mixed_manifest(tmp_path: Path, column: str = "language") -> Path:
    """12 espeak-smoke clips in a JSONL manifest with a split and a language column (English and German by name)."""
    utts = load_speech("espeak-smoke", "train", max_items=12)
    lines = []
    for i, u in enumerate(utts):
        sf.write(tmp_path / f"{u['id']}.wav", u["audio"], 16000)
        lines.append({"audio_filepath": f"{u['id']}.wav", "text": u["text"], column: ("English", "German")[i % 2],
                      "split": ("train", "train", "train", "train", "validation", "validation", "test", "test",
                                "train", "train", "test", "test")[i]})
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_language_column_reaches_every_utterance(tmp_path: Path) -> None:
    manifest = _mixed_manifest(tmp_path, column="locale")
    test = load_speech(str(manifest), "test")
    assert [u["language"] for u in test] == ["en", "de", "en", "de"]
    table = tmp_path / "t.tsv"
    table.write_text("path\ttext\tlang\n" + "".join(f"{u['id']}.wav\t{u['text']}\tfr_fr\n" for u in test))
    assert {u["language"] for u in load_speech(str(table), "test") + load_speech(str(table), "train")} == {"fr"}
    # Utterances without a language take data.language; those with one keep it.
    assert [u["language"] for u in with_language([{"id": "a"}, {"id": "b", "language": "de"}], "es")] == ["es", "de"]
    table.write_text("path\ttext\tlang\nx.wav\thello\tklingon\n")
    with pytest.raises(ValueError, match=r"^data\.source: .*t\.tsv line 2: lang: 'klingon' is not a language"):
        load_speech(str(table), "test")


def test_evaluation_scores_each_utterance_in_its_language() -> None:
    class Echo:
        """Writes each utterance's reference with its last word dropped: one error per utterance."""

        def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
            return [" ".join(u["text"].split()[:-1]) for u in utts]

    utts = [{"id": f"u{i}", "audio": np.zeros(1600, np.float32), "text": text, "language": lang}
            for i, (text, lang) in enumerate([("the colour red", "en"), ("die farbe rot ist", "de")])]
    ev = evaluate(Echo(), torch.nn.Linear(1, 1), utts, 2, CPU, torch.float32)
    assert [r["language"] for r in ev["rows"]] == ["en", "de"]
    assert ev["wer"] == pytest.approx(2 / 7)
    assert per_language(ev["rows"]) == {"wer_de": 0.25, "cer_de": pytest.approx(4 / 17), "wer_en": pytest.approx(1 / 3),
                                        "cer_en": pytest.approx(4 / 13)}  # "the color red": English spelling


def test_a_trial_on_mixed_languages_reports_each_and_exports_in_its_language(tiny_multilingual_dir: Path,
                                                                               tmp_path: Path) -> None:
    from transformers import GenerationConfig

    from trainables.blocks.inference import exported_generation
    from trainables.qlora import parse_config, run

    manifest = _mixed_manifest(tmp_path)
    metrics = run(parse_config({
        "model": str(tiny_multilingual_dir), "data": {"source": str(manifest), "language": "fr"},
        "precision": {"bits": 32}, "lora": {"r": 2}, "eval": {"max_new_tokens": 3},
        "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 2},
    }))
    for name in ("wer_en", "cer_en", "wer_de", "cer_de"):
        assert name in metrics and math.isfinite(metrics[name]), name
    assert "wer_fr" not in metrics  # every utterance named its own language
    gen = GenerationConfig.from_pretrained(tiny_multilingual_dir)
    exported_generation(gen, 7, "de")
    assert (gen.language, gen.task, gen.max_new_tokens) == ("de", "transcribe", 7)


@pytest.mark.slow  # builds the offline whisper-base once (its conversion) and decodes with it
def test_whisper_base_decodes_espeak_german_as_german() -> None:
    from transformers import WhisperForConditionalGeneration

    from trainables import assets
    from trainables.assets.corpus import speak
    from trainables.assets.ct2_whisper import MissingSourceError, base_source

    try:
        base_source()
    except MissingSourceError as err:
        pytest.skip(str(err))
    source = assets.resolve_model("whisper-base")
    texts = ["guten morgen, wie geht es dir heute", "ich habe heute leider keine zeit", "das wetter ist sehr schön"]
    utts = [{"id": str(i), "audio": a, "text": t, "language": "de"}
            for i, (a, t) in enumerate(zip(speak(texts, 0, voices=["de"], progress=False), texts, strict=True))]
    model = WhisperForConditionalGeneration.from_pretrained(source).eval()
    german = WhisperSeq2Seq(source, 30.0, 40, language="de").transcribe(model, utts, CPU, torch.float32)
    # Told English instead, the same model translates or garbles: the language setting is what makes it German.
    english = WhisperSeq2Seq(source, 30.0, 40).transcribe(model, [{**u, "language": "en"} for u in utts], CPU,
                                                          torch.float32)
    wer_de, wer_en = (error_rates(texts, hyp, "de")["wer"] for hyp in (german, english))
    print(f"\n[languages] espeak German on whisper-base: WER {wer_de:.3f} told de, {wer_en:.3f} told en; {german}")
    assert wer_de <= 0.35 and wer_en >= wer_de + 0.3, (german, english)
    assert "morgen" in german[0].lower()

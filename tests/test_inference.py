"""Using a trial's result: every method's recogniser and export on tiny-model results, the standalone loaders
shipped with exports, and the one-line errors of `platform.transcribe` and `platform.export`."""

from __future__ import annotations

import importlib.util
import json
import math
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from platform import export as export_cli
from platform import transcribe as transcribe_cli
from trainables import dq_whisper, dqlora, qlora
from trainables.blocks.audio import SAMPLE_RATE
from trainables.blocks.data import load_natural, load_speech
from trainables.blocks.evaluation import NATURAL_WINDOW_S
from trainables.blocks.inference import ArtifactError, TaskRecogniser, cut_into_windows, read_trial

CPU = torch.device("cpu")
DATA = {"source": "espeak-smoke", "max_eval_items": 3, "max_val_items": 2, "max_train_items": 8}


def finished(module: ModuleType, config: dict) -> Path:
    """A trial's artifact folder, as `finish` leaves it: set up, train, finish in this process."""
    s = module.setup(module.parse_config(config))
    _, artifacts = module.finish(s, *module.train(s))
    assert artifacts is not None
    return artifacts


def hypotheses(artifacts: Path, name: str = "hypotheses.jsonl") -> dict[str, str]:
    rows = [json.loads(line) for line in (artifacts / name).read_text().splitlines()]
    return {r["id"]: r["hypothesis"] for r in rows}


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def test_utts() -> list[dict]:
    return load_speech("espeak-smoke", "test", max_items=DATA["max_eval_items"])


@pytest.fixture(scope="module")
def qlora_result(tiny_whisper_dir: Path) -> Path:
    """NF4 base + rank-4 LoRA on every linear layer, two steps."""
    return finished(qlora, {"model": str(tiny_whisper_dir), "precision": {"bits": 4}, "lora": {"r": 4}, "data": DATA,
                            "eval": {"max_new_tokens": 4}, "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 2}})


@pytest.fixture(scope="module")
def dqlora_result(tiny_whisper_dir: Path) -> Path:
    """The offline student (a Whisper encoder in NF4 + LoRA + a fresh character CTC head), two steps, a 4 s window
    (whole seconds: its export keeps the window, so the exported student decodes exactly like the trial's)."""
    return finished(dqlora, {"student": str(tiny_whisper_dir), "precision": {"bits": 4}, "lora": {"r": 4, "dropout": 0.0},
                             "kd": {"lambda_": 0.0}, "data": {**DATA, "encoder_window_s": 4.0}, "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 4}})


@pytest.fixture(scope="module")
def dq_whisper_result(tiny_whisper_dir: Path) -> Path:
    """A 1-decoder-layer student at 4 bits, with a 3.5 s encoder window (not a whole number of seconds)."""
    return finished(dq_whisper, {"teacher": str(tiny_whisper_dir), "student": {"decoder_layers": 1}, "distill": {"alpha": 0.0},
                                 "quant": {"bits": 4}, "data": {**DATA, "encoder_window_s": 3.5}, "eval": {"max_new_tokens": 4},
                                 "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 2}})


# --------------------------------------------------------------------------- recognisers: as the trial evaluated


def test_every_trial_records_its_method(qlora_result: Path, dqlora_result: Path, dq_whisper_result: Path) -> None:
    for folder, name in ((qlora_result, "qlora"), (dqlora_result, "dqlora"), (dq_whisper_result, "dq_whisper")):
        assert json.loads((folder / "method.json").read_text()) == {"method": name}


def test_qlora_recogniser_decodes_as_the_trial_was_evaluated(qlora_result: Path, test_utts: list[dict]) -> None:
    texts = qlora.recogniser(qlora_result, CPU).transcribe([u["audio"] for u in test_utts])
    assert texts == [hypotheses(qlora_result)[u["id"]] for u in test_utts]


def test_dqlora_recogniser_decodes_as_the_trial_was_evaluated(dqlora_result: Path, test_utts: list[dict]) -> None:
    """The clean test set's hypotheses: the student's head and adapters are the trained ones (a fresh head
    would spell differently)."""
    texts = dqlora.recogniser(dqlora_result, CPU).transcribe([u["audio"] for u in test_utts])
    expected = [hypotheses(dqlora_result, "hypotheses_clean.jsonl")[u["id"]] for u in test_utts]
    assert texts == expected and any(expected)


def test_dq_whisper_recogniser_is_the_packed_student(dq_whisper_result: Path, test_utts: list[dict]) -> None:
    recogniser = dq_whisper.recogniser(dq_whisper_result, CPU)
    assert recogniser.model.config.max_source_positions == 175  # the trained 3.5 s window
    assert recogniser.model.config.decoder_layers == 1
    assert len(recogniser.transcribe([u["audio"] for u in test_utts])) == len(test_utts)


def test_long_audio_is_cut_at_quiet_points_within_the_window() -> None:
    rng = np.random.default_rng(0)
    speech = [rng.normal(0, 0.3, int(SAMPLE_RATE * s)).astype(np.float32) for s in (1.7, 2.2, 1.9)]
    gap = np.zeros(int(0.2 * SAMPLE_RATE), np.float32)
    audio = np.concatenate([speech[0], gap, speech[1], gap, speech[2]])
    pieces = cut_into_windows(audio, 2.5)
    assert np.array_equal(np.concatenate(pieces), audio)
    assert all(len(p) <= 2.5 * SAMPLE_RATE for p in pieces)
    # Every cut falls in a silent gap, not inside a word.
    cuts = np.cumsum([len(p) for p in pieces])[:-1]
    assert all(audio[c - 160 : c + 160].std() == 0 for c in cuts), cuts
    assert cut_into_windows(audio, 0.0) == [audio]


def test_a_recogniser_joins_the_pieces_of_each_clip_in_order() -> None:
    class Lengths:
        """Stands in for a method's task: 'transcribes' a piece as its length in tenths of a second."""

        def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
            return [str(round(10 * len(u["audio"]) / SAMPLE_RATE)) for u in utts]

    clips = [np.ones(int(SAMPLE_RATE * s), np.float32) for s in (0.5, 4.5, 1.0)]
    texts = TaskRecogniser(Lengths(), torch.nn.Linear(1, 1), CPU, torch.float32, 2.0, batch_size=2).transcribe(clips)
    assert texts[0] == "5" and texts[2] == "10"
    assert sum(int(x) for x in texts[1].split()) == 45 and all(int(x) <= 20 for x in texts[1].split())


class Windows:
    """Stands in for a Whisper task trained at a 2 s window: records the window each piece is decoded at."""

    def __init__(self) -> None:
        self.window_s, self.seen = 2.0, []

    def use_window(self, model: torch.nn.Module, window_s: float) -> None:
        self.window_s = window_s

    def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        self.seen += [(len(u["audio"]) / SAMPLE_RATE, self.window_s) for u in utts]
        return [f"{len(u['audio']) / SAMPLE_RATE:g}" for u in utts]


def test_a_clip_longer_than_the_trained_window_is_decoded_whole_at_a_window_that_fits_it() -> None:
    task = Windows()
    clips = [np.ones(int(SAMPLE_RATE * s), np.float32) for s in (1.5, 4.5, 31.0)]
    texts = TaskRecogniser(task, torch.nn.Linear(1, 1), CPU, torch.float32, 2.0, least_s=0.0).transcribe(clips)
    assert texts[:2] == ["1.5", "4.5"]  # no cut: one piece, decoded at 5 s
    assert (1.5, 2.0) in task.seen and (4.5, 5.0) in task.seen
    assert sum(float(x) for x in texts[2].split()) == 31.0 and len(texts[2].split()) == 2  # past 30 s: cut once
    assert all(window <= 30 and length <= window for length, window in task.seen)
    assert task.window_s == 2.0  # the trained window again afterwards


def test_a_recogniser_decodes_at_the_natural_voice_window_at_least() -> None:
    """By default no clip is decoded at a window shorter than natural-voice sets are evaluated at (a trained 2 s
    window would make Whisper repeat itself on natural speech); a clip longer than that gets its own length."""
    task = Windows()
    clips = [np.ones(int(SAMPLE_RATE * s), np.float32) for s in (1.5, 4.5, 12.5)]
    TaskRecogniser(task, torch.nn.Linear(1, 1), CPU, torch.float32, 2.0).transcribe(clips)
    assert sorted(task.seen) == [(1.5, NATURAL_WINDOW_S), (4.5, NATURAL_WINDOW_S), (12.5, 13.0)]
    assert task.window_s == 2.0


def test_a_whisper_recogniser_decodes_a_long_clip_as_the_model_does_at_the_wider_window(qlora_result: Path,
                                                                                        test_utts: list[dict]) -> None:
    recogniser = qlora.recogniser(qlora_result, CPU)
    trained = recogniser.window_s
    clip = np.concatenate([u["audio"] for u in test_utts])
    assert len(clip) > trained * SAMPLE_RATE
    [whole] = recogniser.transcribe([clip])
    assert recogniser.model.config.max_source_positions == round(50 * trained)  # back to the trained window
    wide = max(math.ceil(len(clip) / SAMPLE_RATE), NATURAL_WINDOW_S)
    recogniser.task.use_window(recogniser.model, float(wide))
    assert recogniser.model.config.max_source_positions == 50 * wide
    direct = recogniser.task.transcribe(recogniser.model, [{"id": "x", "audio": clip, "text": ""}], CPU, recogniser.dtype)
    assert whole == direct[0]


@pytest.mark.slow
def test_transcribing_clips_longer_than_the_window_loses_no_words_at_cuts() -> None:
    """tiny.en trained a few steps at a 4 s window, on clips of two test utterances each (5-8 s): decoded whole
    at a window that fits them, the WER is lower than cutting them at the trained window (the old way) and no
    worse than the exported model in transformers' pipeline (long-form decoding over 4 s windows)."""
    from transformers import pipeline

    from trainables.blocks.metrics import error_rates

    artifacts = finished(qlora, {"precision": {"bits": 4}, "lora": {"r": 4}, "data": {**DATA, "encoder_window_s": 4.0},
                                 "eval": {"max_new_tokens": 64},
                                 "optim": {"max_steps": 3, "warmup_steps": 1, "batch_size": 4, "lr": 1e-4}})
    utts = load_speech("espeak-smoke", "test", max_items=8)
    gap = np.zeros(SAMPLE_RATE // 5, np.float32)
    clips = [np.concatenate([utts[i]["audio"], gap, utts[i + 1]["audio"]]) for i in range(0, 8, 2)]
    refs = [f"{utts[i]['text']} {utts[i + 1]['text']}" for i in range(0, 8, 2)]
    assert all(len(c) > 4 * SAMPLE_RATE for c in clips)
    recogniser = qlora.recogniser(artifacts, CPU)
    whole = error_rates(refs, recogniser.transcribe(clips))["wer"]
    recogniser.flexible = False  # cut at the trained window, as before
    cut = error_rates(refs, recogniser.transcribe(clips))["wer"]
    out = Path(tempfile.mkdtemp()) / "model"
    qlora.export(artifacts, out)
    asr = pipeline("automatic-speech-recognition", model=str(out), dtype=torch.float32)
    exported = error_rates(refs, [asr(c, return_timestamps=True, generate_kwargs={"num_beams": 1})["text"].strip()
                                  for c in clips])["wer"]
    assert whole < cut and whole <= exported, (whole, cut, exported)


# --------------------------------------------------------------------------- exports


def test_qlora_export_merges_the_adapter_into_the_dequantised_base(qlora_result: Path, tiny_whisper_dir: Path,
                                                                   tmp_path: Path) -> None:
    from peft.utils.integrations import dequantize_bnb_weight
    from safetensors.torch import load_file
    from transformers import WhisperForConditionalGeneration

    from trainables.blocks.models import PrecisionConfig, load_base_model

    line = qlora.export(qlora_result, tmp_path / "merged")
    assert "pipeline('automatic-speech-recognition'" in line and "\n" not in line
    merged = WhisperForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert merged.dtype == torch.float16 and "quantization_config" not in merged.config.to_dict()
    window = read_trial(qlora_result).window_s
    # the trained window in whole seconds, at least the one a recogniser decodes at
    assert merged.config.max_source_positions == 50 * max(math.ceil(window), math.ceil(NATURAL_WINDOW_S))
    # One adapted layer, by hand: the NF4 weight the adapter was trained against, plus (alpha / r)·B·A.
    name = "model.decoder.layers.1.fc2"
    base = load_base_model(str(tiny_whisper_dir), "whisper", PrecisionConfig(bits=4), CPU)
    layer = base.get_submodule(name)
    w0 = dequantize_bnb_weight(layer.weight, getattr(layer, "state", None)).float()
    adapter = load_file(str(qlora_result / "adapter" / "adapter_model.safetensors"))
    a, b = (adapter[f"base_model.model.{name}.lora_{x}.weight"].float() for x in "AB")
    cfg = json.loads((qlora_result / "adapter" / "adapter_config.json").read_text())
    expected = w0 + cfg["lora_alpha"] / cfg["r"] * b @ a
    assert torch.count_nonzero(b) > 0  # two steps moved B off zero, so the merge is visible
    got = merged.get_submodule(name).weight.float()
    assert torch.allclose(got, expected, atol=2e-3, rtol=2e-3), (got - expected).abs().max()
    assert not torch.allclose(got, w0, atol=1e-6)


def test_exported_qlora_folder_loads_in_a_transformers_pipeline(qlora_result: Path, tmp_path: Path,
                                                                 test_utts: list[dict]) -> None:
    from transformers import pipeline

    qlora.export(qlora_result, tmp_path / "merged")
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "merged"))
    out = asr([u["audio"] for u in test_utts[:2]])
    assert len(out) == 2 and all(isinstance(o["text"], str) for o in out)


def test_qlora_adapter_only_export_names_its_base(qlora_result: Path, tiny_whisper_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from trainables.blocks.models import PrecisionConfig, load_base_model

    line = qlora.export(qlora_result, tmp_path / "adapter", adapter_only=True)
    assert "peft" in line and f"cut to {read_trial(qlora_result).window_s:g} s" in line  # the window it trained with
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_whisper_dir)
    manifest = json.loads((tmp_path / "adapter" / "export.json").read_text())
    assert manifest["kind"] == "peft_adapter" and manifest["precision"]["bits"] == 4
    base = load_base_model(str(tiny_whisper_dir), "whisper", PrecisionConfig(bits=32), CPU)
    assert isinstance(PeftModel.from_pretrained(base, str(tmp_path / "adapter")), PeftModel)


def test_dqlora_export_is_its_ctc_student_with_a_standalone_loader(dqlora_result: Path, tmp_path: Path,
                                                                   test_utts: list[dict]) -> None:
    line = dqlora.export(dqlora_result, tmp_path / "ctc")
    assert "not a transformers.pipeline folder" in line and "load_ctc.py" in line
    loader = load_module(tmp_path / "ctc" / "load_ctc.py")
    model, features, vocab = loader.load(tmp_path / "ctc")
    audio = [u["audio"] for u in test_utts]
    assert loader.transcribe(model, features, vocab, audio) == dqlora.recogniser(dqlora_result, CPU).transcribe(audio)
    line = dqlora.export(dqlora_result, tmp_path / "adapter", adapter_only=True)
    assert (tmp_path / "adapter" / "ctc_head.safetensors").is_file() and "CTC head" in line


def test_dq_whisper_export_keeps_the_packed_weights_and_loads_them(dq_whisper_result: Path, tmp_path: Path,
                                                                   test_utts: list[dict]) -> None:
    line = dq_whisper.export(dq_whisper_result, tmp_path / "student")
    assert "4/8-bit weights packed" in line and "load_quantised.py" in line
    out = tmp_path / "student"
    loader = load_module(out / "load_quantised.py")
    model, processor = loader.load(out)
    # The 3.5 s window became the natural-voice window a recogniser decodes at (whole seconds, as transformers'
    # feature extractor pads): the file is the trial's packed one plus those positions' rows at fp16.
    seconds = math.ceil(NATURAL_WINDOW_S)
    size, trained = (out / "model.safetensors").stat().st_size, (dq_whisper_result / "student" / "model.safetensors").stat().st_size
    assert 0 < size - trained <= (50 * seconds - 175) * model.config.d_model * 2 + 1024
    assert size < 0.6 * 2 * sum(p.numel() for p in model.parameters())
    assert model.config.max_source_positions == 50 * seconds
    assert processor.feature_extractor.n_samples == seconds * SAMPLE_RATE
    features = processor([u["audio"] for u in test_utts], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    assert model.generate(features, max_new_tokens=4).shape[0] == len(test_utts)
    with pytest.raises(ArtifactError, match="no adapter"):
        dq_whisper.export(dq_whisper_result, tmp_path / "again", adapter_only=True)


def test_a_trial_that_saved_no_weights_says_so(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "trial"
    folder.mkdir()
    config = qlora.parse_config({"model": str(tiny_whisper_dir), "save_adapter": False})
    from trainables.blocks.finish import write_artifacts

    write_artifacts(folder, config, {"encoder_window_s": 4.0}, [], {})
    with pytest.raises(ArtifactError, match="saved no trained weights .save_adapter is false"):
        qlora.recogniser(folder, CPU)
    assert read_trial(folder).window_s == 4.0


# --------------------------------------------------------------------------- the command lines


def wav_folder(root: Path, utts: list[dict], transcripts: bool = True) -> Path:
    root.mkdir(parents=True)
    for u in utts:
        sf.write(root / f"{u['id']}.wav", u["audio"], SAMPLE_RATE)
        if transcripts:
            (root / f"{u['id']}.txt").write_text(u["text"])
    return root


def test_transcribe_prints_a_line_per_file_and_the_wer(dqlora_result: Path, tmp_path: Path, test_utts: list[dict],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = wav_folder(tmp_path / "audio", test_utts)
    assert transcribe_cli.main([str(dqlora_result), str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = hypotheses(dqlora_result, "hypotheses_clean.jsonl")
    assert lines[:-1] == [f"{folder / (u['id'] + '.wav')}\t{expected[u['id']]}" for u in test_utts]
    assert lines[-1].startswith("WER ") and f"over {len(test_utts)} of {len(test_utts)} files" in lines[-1]


BAD_INPUTS = [
    (["not-a-run", "{audio}"], "RUN 'not-a-run': no such folder, and not an MLflow run id"),
    (["0123456789abcdef0123456789abcdef", "{audio}"], "RUN 0123456789abcdef0123456789abcdef: no MLflow store at"),
    (["{trial}", "{tmp}/missing.wav"], "missing.wav: no such file or folder"),
    (["{trial}", "{tmp}/garbage.wav"], "garbage.wav: unreadable audio"),
    (["{trial}", "{tmp}/empty"], "empty: no .wav or .flac files in this folder"),
    (["{tmp}", "{audio}"], "no config.json (not a trial's artifact folder)"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m.split(":")[0][-20:] for _, m in BAD_INPUTS])
def test_transcribe_bad_input_is_one_line_and_exit_2(args: list[str], message: str, dqlora_result: Path, tmp_path: Path,
                                                     test_utts: list[dict], capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    audio = wav_folder(tmp_path / "audio", test_utts[:1])
    (tmp_path / "garbage.wav").write_bytes(b"RIFF but not really a wave file")
    (tmp_path / "empty").mkdir()
    argv = [a.format(audio=audio, trial=dqlora_result, tmp=tmp_path) for a in args]
    assert transcribe_cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert captured.out == ""
    assert not (tmp_path / "none.db").exists()  # nothing was created to answer


def test_export_refuses_a_used_folder_and_a_missing_adapter(dq_whisper_result: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert export_cli.main([str(dq_whisper_result), str(used)]) == 2
    assert capsys.readouterr().err.strip() == f"error: OUT_DIR {used}: exists and is not empty; name a new folder"
    assert export_cli.main([str(dq_whisper_result), str(tmp_path / "new"), "--adapter-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dq_whisper trains the whole student, it has no adapter" in err[0]
    assert not (tmp_path / "new").exists()  # no half-written folder left behind
    assert export_cli.main([str(dq_whisper_result), str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "load_quantised.py").is_file()
    assert capsys.readouterr().out.strip().startswith("dq_whisper: the quantised student")


@pytest.mark.slow
def test_exported_qlora_model_transcribes_like_platform_transcribe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tiny.en, NF4 + LoRA for a few steps: `transformers.pipeline("automatic-speech-recognition", model=OUT_DIR)` on
    the exported folder (the adapter merged into the dequantised base, fp16) gives the same transcripts as
    `platform.transcribe` on the trial itself (NF4 + adapter) decoding as the pipeline does (5 beams)."""
    from transformers import pipeline

    artifacts = finished(qlora, {"precision": {"bits": 4}, "lora": {"r": 4}, "data": {**DATA, "encoder_window_s": 4.0},
                                 "eval": {"max_new_tokens": 32},
                                 "optim": {"max_steps": 3, "warmup_steps": 1, "batch_size": 4, "lr": 1e-4}})
    utts = load_speech("espeak-smoke", "test", max_items=4)
    folder = wav_folder(tmp_path / "audio", utts, transcripts=False)
    assert transcribe_cli.main([str(artifacts), str(folder), "--beams", "5"]) == 0
    ours = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert export_cli.main([str(artifacts), str(tmp_path / "model")]) == 0
    assert "pipeline('automatic-speech-recognition'" in capsys.readouterr().out
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "model"))
    theirs = {str(folder / f"{u['id']}.wav"): asr(u["audio"])["text"].strip() for u in utts}
    assert ours == theirs
    assert sum(len(t.split()) for t in ours.values()) >= 4 * len(utts)  # real transcripts, not empty strings
    # Greedy, as the trial was evaluated: the exported model in fp32 decodes exactly like the trial's hypotheses.
    assert transcribe_cli.main([str(artifacts), str(folder)]) == 0
    greedy = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    asr32 = pipeline("automatic-speech-recognition", model=str(tmp_path / "model"), dtype=torch.float32)
    assert greedy == {str(folder / f"{u['id']}.wav"): asr32(u["audio"], generate_kwargs={"num_beams": 1})["text"].strip()
                      for u in utts}
    # On natural-voice speech, what users transcribe, it decodes as the trial's natural-voice evaluation did (both
    # at the natural-voice window): the same hypotheses.
    natural = load_natural("espeak-smoke", "test", 3)
    spoken = wav_folder(tmp_path / "natural", natural, transcripts=False)
    assert transcribe_cli.main([str(artifacts), str(spoken)]) == 0
    got = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    evaluated = hypotheses(artifacts, "hypotheses_natural.jsonl")
    assert [got[str(spoken / f"{u['id']}.wav")] for u in natural] == [evaluated[u["id"]] for u in natural]


def test_a_wav2vec2_student_exports_as_a_transformers_ctc_folder(tiny_wav2vec2_dir: Path, tmp_path: Path,
                                                                  test_utts: list[dict]) -> None:
    """dqlora's gpu-preset kind of student (a wav2vec2 CTC model in NF4 would need 64-wide layers; fp32 here):
    its export is a standard folder that transformers' pipeline loads."""
    from transformers import pipeline

    artifacts = finished(dqlora, {"student": str(tiny_wav2vec2_dir), "precision": {"bits": 32}, "lora": {"r": 2},
                                  "kd": {"lambda_": 0.0}, "data": DATA, "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 4}})
    audio = [u["audio"] for u in test_utts]
    assert dqlora.recogniser(artifacts, CPU).transcribe(audio) == [hypotheses(artifacts, "hypotheses_clean.jsonl")[u["id"]]
                                                                   for u in test_utts]
    line = dqlora.export(artifacts, tmp_path / "ctc")
    assert "wav2vec2 CTC student" in line and "pipeline(" in line
    out = pipeline("automatic-speech-recognition", model=str(tmp_path / "ctc"))(audio)
    assert len(out) == len(audio) and all(isinstance(o["text"], str) for o in out)

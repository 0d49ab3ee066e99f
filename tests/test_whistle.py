"""WhisTLE: the VAE loss and its schedule, the TLE's shapes and length model, caching, phase 2, the target text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables import whistle
from trainables.assets.cache import CACHE_ENV, builds
from trainables.blocks.config import ConfigError, build, merge
from trainables.blocks.data import load_speech

CPU = torch.device("cpu")


def test_beta_zero_and_no_free_bits_is_exactly_the_mse() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mu, logvar = torch.randn(2, 4), torch.randn(2, 4)
    loss, parts = whistle.vae_loss(pred, target, mu, logvar, beta=0.0, free_bits=0.0)
    assert torch.equal(loss, torch.nn.functional.mse_loss(pred, target))
    assert parts["kl"] > 0
    loss_b, _ = whistle.vae_loss(pred, target, mu, logvar, beta=0.5, free_bits=0.0)
    assert loss_b > loss


def test_kl_is_the_closed_form_for_diagonal_gaussians() -> None:
    # One latent dimension: q = N(1, e^-1·...) written out by hand for two samples.
    mu = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, math.log(0.25)]])
    kl = whistle.kl_per_dim(mu, logvar)
    # KL(N(m, s²) ‖ N(0, 1)) = ½(m² + s² − 1 − ln s²)
    dim0 = (0.5 * (1 + 1 - 1 - 0) + 0.5 * (9 + 1 - 1 - 0)) / 2
    dim1 = (0.5 * (0 + 4 - 1 - math.log(4)) + 0.5 * (0 + 0.25 - 1 - math.log(0.25))) / 2
    assert torch.allclose(kl, torch.tensor([dim0, dim1]))
    assert torch.allclose(whistle.kl_per_dim(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(5))


def test_free_bits_floor_each_dimension() -> None:
    pred = target = torch.zeros(1, 2, 3)
    mu = torch.tensor([[0.2, 1.0, 3.0]])  # KL_d = μ²/2 = 0.02, 0.5, 4.5
    logvar = torch.zeros(1, 3)
    loss, parts = whistle.vae_loss(pred, target, mu, logvar, beta=1.0, free_bits=0.6)
    assert parts["kl"] == pytest.approx(0.02 + 0.5 + 4.5)
    assert float(loss) == pytest.approx(0 + 0 + (4.5 - 0.6))  # each dimension charged only above 0.6 nats


def test_annealed_beta_takes_the_stated_values() -> None:
    linear = build(whistle.TLEConfig, {"beta": 0.1, "beta_start": 0.0, "beta_schedule": "linear", "anneal_steps": 100})
    assert [linear.beta_at(s) for s in (0, 50, 100, 400)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    cyc = build(whistle.TLEConfig, {"beta": 1.0, "beta_start": 0.2, "beta_schedule": "cyclical", "anneal_steps": 100})
    assert [cyc.beta_at(s) for s in (0, 25, 50, 99, 100, 125)] == pytest.approx([0.2, 0.6, 1.0, 1.0, 0.2, 0.6])
    const = build(whistle.TLEConfig, {"beta": 0.3, "beta_schedule": "constant"})
    assert {const.beta_at(s) for s in (0, 7, 1000)} == {0.3}


@pytest.fixture(scope="module")
def tokenizer(tiny_en_dir: Path):  # noqa: ANN201
    from transformers import WhisperTokenizer

    return WhisperTokenizer.from_pretrained(tiny_en_dir)


def test_tle_output_has_the_encoders_shape_for_texts_of_any_length(tokenizer) -> None:  # noqa: ANN001
    cfg = build(whistle.TLEConfig, {"width": 32, "heads": 2, "layers": 1, "latent_dim": 4, "conv_width": 16})
    tle = whistle.TextToLatent(cfg, len(tokenizer), d_model=64, frames=250)
    tle.length_coef.copy_(torch.tensor([1.2, 0.0, 5.0]))
    for texts in (["hi"], ["a much longer sentence about the ward round this morning", "two"], ["x " * 200]):
        ids, mask = whistle.tokenize(tokenizer, texts, cfg.max_tokens, CPU)
        states, mu, logvar = tle(ids, mask, tle.predict_frames(texts))
        assert states.shape == (len(texts), 250, 64)
        assert mu.shape == logvar.shape == (len(texts), 4)
        assert torch.isfinite(states).all()
    # Frames past a text's speech are the learned "after speech" state, before the convolutions mix them.
    assert int(tle.predict_frames(["x " * 200])[0]) == 250 and int(tle.predict_frames(["hi"])[0]) >= 1


def test_length_model_fits_a_linear_duration() -> None:
    texts = ["a" * n for n in range(5, 60, 3)]
    frames = [int(2 * len(t) + 7) for t in texts]
    coef = whistle.fit_length_model(texts, frames)
    predicted = [float(torch.tensor(whistle.text_features(t)) @ coef) for t in texts]
    assert np.allclose(predicted, frames, atol=1e-3)


def _config(tiny_whisper_dir: Path, **over: object) -> whistle.WhisTLEConfig:
    base = {
        "model": str(tiny_whisper_dir), "mode": "tle",
        "data": {"source": "espeak-smoke", "max_train_items": 32, "max_val_items": 4, "max_eval_items": 2},
        "target": {"text": "espeak-smoke", "eval_source": "espeak-smoke", "max_sentences": 8, "max_eval_items": 2},
        "tle": {"width": 32, "heads": 2, "layers": 1, "latent_dim": 4, "conv_width": 16, "steps": 3, "batch_size": 4,
                "anneal_steps": 2},
        "lora": {"r": 2}, "optim": {"max_steps": 2, "warmup_steps": 1, "batch_size": 4},
        "eval": {"max_new_tokens": 4, "batch_size": 2}, "save_adapter": True,
    }
    return whistle.parse_config(merge(base, over))


def test_phase_two_changes_only_the_decoder_adapter_and_evaluates_with_the_encoder(
        tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cfg = _config(tiny_whisper_dir)
    s = whistle.setup(cfg)
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    tle_before = {n: p.detach().clone() for n, p in s.tle.state_dict().items()}
    encoder_calls = []
    s.model.get_base_model().model.encoder.register_forward_hook(lambda *a: encoder_calls.append(1))
    labelled: list[str] = []
    real_labels = whistle.whisper_labels
    monkeypatch.setattr(whistle, "whisper_labels", lambda tok, texts, *a: labelled.extend(texts) or real_labels(tok, texts, *a))
    history, stepper = whistle.train(s)
    assert len(history) == 2 and not encoder_calls  # phase 2 never runs the encoder
    # The decoder learns to stop after a sentence written as Whisper writes it (capital, full stop)
    assert labelled and set(labelled) <= {whistle.as_whisper_writes(t) for t in s.target_texts}
    assert all(t[0].isupper() and t.endswith(".") for t in labelled)
    changed = {n for n, p in s.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and ".decoder." in n for n in changed), changed
    assert all(torch.equal(v, tle_before[n]) for n, v in s.tle.state_dict().items())
    metrics, out = whistle.finish(s, history, stepper)
    assert encoder_calls  # evaluation decodes real audio through the real encoder
    for name in ("wer", "cer", "wer_source", "mse", "kl", "kl_active_dims", "length_rel_error", "tle_size_mb",
                 "model_size_mb", "compression_ratio", "train_samples_per_s", "peak_host_mem_mb", "latency_ms_per_utt",
                 "val_wer", "natural_wer", "natural_cer"):
        assert math.isfinite(metrics[name]), name
    # the natural-voice set is the target domain's (target.eval_source), at most target.max_eval_items
    natural = [json.loads(x)["id"] for x in (out / "hypotheses_natural.jsonl").read_text().splitlines()]
    assert natural == ["natural-smoke-test-00000", "natural-smoke-test-00001"]
    assert (out / "adapter").is_dir() and (out / "tle" / "tle.pt").exists()
    assert len((out / "hypotheses.jsonl").read_text().splitlines()) == 2
    curves = json.loads((out / "history.json").read_text())
    assert {"tle_mse", "tle_kl", "tle_beta"} <= set().union(*curves) and "loss" in set().union(*curves)


@pytest.mark.parametrize(("text", "written"), [("the dose was given", "The dose was given."),
                                               ("Was it given?", "Was it given?"), ("  ", "")])
def test_target_text_is_written_as_whisper_writes_a_sentence(text: str, written: str) -> None:
    assert whistle.as_whisper_writes(text) == written


@pytest.mark.slow  # trains tiny models for tens of steps: out of the everyday tier
@pytest.mark.parametrize("mode", ["text_lm", "tts", "tts+tle"])
def test_every_mode_trains(mode: str, tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    metrics = whistle.run(_config(tiny_whisper_dir, mode=mode, source_ratio=0.5))
    assert math.isfinite(metrics["wer"]) and metrics["step"] == 2
    assert math.isnan(metrics["mse"]) == (mode not in ("tle", "tts+tle"))


def test_untuned_mode_trains_nothing(tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    metrics = whistle.run(whistle.parse_config(whistle.baseline_config(to_plain(_config(tiny_whisper_dir)))))
    assert metrics["train_samples_per_s"] == 0 and metrics["trainable_params"] == 0 and math.isnan(metrics["mse"])
    assert not builds("tle/") and not builds("encoder-states/")


def to_plain(cfg: whistle.WhisTLEConfig) -> dict:
    from trainables.blocks.config import to_dict

    return to_dict(cfg)


@pytest.mark.slow  # trains tiny models for tens of steps: out of the everyday tier
def test_the_tle_and_encoder_states_are_built_once_and_reused(tiny_whisper_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    whistle.run(_config(tiny_whisper_dir, seed=0))
    whistle.run(_config(tiny_whisper_dir, seed=1, source_ratio=0.5))  # a second trial: another seed, source steps
    assert len(builds("tle/")) == 1
    assert len(builds("encoder-states/source-train-")) == 1
    whistle.run(_config(tiny_whisper_dir, tle={"beta": 0.5}))  # another TLE config: a new TLE, the same states
    assert len(builds("tle/")) == 2 and len(builds("encoder-states/source-train-")) == 1


def test_target_text_from_a_file(tiny_whisper_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    text = tmp_path / "ward.txt"
    text.write_text("please check the blood pressure\n\n  give two tablets of paracetamol  \nthe patient is stable\n"
                    "start the antibiotics today\nbleep the registrar\n")
    s = whistle.setup(_config(tiny_whisper_dir, target={"text": str(text), "max_sentences": None}))
    assert s.target_texts[1] == "give two tablets of paracetamol" and len(s.target_texts) == 5


@pytest.mark.parametrize(("content", "message"), [
    (None, r"^target\.text: '.*missing\.txt' is neither a text file, an offline corpus"),
    ("\n  \n", r"^target\.text: '.*empty\.txt' holds no sentence"),
    (b"\xff\xfe\x00bad", r"^target\.text: cannot read '.*bad\.txt' as UTF-8 text"),
])
def test_a_bad_target_text_fails_with_one_line(content: str | bytes | None, message: str, tmp_path: Path,
                                               tiny_whisper_dir: Path) -> None:
    name = {None: "missing.txt", "\n  \n": "empty.txt"}.get(content, "bad.txt") if not isinstance(content, bytes) else "bad.txt"
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        whistle.parse_config({"model": str(tiny_whisper_dir), "target": {"text": str(path)}})
    assert "\n" not in str(err.value)


def test_the_encoder_must_stay_frozen(tiny_whisper_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^lora\.stacks: WhisTLE tunes the decoder only"):
        whistle.parse_config({"model": str(tiny_whisper_dir), "lora": {"stacks": ["encoder", "decoder"]}})


def test_natural_voice_validation_of_the_source_domain_is_refused(tiny_whisper_dir: Path) -> None:
    """WhisTLE is judged on its target domain: a natural-voice validation set of data.source would select on the
    wrong speech, so it is refused by name."""
    with pytest.raises(ConfigError, match=r"^data\.natural_val_items: WhisTLE is judged on its target domain"):
        whistle.parse_config({"model": str(tiny_whisper_dir), "data": {"natural_val_items": 8}})


@pytest.mark.slow
def test_length_model_predicts_held_out_frames_within_twenty_percent() -> None:
    """The local preset's length model on espeak-general: fitted on train, checked on validation utterances."""
    train = load_speech("espeak-general", "train", max_items=1000)
    val = load_speech("espeak-general", "validation", max_items=100)
    frames = 250
    coef = whistle.fit_length_model([u["text"] for u in train], [whistle.speech_frames(u, frames) for u in train])
    truth = np.array([whistle.speech_frames(u, frames) for u in val], dtype=float)
    predicted = np.array([float(torch.tensor(whistle.text_features(u["text"])) @ coef) for u in val])
    relative = np.abs(predicted - truth) / truth
    assert relative.mean() < 0.2, relative.mean()


@pytest.mark.integration
def test_a_two_trial_sweep_with_a_text_file_builds_the_states_and_the_tle_once(tiny_whisper_dir: Path,
                                                                             tmp_path: Path) -> None:
    """A real sweep (Ray Tune over Ray Train, MLflow): target text from a file, two seeds sharing one TLE."""
    from tests.conftest import CONTRACT_METRICS, run_sweep_file

    text = tmp_path / "clinic.txt"
    text.write_text("\n".join(f"give {n} tablets of paracetamol to bed {n + 1}" for n in range(2, 14)) + "\n")
    spec = {"method": "whistle", "description": "two seeds, one TLE",
            "config": {**to_plain(_config(tiny_whisper_dir)), "target": {
                "text": str(text), "eval_source": "espeak-smoke", "max_eval_items": 2}},
            "space": {"seed": {"type": "grid", "values": [0, 1]}}, "searcher": {"type": "grid"}, "num_samples": 2,
            "baseline": False, "resources": {"num_workers": 1, "cpus_per_worker": 1}}
    log, runs = run_sweep_file(spec, "whistle_two", tmp_path)
    assert sum(t.startswith("tle/") for t in log) == 1, log
    assert sum(t.startswith("encoder-states/source-train-") for t in log) == 1, log
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    for r in children:
        assert r.data.params["target.text"] == str(text)
        for name in (*CONTRACT_METRICS, "wer_source", "mse", "kl", "kl_active_dims"):
            assert name in r.data.metrics, name
        assert r.data.metrics["target_sentences"] == 12


@pytest.mark.slow
def test_tle_lowers_target_wer_below_the_untuned_model_significantly(tmp_path: Path) -> None:
    """The local recipe, sized for CI: tiny.en, a TLE from 400 espeak-general utterances, 60 decoder steps on
    espeak-clinical's text; WER on 60 clinical test utterances (held-out voices), paired bootstrap against the
    untuned model at the same window."""
    from platform.stats import paired_bootstrap

    small = {"data": {"source": "espeak-general", "max_train_items": 400, "max_val_items": 40, "max_eval_items": 20},
             "target": {"text": "espeak-clinical", "eval_source": "espeak-clinical", "max_eval_items": 60},
             "tle": {"steps": 150, "batch_size": 16, "anneal_steps": 100},
             "optim": {"max_steps": 60, "warmup_steps": 6, "batch_size": 16, "lr": 5e-4}, "save_adapter": False}
    untuned, untuned_rows = _run_with_hypotheses(merge(small, {"mode": "none"}))
    tuned, tuned_rows = _run_with_hypotheses(merge(small, {"mode": "tle"}))
    assert untuned["encoder_window_s"] == tuned["encoder_window_s"]
    assert tuned["wer"] < untuned["wer"], (tuned["wer"], untuned["wer"])
    assert [r["id"] for r in untuned_rows] == [r["id"] for r in tuned_rows]
    result = paired_bootstrap([r["errors"] for r in untuned_rows], [r["errors"] for r in tuned_rows],
                              [r["ref_words"] for r in untuned_rows])
    assert result.p_value < 0.05 and result.ci_high < 0, result


def _run_with_hypotheses(config: dict) -> tuple[dict[str, float], list[dict]]:
    s = whistle.setup(whistle.parse_config(config))
    metrics, out = whistle.finish(s, *whistle.train(s))
    return metrics, [json.loads(line) for line in (out / "hypotheses.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- using the result: recogniser and export


@pytest.fixture(scope="module")
def whistle_result(tiny_whisper_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("cache"))
    try:
        s = whistle.setup(_config(tiny_whisper_dir, data={"encoder_window_s": 4.0}))
        _, out = whistle.finish(s, *whistle.train(s))
    finally:
        if old is None:
            os.environ.pop(CACHE_ENV)
        else:
            os.environ[CACHE_ENV] = old
    return out


def test_whistle_recogniser_decodes_as_the_trial_was_evaluated(whistle_result: Path) -> None:
    utts = load_speech("espeak-smoke", "test", max_items=2)
    texts = whistle.recogniser(whistle_result, CPU).transcribe([u["audio"] for u in utts])
    rows = {json.loads(x)["id"]: json.loads(x)["hypothesis"] for x in (whistle_result / "hypotheses.jsonl").read_text().splitlines()}
    assert texts == [rows[u["id"]] for u in utts]


def test_whistle_export_loads_in_a_transformers_pipeline_and_adapter_only_names_its_base(
        whistle_result: Path, tmp_path: Path, tiny_whisper_dir: Path) -> None:
    from transformers import pipeline

    message = whistle.export(whistle_result, tmp_path / "merged")
    assert "pipeline" in message and (tmp_path / "merged" / "export.json").exists()
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "merged"))
    utts = load_speech("espeak-smoke", "test", max_items=2)
    assert all(isinstance(o["text"], str) for o in asr([u["audio"] for u in utts]))
    whistle.export(whistle_result, tmp_path / "adapter", adapter_only=True)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_whisper_dir)
    targets = config["target_modules"]
    # Module-name suffixes: decoder layers and their cross-attention (encoder_attn), never an encoder layer.
    assert targets and not any(name.startswith("encoder.") or "encoder.layers" in name for name in targets), targets

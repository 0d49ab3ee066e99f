"""The one end of a trial (trainables/blocks/finish.py): which sets are scored and under which names, the
contract's metrics, the artifacts written, and the method's own numbers and files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests.conftest import CONTRACT_METRICS
from trainables.blocks.finish import Outcome, finish_trial
from trainables.qlora import QLoRAConfig

CPU = torch.device("cpu")


class FirstWordWrong:
    """A Transcriber that gets every utterance right but the first word of those whose id ends in 0."""

    def transcribe(self, model: torch.nn.Module, utts: list[dict], dev: torch.device, dtype: torch.dtype) -> list[str]:
        return [("wrong " + " ".join(u["text"].split()[1:])) if u["id"].endswith("0") else u["text"] for u in utts]


def _utts(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "audio": np.zeros(1600 * (i + 1), dtype=np.float32), "text": "the cat sat down"}
            for i in range(n)]


def test_the_trial_end_scores_every_set_and_writes_one_artifact_folder() -> None:
    saved: list[Path] = []
    outcome = Outcome(FirstWordWrong(), torch.nn.Linear(2, 2), CPU, torch.float32, 4,
                      val=_utts("v", 5), test=_utts("t", 10), test_name="noisy", also={"clean": _utts("c", 2)},
                      size_bytes=2e6, original_bytes=6e6,
                      counts={"trainable_params": 6.0, "total_params": 60.0, "trainable_param_ratio": 0.1},
                      stepper=None, metrics={"own_metric": 3}, json_files={"extra.json": {"a": 1}},
                      history_extra=[{"step": 1, "earlier_loss": 2.0}], save=lambda out: saved.append(out))
    history = [{"step": 1, "loss": 1.5}, {"step": 2, "loss": 0.5}]
    metrics, out = finish_trial(QLoRAConfig(), history, outcome)

    assert set(CONTRACT_METRICS) <= set(metrics)
    # One utterance in 5, 10 and 2 is scored with one wrong word of four.
    assert metrics["val_wer"] == 1 / 20 and metrics["wer"] == 1 / 40 and metrics["wer_noisy"] == metrics["wer"]
    assert metrics["wer_clean"] == 1 / 8
    assert metrics["step"] == 2 and metrics["loss"] == 0.5 and metrics["own_metric"] == 3.0
    assert metrics["compression_ratio"] == 3.0 and metrics["model_size_mb"] == 2e6 / 2**20
    assert out is not None and saved == [out]
    assert json.dumps(json.loads((out / "metrics.json").read_text())) == json.dumps(metrics)  # NaN-aware
    assert np.isnan(metrics["natural_wer"])  # no natural-voice set given
    assert json.loads((out / "method.json").read_text()) == {"method": "qlora"}
    assert json.loads((out / "extra.json").read_text()) == {"a": 1}
    assert json.loads((out / "history.json").read_text()) == history + [{"step": 1, "earlier_loss": 2.0}]
    rows = [json.loads(x) for x in (out / "hypotheses.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"t{i}" for i in range(10)] and rows[0]["errors"] == 1
    assert len((out / "hypotheses_clean.jsonl").read_text().splitlines()) == 2
    assert not (out / "hypotheses_noisy.jsonl").exists()  # the headline set is hypotheses.jsonl


def test_nothing_trained_reports_step_zero_and_no_loss() -> None:
    outcome = Outcome(FirstWordWrong(), torch.nn.Linear(2, 2), CPU, torch.float32, 4, val=_utts("v", 1),
                      test=_utts("t", 1), size_bytes=1.0, original_bytes=1.0, counts={}, stepper=None)
    metrics, _ = finish_trial(QLoRAConfig(), [], outcome)
    assert metrics["step"] == 0 and np.isnan(metrics["loss"]) and metrics["train_samples_per_s"] == 0.0
    assert metrics["wer"] == 0.25 and "wer_clean" not in metrics


def test_natural_voice_sets_are_scored_under_their_own_names() -> None:
    """The trial's own natural-voice set is natural_wer; another domain's (data.natural_also) natural_wer_<domain>,
    from the real cached set of that corpus (its ids say so), never a training or validation split."""
    from trainables.blocks.config import build

    cfg = build(QLoRAConfig, {"data": {"source": "espeak-smoke", "natural_also": ["espeak-smoke"], "max_eval_items": 3}})
    outcome = Outcome(FirstWordWrong(), torch.nn.Linear(2, 2), CPU, torch.float32, 4, val=_utts("v", 1),
                      test=_utts("t", 1), natural=_utts("n", 5), size_bytes=1.0, original_bytes=1.0, counts={},
                      stepper=None)
    metrics, out = finish_trial(cfg, [], outcome)
    assert metrics["natural_wer"] == 1 / 20 and metrics["natural_cer"] > 0
    # espeak-smoke is general-domain speech; its natural-voice set's ids end 0, 1, 2: one in three wrong
    assert metrics["natural_wer_general"] > 0 and "natural_cer_general" in metrics
    rows = [json.loads(x) for x in (out / "hypotheses_natural_general.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"natural-smoke-test-{i:05d}" for i in range(3)]
    assert len((out / "hypotheses_natural.jsonl").read_text().splitlines()) == 5


def test_the_natural_voice_validation_set_is_scored_as_natural_val_where_the_config_asks() -> None:
    """data.natural_val_items: the first N utterances of the real cached natural-voice validation split (its ids
    say so, never a test utterance), scored as natural_val_wer and natural_val_cer; not scored when 0."""
    from trainables.blocks.config import build
    from trainables.blocks.data import load_natural_val

    cfg = build(QLoRAConfig, {"data": {"source": "espeak-smoke", "natural_val_items": 4}})
    natural_val = load_natural_val(cfg.data)
    assert [u["id"] for u in natural_val] == [f"natural-smoke-validation-{i:05d}" for i in range(4)]
    outcome = Outcome(FirstWordWrong(), torch.nn.Linear(2, 2), CPU, torch.float32, 4, val=_utts("v", 1),
                      test=_utts("t", 1), natural=_utts("n", 5), natural_val=natural_val, size_bytes=1.0,
                      original_bytes=1.0, counts={}, stepper=None)
    metrics, out = finish_trial(cfg, [], outcome)
    assert 0 < metrics["natural_val_wer"] < 1 and metrics["natural_val_cer"] > 0
    assert metrics["natural_val_wer"] != metrics["natural_wer"]
    rows = [json.loads(x) for x in (out / "hypotheses_natural_val.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [u["id"] for u in natural_val]
    assert load_natural_val(build(QLoRAConfig, {"data": {"source": "espeak-smoke"}}).data) is None


def test_a_corpus_without_a_natural_voice_set_is_refused_by_name() -> None:
    import pytest

    from trainables.blocks.config import ConfigError, build

    with pytest.raises(ConfigError, match=r"natural_also\[0\].*'espeak-multilingual' has no natural-voice set"):
        build(QLoRAConfig, {"data": {"natural_also": ["espeak-multilingual"]}})

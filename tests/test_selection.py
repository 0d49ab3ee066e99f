"""Validation selects, test reports: a sweep file naming a test metric is warned about, and "the best trial" of a
sweep is the best by validation even where the test set ranks the trials the other way (that every shipped sweep
selects on validation is checked with its presets in tests/test_spaces.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from platform import sweep, trials
from platform.report_analysis import best_trial


def test_a_sweep_that_optimises_a_test_metric_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "on_test.yaml"
    path.write_text("method: qlora\nmetric: natural_wer\nconfig: {model: whisper-tiny.en, data: {source: espeak-smoke}}\n"
                    "space:\n  lora.r: {type: choice, values: [2, 4]}\n")
    assert sweep.main([str(path), "--dry-run"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "'natural_wer' is a test metric" in err[0] and "on_test.yaml: metric" in err[0], err
    path.write_text(path.read_text().replace("metric: natural_wer\n", ""))  # the default: val_wer
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_a_language_without_spaces_is_warned_to_select_on_cer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "japanese.yaml"
    path.write_text("method: qlora\nconfig: {model: whisper-base, data: {source: espeak-smoke, language: Japanese}}\n"
                    "space:\n  lora.r: {type: choice, values: [2, 4]}\n")
    assert sweep.main([str(path), "--dry-run"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "'val_wer' in ja, which is written without spaces" in err[0] and err[0].endswith(
        "select on val_cer"), err
    path.write_text(path.read_text().replace("space:", "metric: val_cer\nspace:"))
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert "warning:" not in capsys.readouterr().err


def _store(tmp_path: Path) -> tuple[object, object]:
    """A sweep's parent run and two finished trials whose validation and test rankings disagree."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.create_experiment("disagree", artifact_location=str(tmp_path / "artifacts"))
    parent = c.create_run(exp, tags={"sweep": "disagree", "objectives": json.dumps([["val_wer"], ["min"]])},
                          run_name="sweep")
    for name, val, test in (("good-on-val", 0.10, 0.30), ("good-on-test", 0.20, 0.05)):
        run = c.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id}, run_name=name)
        c.log_metric(run.info.run_id, "val_wer", val)
        c.log_metric(run.info.run_id, "wer", test)
        c.set_terminated(run.info.run_id)
    return c, c.get_run(parent.info.run_id)


def test_the_best_trial_is_the_best_on_validation(tmp_path: Path) -> None:
    c, parent = _store(tmp_path)
    assert trials._best_trial(c, parent).info.run_name == "good-on-val"
    rows = [{"trial": "good-on-val", "status": "FINISHED", "val_wer": 0.10, "wer": 0.30},
            {"trial": "good-on-test", "status": "FINISHED", "val_wer": 0.20, "wer": 0.05}]
    assert best_trial(rows, "val_wer", "min")["trial"] == "good-on-val"

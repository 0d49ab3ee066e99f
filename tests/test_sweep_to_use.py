"""From a real tiny sweep to its use: what MLflow holds (read back through its client), MLflow's UI in headless
Chromium, optuna-dashboard's HTTP API on the sweep's study, and the best trial transcribed and exported by run id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import browser
from tests.conftest import ROOT
from tests.test_sweep import run_sweep, write_sweep

pytestmark = pytest.mark.integration  # runs a sweep (Ray), serves MLflow and optuna-dashboard

NAME = "tiny_to_use"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, tiny_whisper_dir: Path) -> dict[str, Any]:
    """Two trials (LoRA rank 2 and 8) of QLoRA on the tiny Whisper, grid-searched; its store and results."""
    tmp = tmp_path_factory.mktemp("to-use")
    spec = write_sweep(tmp / f"{NAME}.yaml", tiny_whisper_dir, {"lora.r": {"type": "grid", "values": [2, 8]}},
                       searcher={"type": "grid"}, description="How much rank does a tiny model need?")
    text = yaml.safe_load(spec.read_text())
    text["config"]["eval"]["every"] = 1  # a validation WER after step 1: an intermediate report without `wer`
    spec.write_text(yaml.safe_dump(text))
    out = run_sweep(spec, tmp)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(NAME)
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return {"tmp": tmp, "uri": uri, "client": c, "experiment": exp, "parent": parent, "children": children,
            "stdout": out.stdout}


def test_mlflow_holds_the_sweep_as_researchers_read_it(sweep: dict[str, Any]) -> None:
    c, exp, parent, children = sweep["client"], sweep["experiment"], sweep["parent"], sweep["children"]
    # A model-training experiment: MLflow's UI opens it on the runs table, not on the GenAI overview.
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # Child runs named by what they tried, the trial id kept as a tag.
    assert sorted(r.info.run_name for r in children) == ["r=2", "r=8"]
    # The intermediate validation WER reached MLflow (and did not stop the trial: it carries no `wer`).
    assert all(1 in {m.step for m in c.get_metric_history(r.info.run_id, "val_wer")} for r in children)
    assert all(len(r.data.tags["trial_id"]) >= 5 and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for r in children)
    # The data as MLflow dataset inputs on every trial: name, split, source, digest, size.
    expected = {"training": ("train", 48), "validation": ("validation", 2), "evaluation": ("test", 4)}
    digests = []
    for run in [*children, parent]:
        inputs = run.inputs.dataset_inputs
        contexts = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}
        assert set(contexts) == set(expected), run.info.run_name
        for context, (split, size) in expected.items():
            d = contexts[context].dataset
            assert d.name == "espeak-smoke" and d.source_type == "local" and "espeak-smoke" in json.loads(d.source)["uri"]
            assert json.loads(d.profile) == {"split": split, "utterances": size}
            assert {t.key: t.value for t in contexts[context].tags}["split"] == split
        digests.append(tuple(contexts[k].dataset.digest for k in expected))
    assert len(set(digests)) == 1 and len(set(digests[0])) == 3  # the same data everywhere, three different splits
    # The parent's description: the question, a link to the report, the best trial and how to use it.
    note = parent.data.tags["mlflow.note.content"]
    assert "How much rank does a tiny model need?" in note
    assert f"runs/{parent.info.run_id}/artifactPath/report/report.html" in note
    assert "Best trial by val_wer" in note and f"python -m platform.transcribe {parent.info.run_id}" in note
    # report.html beside report.md: one self-contained page, tables and the plot embedded.
    with open(c.download_artifacts(parent.info.run_id, "report/report.html", str(sweep["tmp"])), encoding="utf-8") as fh:
        page = fh.read()
    assert "<table>" in page and "r=2" in page and "data:image/png;base64," in page
    assert 'src="http' not in page and "<link" not in page
    assert {"report/report.md", "report/report.html"} <= {a.path for a in c.list_artifacts(parent.info.run_id, "report")}
    # The console's last lines say how to open the trials and use the best one.
    assert "#/experiments/" in sweep["stdout"] and f"python -m platform.export {parent.info.run_id}" in sweep["stdout"]


def test_best_trial_transcribes_and_exports_by_run_id(sweep: dict[str, Any], tmp_path: Path) -> None:
    import soundfile as sf

    from trainables.blocks.data import load_speech

    folder = tmp_path / "audio"
    folder.mkdir()
    utts = load_speech("espeak-smoke", "test", max_items=2)
    for u in utts:
        sf.write(folder / f"{u['id']}.wav", u["audio"], 16000)
        (folder / f"{u['id']}.txt").write_text(u["text"])
    env = {**os.environ, "SPEECH_SWEEPS_CACHE": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": sweep["uri"]}
    parent = sweep["parent"].info.run_id
    out = subprocess.run([sys.executable, "-m", "platform.transcribe", parent, str(folder)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # Chosen on validation WER (ties by name), never on the test split's.
    best = min(sweep["children"], key=lambda r: (r.data.metrics["val_wer"], r.info.run_name))
    assert f"sweep {NAME}'s parent run: using its best trial by val_wer" in out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines[:-1]] == [str(folder / f"{u['id']}.wav") for u in utts]
    assert lines[-1].startswith("WER ") and "over 2 of 2 files with transcripts" in lines[-1]
    # Its artifacts were downloaded once, into the cache, under the chosen trial's run id.
    chosen = out.stderr.split("(run ", 1)[1].split(",", 1)[0]
    assert chosen in {r.info.run_id for r in sweep["children"]}
    assert sweep["client"].get_run(chosen).data.metrics["val_wer"] == best.data.metrics["val_wer"]
    assert (tmp_path / "cache" / "runs" / chosen / "adapter" / "adapter_config.json").is_file()
    child = sweep["children"][0].info.run_id
    out = subprocess.run([sys.executable, "-m", "platform.export", child, str(tmp_path / "model")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pipeline('automatic-speech-recognition'" in out.stdout.strip().splitlines()[-1]
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "model"))
    assert isinstance(asr(utts[0]["audio"])["text"], str)


@pytest.mark.skipif(browser.chromium_paths() is None, reason="needs Chromium and chromedriver (Debian: chromium, chromium-driver)")
def test_mlflow_ui_in_chromium_lists_the_trials_by_name_with_wer(sweep: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("selenium")
    from platform.report_render import trials_link

    exp_id = sweep["experiment"].experiment_id
    with browser.mlflow_ui(sweep["uri"], tmp_path / "mlflow-ui.log") as health, browser.chromium() as driver:
        base = health.removesuffix("/health")
        driver.get(f"{base}/#{trials_link(exp_id)}")
        browser.wait_for(driver, lambda d: "r=2" in browser.page_text(d) and "r=8" in browser.page_text(d),
                         what="the child runs r=2 and r=8 in the runs table")
        assert "Model training" in browser.page_text(driver)
        browser.close_assistant(driver)
        browser.show_metric_columns(driver, ["wer"])
        header = browser.wait_for(driver, lambda d: browser.visible(d, "//*[@role='columnheader']//*[normalize-space(text())='wer']"),
                                  what="a wer column")
        assert header is not None
        wers = sorted(r.data.metrics["wer"] for r in sweep["children"])
        cells = browser.wait_for(driver, lambda d: [c.text for c in d.find_elements("xpath", "//*[@role='gridcell' and @col-id='metrics.`wer`']")
                                                    if c.text.strip()],
                                 what="wer values in the table")
        assert sorted(float(x) for x in cells) == pytest.approx(wers, abs=1e-3)
        # The parent's description links its report, which the artifact viewer shows as a page.
        parent = sweep["parent"].info.run_id
        driver.get(f"{base}/#/experiments/{exp_id}/runs/{parent}/artifactPath/report/report.html?workflowType=machine_learning")
        browser.wait_for(driver, lambda d: d.find_elements("tag name", "iframe"), what="report.html in the artifact viewer")


def test_optuna_dashboard_serves_the_sweeps_study(sweep: dict[str, Any], tmp_path: Path) -> None:
    db = next((sweep["tmp"] / "results" / NAME).glob("*/optuna.db"))
    with browser.optuna_dashboard(f"sqlite:///{db}", tmp_path / "optuna-dashboard.log") as studies_url:
        studies = json.load(urllib.request.urlopen(studies_url, timeout=30))["study_summaries"]
        assert len(studies) == 1 and studies[0]["study_name"].startswith(f"{NAME}-")
        detail = json.load(urllib.request.urlopen(f"{studies_url}/{studies[0]['study_id']}", timeout=30))
    assert detail["objective_names"] == ["val_wer"]  # named after the metric, not "Objective 0"
    trials = detail["trials"]
    assert [t["state"] for t in trials] == ["Complete", "Complete"]
    by_rank = {json.loads(p["param_external_value"]) if isinstance(p["param_external_value"], str) else p["param_external_value"]: t
               for t in trials for p in t["params"] if p["name"] == "lora.r"}
    assert set(by_rank) == {2, 8}
    # The study's objective values are the trials' validation WERs in MLflow.
    wer = {int(r.data.params["lora.r"]): r.data.metrics["val_wer"] for r in sweep["children"]}
    for rank, trial in by_rank.items():
        assert trial["values"][0] == pytest.approx(wer[rank])

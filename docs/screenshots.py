"""Re-make the screenshots of MLflow's UI and optuna-dashboard that docs/browsing.md shows (docs/*.png), with the
headless-Chromium set-up that tests/test_sweep_to_use.py checks (tests/browser.py).

It runs a short `qlora_rank` sweep (local preset: tiny.en in NF4 on the espeak corpus, ranks 1, 4, 16, 64; fewer
steps and test utterances than the preset, see STEPS and ITEMS) into a store of its own, keeps its console output in
docs/sweep_console.txt, then opens the results:

    .venv/bin/python docs/screenshots.py [--keep DIR]      # needs chromium and chromium-driver (Debian)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from platform.report_render import trials_link  # noqa: E402
from tests import browser  # noqa: E402

STEPS, ITEMS = 12, 32
"""Training steps per trial and test utterances: a few minutes on 2 cores, enough for the ranks to differ."""


def run_sweep(work: Path) -> str:
    cmd = [sys.executable, "-m", "platform.sweep", "qlora_rank", "--preset", "local",
           "--set", f"optim.max_steps={STEPS}", "--set", f"data.max_eval_items={ITEMS}", "--set", "data.max_val_items=8",
           "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--storage", str(work / "results")]
    env = {**os.environ, "RAY_ADDRESS": "", "SPEECH_SWEEPS_PROGRESS_S": "20"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    (work / "console.txt").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"the sweep failed; its output is in {work / 'console.txt'}")
    return out.stdout


def shoot(work: Path, docs: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    exp = MlflowClient(uri).get_experiment_by_name("qlora_rank")
    parent = next(r for r in MlflowClient(uri).search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags)
    with browser.mlflow_ui(uri, work / "mlflow-ui.log") as health, browser.chromium(1500, 820) as driver:
        base = health.removesuffix("/health")
        driver.get(f"{base}/#{trials_link(exp.experiment_id)}")
        browser.wait_for(driver, lambda d: "r=64" in browser.page_text(d), what="the trials")
        browser.close_assistant(driver)
        browser.show_metric_columns(driver, ["wer", "model_size_mb", "peak_vram_mb"], hide=("Source", "Models"))
        driver.save_screenshot(str(docs / "mlflow_trials.png"))
        browser.add_parallel_coordinates(driver, ["lora.r"], ["wer", "model_size_mb", "train_samples_per_s"])
        browser.open_chart(driver, "Parallel Coordinates", "train_samples_per_s")
        driver.save_screenshot(str(docs / "mlflow_parallel_coordinates.png"))
        driver.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning")
        browser.wait_for(driver, lambda d: "Description" in browser.page_text(d), what="the sweep's run")
        browser.close_assistant(driver)
        driver.save_screenshot(str(docs / "mlflow_sweep_run.png"))
        driver.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifactPath/report/report.html"
                   "?workflowType=machine_learning")
        browser.wait_for(driver, lambda d: d.find_elements("tag name", "iframe"), what="report.html")
        time.sleep(2)
        browser.close_assistant(driver)
        driver.save_screenshot(str(docs / "mlflow_report.png"))
    study = next((work / "results" / "qlora_rank").glob("*/optuna.db"))
    with browser.optuna_dashboard(f"sqlite:///{study}", work / "optuna-dashboard.log") as studies, \
            browser.chromium(1500, 820) as driver:
        study_id = json.load(urllib.request.urlopen(studies))["study_summaries"][0]["study_id"]
        driver.get(studies.replace("/api/studies", f"/dashboard/studies/{study_id}"))
        browser.wait_for(driver, lambda d: "lora.r" in browser.page_text(d), what="the study")
        time.sleep(3)
        driver.save_screenshot(str(docs / "optuna_dashboard.png"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", type=Path, help="run in (or reuse the finished sweep in) this folder instead of a temporary one")
    args = p.parse_args()
    if browser.chromium_paths() is None:
        raise SystemExit("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="screenshots-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "mlflow.db").exists():
        run_sweep(work)
    shoot(work, ROOT / "docs")
    print(f"screenshots in {ROOT / 'docs'}; the sweep's console output in {work / 'console.txt'}")


if __name__ == "__main__":
    main()

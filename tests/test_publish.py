"""platform.publish: a sweep's results folder (plain files, as platform/runner.py and platform/report.py write them)
becomes its docs page, and the page's hand-written findings survive regeneration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform import publish

ROOT = Path(__file__).resolve().parents[1]
STAMP = "20261203-235109"
TABLE = """| trial | status   | lora.r | wer    |
| ------|----------|--------|------- |
| r=1   | FINISHED | 1      | 0.0557 |
| r=16  | FINISHED | 16     | 0.0488 |"""


def results_folder(tmp_path: Path, table: str = TABLE, overrides: dict | None = None, uri: str | None = None) -> Path:
    """A fake ray_results/<sweep>/<time>/ folder: the driver's sweep.json, report.md, summary files and a plot."""
    folder = tmp_path / "ray_results" / "qlora_rank" / STAMP
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps({
        "stamp": STAMP, "preset": "local", "overrides": overrides or {},
        "tracking_uri": uri or f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}", "parent_run_id": "abc123"}))
    report = (f"# qlora_rank\n\nLoRA rank 1-64 on an NF4 base.\n\n## Trials\n\n{table}\n\n"
              "Cost: 2 trials, 3.8 trial-minutes in all (mean 1.9 min), 0.00 GPU-hours.\n\n"
              "![wer vs lora r](wer_vs_lora_r.png)\n")
    (folder / "report.md").write_text(report)
    (folder / "summary.md").write_text(f"# qlora_rank: summary\n\n{table}\n")
    (folder / "summary.csv").write_text("trial,status,lora.r,wer,error\nr=1,FINISHED,1,0.0557,\n")
    (folder / "wer_vs_lora_r.png").write_bytes(b"\x89PNG fake plot")
    start = time.mktime(time.strptime(STAMP, "%Y%m%d-%H%M%S"))
    os.utime(folder / "report.md", (start + 282, start + 282))  # the report written 4.7 min after the start
    return folder


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "platform.publish", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_page_has_the_generated_header_the_table_and_the_plot(tmp_path: Path) -> None:
    folder = results_folder(tmp_path, overrides={"optim.max_steps": 12, "optim.autocast": "off"})
    page = publish.publish(folder, tmp_path / "docs")
    text = page.read_text()
    assert page == tmp_path / "docs" / "qlora_rank.md"
    assert text.startswith("# qlora_rank\n\nLoRA rank 1-64 on an NF4 base.\n")
    header = dict(line.strip("| ").split(" | ", 1) for line in text.splitlines()
                  if line.startswith("| ") and " | " in line.strip("| ") and not line.startswith("| trial"))
    assert header["command"] == ("`python -m platform.sweep qlora_rank --preset local "
                                 "--set optim.max_steps=12 --set optim.autocast=off`")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert header["commit"].startswith(f"`{head}`") and "the sweep recorded none" in header["commit"]
    assert header["machine"].startswith(f"{os.cpu_count()} CPU cores, ")
    # A sweep that recorded its commit and machine (every sweep since the driver does) is cited by them.
    state = json.loads((folder / "sweep.json").read_text())
    (folder / "sweep.json").write_text(json.dumps({**state, "commit": "`0123456789ab`", "machine": "64 CPU cores"}))
    header = dict(line.strip("| ").split(" | ", 1) for line in publish.publish(folder, tmp_path / "docs").read_text()
                  .splitlines() if line.startswith("| ") and " | " in line.strip("| ") and not line.startswith("| trial"))
    assert header["commit"] == "`0123456789ab`; the sweep ran at it"
    assert header["machine"] == "64 CPU cores; the sweep's driver ran on it"
    assert header["preset"] == "`local`"
    assert header["measured"].startswith("2026-12-03 23:51, the sweep's start")
    assert header["wall time"].startswith("about 4.7 min (from the folder's start stamp")
    assert not (tmp_path / "absent").exists(), "a missing sqlite store must not be created"
    assert TABLE in text
    assert "Cost: 2 trials, 3.8 trial-minutes" in text
    assert "![wer vs lora r](qlora_rank/wer_vs_lora_r.png)" in text
    assert (tmp_path / "docs" / "qlora_rank" / "wer_vs_lora_r.png").read_bytes() == b"\x89PNG fake plot"
    assert text.index("## Findings") < text.index("## Trials")
    assert publish.NO_FINDINGS in text


def test_findings_survive_regeneration_and_the_table_is_replaced(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    page = publish.publish(results_folder(tmp_path), docs)
    findings = "- Every rank takes WER from 0.218 to about 0.05.\n- Size is dominated by the fp16 embedding."
    page.write_text(page.read_text().replace(publish.NO_FINDINGS, findings))
    (docs / "qlora_rank" / "stale.png").write_bytes(b"an earlier run's plot")
    new_table = TABLE.replace("0.0557", "0.0601")
    out = run(str(results_folder(tmp_path, table=new_table)), "--docs", str(docs))
    assert out.returncode == 0, out.stderr
    assert "wrote " in out.stdout
    text = page.read_text()
    assert f"{publish.FINDINGS_START}\n{findings}\n{publish.FINDINGS_END}" in text
    assert publish.NO_FINDINGS not in text
    assert new_table in text and TABLE not in text
    assert sorted(p.name for p in (docs / "qlora_rank").iterdir()) == ["wer_vs_lora_r.png"]


def test_a_page_with_broken_findings_markers_is_left_alone(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "qlora_rank.md"
    page.write_text(f"# qlora_rank\n\n{publish.FINDINGS_START}\nhand-written, no end marker\n")
    out = run(str(results_folder(tmp_path)), "--docs", str(docs))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "qlora_rank.md" in out.stderr and "findings" in out.stderr
    assert page.read_text().endswith("hand-written, no end marker\n")


@pytest.mark.parametrize("make, says", [
    (lambda tmp: tmp / "nowhere", "no such folder"),
    (lambda tmp: tmp, "not a sweep's results folder (no sweep.json"),
    (lambda tmp: (tmp / "sweep.json").write_text("{}") and tmp, "no 'stamp'"),
])
def test_not_a_results_folder_is_one_line(tmp_path: Path, make, says: str) -> None:
    folder = make(tmp_path)
    out = run(str(folder), "--docs", str(tmp_path / "docs"))
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert says in out.stderr
    assert not (tmp_path / "docs").exists()


def test_a_sweep_without_its_report_says_so(tmp_path: Path) -> None:
    folder = results_folder(tmp_path)
    (folder / "report.md").unlink()
    with pytest.raises(publish.PublishError, match="has not written its report.md"):
        publish.publish(folder, tmp_path / "docs")


def test_wall_time_is_the_one_the_sweep_logged_in_mlflow(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    run_id = c.create_run(c.create_experiment("qlora_rank"), run_name="qlora_rank").info.run_id
    c.log_metric(run_id, "sweep_wall_s", 414.0)
    folder = results_folder(tmp_path, uri=uri)
    state = json.loads((folder / "sweep.json").read_text())
    (folder / "sweep.json").write_text(json.dumps({**state, "parent_run_id": run_id}))
    text = publish.publish(folder, tmp_path / "docs").read_text()
    assert "| wall time | 6.9 min (`sweep_wall_s` on the sweep's MLflow run) |" in text


README_BEFORE = """# project

Intro.

<!-- results qlora_rank: trial val_wer wer -->
| an old | hand-copied table |
<!-- /results -->

<!-- results other_sweep: trial wer -->
kept as it is
<!-- /results -->
"""


def test_a_readme_block_is_rewritten_from_the_published_summary(tmp_path: Path) -> None:
    """The README shows the columns it names of the published sweep's summary, every row (the untuned model's too),
    and where they came from; a block for another sweep is left alone."""
    table = TABLE.replace("| wer    |", "| wer    | val_wer |").replace("| ------- |", "| ------- | ------- |")
    table = "\n".join([*(line + (" 0.0700 |" if i >= 2 else "") for i, line in enumerate(table.splitlines())),
                       "| untuned model | BASELINE | - | 0.2180 | 0.2500 |"])
    readme = tmp_path / "README.md"
    readme.write_text(README_BEFORE)
    out = run(str(results_folder(tmp_path, table=table)), "--docs", str(tmp_path / "docs" / "results"),
              "--readme", str(readme))
    assert out.returncode == 0, out.stderr
    text = readme.read_text()
    assert "hand-copied" not in text and "kept as it is" in text
    assert ("| trial | val_wer | wer |\n|---|---|---|\n| r=1 | 0.0700 | 0.0557 |\n| r=16 | 0.0700 | 0.0488 |\n"
            "| untuned model | 0.2500 | 0.2180 |\n") in text
    assert f"`{STAMP}`" in text and "(docs/results/qlora_rank.md)" in text


def test_a_readme_block_naming_an_absent_column_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README_BEFORE.replace("trial val_wer wer", "trial natural_wer"))
    docs = tmp_path / "docs"
    out = run(str(results_folder(tmp_path)), "--docs", str(docs), "--readme", str(readme))
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert "'natural_wer'" in out.stderr and "README.md" in out.stderr
    assert not docs.exists() and "hand-copied" in readme.read_text()

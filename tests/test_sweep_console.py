"""What a sweep shows without starting one: run names, dataset descriptions, report.html, the live progress
table and its estimate of the time left, and the progress a training worker posts."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from platform.progress import LiveProgress, estimate_left, trial_line
from platform.report_render import html_report, trials_link
from platform.spaces import ParamSpec
from platform.tracking import dataset_inputs, trial_label
from trainables.blocks import progress
from trainables.blocks.data import describe_split


def test_run_names_say_what_a_trial_tried() -> None:
    assert trial_label({"lora.r": 16}, {"lora.r": ParamSpec(type="grid", values=[1, 16])}) == "r=16"
    named = {"base": ParamSpec(type="grid", named={"nf4": {}, "int8": {}}), "seed": ParamSpec(type="grid", values=[0, 1])}
    assert trial_label({"seed": 1, "base": "nf4"}, named) == "nf4·seed=1"  # the space's order, a level by its name
    dq = {"kd.lambda_": ParamSpec(type="grid", values=[0.0, 0.3]), "noise.snr_db": ParamSpec(type="grid", values=[0.0, 10.0])}
    assert trial_label({"kd.lambda_": 0.3, "noise.snr_db": 10.0}, dq) == "λ=0.3·snr=10"
    assert trial_label({"optim.lr": 0.000123456}, {"optim.lr": ParamSpec(type="loguniform", low=1e-5, high=1e-2)}) == "lr=0.000123"
    clash = {"entropy.lambda_": ParamSpec(type="grid", values=[0.1]), "kd.lambda_": ParamSpec(type="grid", values=[1.0])}
    assert trial_label({"entropy.lambda_": 0.1, "kd.lambda_": 1.0}, clash) == "entropy.lambda_=0.1·kd.lambda_=1"


def test_the_trials_link_opens_model_training_trials_best_first() -> None:
    link = trials_link("7", "wer", "min")
    assert link.startswith("/experiments/7/runs?workflowType=machine_learning&")
    assert "searchFilter=tags.trial_id+LIKE+%27%25%27" in link and "orderByAsc=true" in link
    assert "orderByAsc=false" in trials_link("7", "bleu", "max")


def test_a_folder_split_is_described_by_its_files_without_decoding_them(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        for i in range(3):
            sf.write(tmp_path / split / f"u{i}.wav", np.zeros(1600, np.float32), 16000)
            (tmp_path / split / f"u{i}.txt").write_text(f"words {i}")
    (tmp_path / "test" / "no_transcript.wav").write_bytes(b"not even audio: never read")
    test = describe_split(str(tmp_path), "test", max_items=None)
    assert test["kind"] == "folder" and test["split"] == "test" and test["size"] == 3
    assert describe_split(str(tmp_path), "test", max_items=2)["size"] == 2
    train = describe_split(str(tmp_path), "train")
    assert train["digest"] != test["digest"]
    (tmp_path / "test" / "u0.txt").write_text("other words")
    assert describe_split(str(tmp_path), "test")["digest"] != test["digest"]  # the content changed
    corpus = describe_split("espeak-general", "validation", max_items=16)
    assert corpus["kind"] == "corpus" and corpus["size"] == 16 and corpus["split"] == "validation"


def test_dataset_inputs_name_split_source_digest_and_size() -> None:
    config = {"data": {"source": "espeak-smoke", "train_split": "train", "val_split": "dev", "eval_split": "test",
                       "max_train_items": None, "max_val_items": 2, "max_eval_items": 100}}
    inputs = dataset_inputs(config)
    got = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    assert set(got) == {"training", "validation", "evaluation"}
    assert {d.name for d in got.values()} == {"espeak-smoke"}
    assert json.loads(got["training"].profile) == {"split": "train", "utterances": 48}
    assert json.loads(got["validation"].profile) == {"split": "validation", "utterances": 2}
    assert json.loads(got["evaluation"].profile) == {"split": "test", "utterances": 8}  # the corpus has 8
    assert len({d.digest for d in got.values()}) == 3
    assert dataset_inputs({"no": "data"}) == []
    # data.replay_source is a second training input, its train split, marked as replayed.
    replayed = dataset_inputs({"data": {**config["data"], "replay_source": "espeak-general", "replay_fraction": 0.3}})
    training = [i.dataset for i in replayed if any(t.value == "training" for t in i.tags)]
    assert [d.name for d in training] == ["espeak-smoke", "espeak-general"]
    assert json.loads(training[1].profile) == {"split": "train", "utterances": 2000, "replay_fraction": 0.3}


def test_report_html_is_one_self_contained_page(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([1, 2], [3, 4])
    fig.savefig(tmp_path / "wer_vs_lora_r.png")
    markdown = ("# sweep\n\nWhat it asks, with `code` and **bold**.\n\n## Trials\n\n"
                "| trial | wer |\n| ------|---- |\n| r=1 <x> | 0.1 |\n| r=4 | 0.2 |\n\n![wer vs r](wer_vs_lora_r.png)\n"
                "![never drawn](missing.png)\n\nAn error line: <script>alert(1)</script>\n")
    page = html_report(markdown, tmp_path, "sweep: report")
    assert "<h1>sweep</h1>" in page and "<h2>Trials</h2>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert re.search(r"<th>trial</th>\s*<th>wer</th>\s*</tr>\s*</thead>\s*<tbody>\s*<tr>\s*<td>r=1 &lt;x&gt;</td>\s*<td>0.1</td>",
                     page)
    assert page.count("<tr>") == 3  # header and two rows: the separator row is no row
    assert 'src="data:image/png;base64,' in page and "wer_vs_lora_r.png" not in page.split("<body>")[1].split("alt=")[0]
    assert page.count("<figure>") == 1 and "<figcaption>wer vs r</figcaption>" in page  # a missing plot is left out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page  # text in the report is data


def test_time_left_follows_the_pace_of_steps_and_finished_trials() -> None:
    assert estimate_left([], [], pending=3, concurrent=1) is None  # nothing measured yet
    # One trial at step 10 of 40 after 60 s: 180 s more, then 2 trials of 240 s each.
    assert estimate_left([(60.0, {"step": 10, "max_steps": 40})], [], pending=2, concurrent=1) == pytest.approx(180 + 480)
    # Finished trials took 100 s on average: the pending ones are counted at that, two at a time.
    assert estimate_left([(30.0, {"step": 20, "max_steps": 40})], [90.0, 110.0], pending=3, concurrent=2) == pytest.approx(30 + 200)


def test_a_trial_row_shows_step_loss_val_wer_and_preparation() -> None:
    row = trial_line("λ=0.3·snr=10", "RUNNING", {"step": 23, "max_steps": 40, "loss": 0.81234, "val_wer": 0.25}, {}, 75.0)
    assert "λ=0.3·snr=10" in row and "step 23/40" in row and "loss 0.8123" in row and "val_wer 0.2500" in row
    assert "1.2 min" in row
    preparing = trial_line("r=4", "RUNNING", {"task": "teacher states (once)", "done": 3, "total": 32}, {}, 10.0)
    assert "(teacher states (once) 3/32)" in preparing and "val_wer -" in preparing
    finished = trial_line("r=16", "TERMINATED", {}, {"wer": 0.0488, "val_wer": 0.05, "natural_wer": 0.07}, 90.0)
    assert "FINISHED" in finished
    # The validation WER the search selected on comes first, then the test sets' WERs it reports.
    assert re.search(r"val_wer 0.0500\s+wer 0.0488\s+natural_wer 0.0700", finished)
    stopped = trial_line("r=1", "TERMINATED", {}, {"val_wer": 0.4}, 30.0)
    assert "stopped early  val_wer 0.4000" in stopped and " wer" not in stopped.replace("val_wer", "")


def test_the_live_table_counts_a_trial_done_when_tune_calls_back() -> None:
    trials = [SimpleNamespace(trial_id="a", status="RUNNING", config={"lora.r": 1}, last_result={"wer": 0.1}),
              SimpleNamespace(trial_id="b", status="PENDING", config={"lora.r": 4}, last_result={})]
    live = LiveProgress(None, "qlora_rank", 2, 1, label=lambda t: f"r={t.config['lora.r']}", interval_s=1e9,
                        stream=io.StringIO())
    live.began["a"] = live.started
    live.on_trial_complete(0, trials, trials[0])  # Tune has not set the status to TERMINATED yet
    table = live.table(trials)
    assert "1 of 2 trials done, 0 running" in table.splitlines()[0]
    assert re.search(r"r=1\s+FINISHED .* wer 0.1000", table) and re.search(r"r=4\s+PENDING", table)


def test_posting_progress_outside_a_sweep_does_nothing_and_is_cheap() -> None:
    import time

    started = time.perf_counter()
    for step in range(1000):
        progress.post(step=step, max_steps=1000, loss=1.0)
    assert time.perf_counter() - started < 0.5
    assert list(progress.tracked(range(3), "decoding 3 utterances")) == [0, 1, 2]


QUIET_LIBRARIES = {
    "optuna": ("import optuna\noptuna.create_study(storage=f'sqlite:///{sys.argv[1]}/o.db', study_name='quiet')\n",
               "A new study created in RDB with name: quiet"),
    "mlflow": ("from platform import tracking\ntracking.experiment_id(f'sqlite:///{sys.argv[1]}/m.db', 'quiet')\n",
               "Creating initial MLflow database tables"),
}


@pytest.mark.parametrize("library", QUIET_LIBRARIES)
def test_a_librarys_own_messages_go_to_the_log_file_not_the_console(library: str, tmp_path: Path) -> None:
    """Optuna and MLflow install their console handlers when first imported, which in a sweep is after the redirect:
    the redirect must cover them all the same (a fresh process, so that nothing imported them before)."""
    import subprocess
    import sys

    body, message = QUIET_LIBRARIES[library]
    code = ("import sys; from pathlib import Path; from platform import console\n"
            "log = console.libraries_to_file(Path(sys.argv[1]))\n" + body)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert message not in out.stdout + out.stderr
    assert message in (tmp_path / "libraries.log").read_text()
